//! `observer why <container|pod|pid>`: one paragraph on how a container's PID 1 (or one
//! process) ended, or what it is ignoring while it runs, with the evidence it rests on; for
//! a pod, which of its containers ignored a signal and what ended it, then each container's
//! paragraph.

use serde::{Deserialize, Serialize};

use super::endings::{ending, from, EndedView, SignalView};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct WhyView {
    /// What was asked about: `container <name>` or `pid <n>`.
    pub(crate) subject: String,
    /// Whether that process is still alive.
    pub(crate) alive: bool,
    pub(crate) paragraph: String,
    /// The signals it was sent, oldest first (live), or how it ended.
    pub(crate) signals: Vec<SignalView>,
    pub(crate) ended: Option<EndedView>,
    /// A pod's containers, the sandbox first (empty for a container or a process).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) containers: Vec<PodMemberWhy>,
    /// For a pid: the other processes that had it and ended earlier in this boot (pids
    /// are reused), the latest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) earlier: Vec<PidUse>,
}

/// An ended process that had the pid asked about.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PidUse {
    /// Its container's name, or `<runtime> <short id>`.
    pub(crate) container: String,
    pub(crate) comm: String,
    pub(crate) start_time_ns: u64,
    pub(crate) end_time_ns: u64,
    /// `exit 3`, `SIGKILL`...
    pub(crate) ending: String,
    pub(crate) ended_ago_s: f64,
}

/// An ended process found by its host pid, and the container it was in.
pub(crate) struct PidEnded {
    pub(crate) container: String,
    pub(crate) view: EndedView,
}

/// One container of a pod, and its own answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PodMemberWhy {
    /// Its name, or its short id when its runtime gives none.
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) sandbox: bool,
    pub(crate) why: WhyView,
}

fn ago(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s ago")
    } else if s < 7200.0 {
        format!("{:.0} min ago", s / 60.0)
    } else {
        format!("{:.1} h ago", s / 3600.0)
    }
}

fn ignored_sentence(who: &str, ns_init: bool, s: &SignalView) -> String {
    let mut t = format!(
        "{who} ignored {} from {} {}",
        s.signal,
        from(&s.sender),
        ago(s.ago_s)
    );
    if ns_init && s.signal != "SIGKILL" && s.signal != "SIGSTOP" {
        t.push_str(
            ": it has no handler for it, and the init of a pid namespace only gets the \
             signals it handles (the kernel drops the rest), so a `docker stop` or \
             `kubectl delete` waits for its timeout and then sends SIGKILL",
        );
    }
    t
}

/// A live process: what it ignored, and the last signals it got.
pub(crate) fn live(subject: String, who: &str, ns_init: bool, signals: Vec<SignalView>) -> WhyView {
    let ignored: Vec<&SignalView> = signals.iter().filter(|s| s.result == "ignored").collect();
    let mut paragraph = format!("{who} is running.");
    if ignored.is_empty() {
        match signals.last() {
            Some(s) => paragraph.push_str(&format!(
                " The last signal it was sent: {} ({}) from {} {}.",
                s.signal,
                s.result,
                from(&s.sender),
                ago(s.ago_s)
            )),
            None => {
                paragraph.push_str(" No signal that ends or stops a process has been sent to it.");
            }
        }
    } else {
        for s in ignored {
            paragraph.push(' ');
            paragraph.push_str(&ignored_sentence("It", ns_init, s));
            paragraph.push('.');
        }
    }
    WhyView {
        subject,
        alive: true,
        paragraph,
        signals,
        ended: None,
        containers: Vec::new(),
        earlier: Vec::new(),
    }
}

/// A process that ended (a container's PID 1, or the process asked about).
pub(crate) fn ended(subject: String, who: &str, e: EndedView, now_ns: u64) -> WhyView {
    let ago_s = now_ns.saturating_sub(e.end_time_ns) as f64 / 1e9;
    let mut paragraph = format!(
        "{who} ended {} after {:.3} s: {}.",
        ago(ago_s),
        e.duration_s,
        ending(&e)
    );
    let ns_init = e.ns_pid == 1;
    for s in &e.ignored {
        paragraph.push_str(&format!(
            " Before that, {}.",
            ignored_sentence("it", ns_init, s)
        ));
    }
    if let (Some(k), Some(first)) = (&e.killed_by, e.ignored.first()) {
        if k.signal == "SIGKILL" && k.time_ns > first.time_ns {
            paragraph.push_str(&format!(
                " The SIGKILL came {:.1} s after the first ignored {}.",
                (k.time_ns - first.time_ns) as f64 / 1e9,
                first.signal
            ));
        }
    }
    if let Some(o) = &e.oom {
        paragraph.push_str(&format!(
            " The OOM killer chose it while {} (pid {}) was allocating: total_vm {} kB{}{}.",
            o.trigger_comm,
            o.trigger_pid,
            o.total_vm_kb,
            o.anon_rss_kb
                .map(|v| format!(", anon rss {v} kB"))
                .unwrap_or_default(),
            match (o.memory_bytes, o.memory_limit_bytes) {
                (Some(u), Some(l)) => format!("; its cgroup used {u} of {l} bytes right after"),
                (None, Some(l)) => format!("; its cgroup's limit is {l} bytes"),
                _ => String::new(),
            }
        ));
    }
    if let Some(i) = &e.killed_with_namespace {
        if let Some(k) = &i.killed_by {
            paragraph.push_str(&format!(
                " Its PID 1 had been sent {} ({}) by {}.",
                k.signal,
                k.result,
                from(&k.sender)
            ));
        }
    }
    let mut signals = e.ignored.clone();
    signals.extend(e.killed_by.clone());
    WhyView {
        subject,
        alive: false,
        paragraph,
        signals,
        ended: Some(e),
        containers: Vec::new(),
        earlier: Vec::new(),
    }
}

/// Pids are reused: of the processes that had `pid` and ended in this boot (`found`, the
/// latest first, not empty), the latest one's answer, which says which process it is and
/// lists the others.
pub(crate) fn pid_ended(pid: u32, mut found: Vec<PidEnded>, now_ns: u64) -> Option<WhyView> {
    if found.is_empty() {
        return None;
    }
    let latest = found.remove(0);
    let e = &latest.view;
    let who = format!(
        "{} (host pid {pid}, pid {} in its namespace, in {}, started {})",
        e.comm,
        e.ns_pid,
        latest.container,
        ago(now_ns.saturating_sub(e.start_time_ns) as f64 / 1e9)
    );
    let mut w = ended(format!("pid {pid}"), &who, latest.view, now_ns);
    w.earlier = found
        .into_iter()
        .map(|p| PidUse {
            ending: ending(&p.view),
            ended_ago_s: now_ns.saturating_sub(p.view.end_time_ns) as f64 / 1e9,
            container: p.container,
            comm: p.view.comm,
            start_time_ns: p.view.start_time_ns,
            end_time_ns: p.view.end_time_ns,
        })
        .collect();
    if let Some(first) = w.earlier.first() {
        let n = w.earlier.len();
        let more = if n > 1 {
            format!(" and {} more", n - 1)
        } else {
            String::new()
        };
        w.paragraph.push_str(&format!(
            " It is the latest of {} processes with host pid {pid} that ended in this boot \
             (pids are reused); before it, {} in {} ended {} ({}){more}.",
            n + 1,
            first.comm,
            first.container,
            ago(first.ended_ago_s),
            first.ending
        ));
    }
    Some(w)
}

/// What a pod member's answer says in the pod's paragraph: the signals it ignored and
/// what ended it (nothing when it ignored none).
fn member_sentence(m: &PodMemberWhy) -> Option<String> {
    let w = &m.why;
    let ignored: Vec<&SignalView> = match &w.ended {
        Some(e) => e.ignored.iter().collect(),
        None => w.signals.iter().filter(|s| s.result == "ignored").collect(),
    };
    let first = ignored.first()?;
    let mut sigs: Vec<&str> = ignored.iter().map(|s| s.signal.as_str()).collect();
    sigs.dedup();
    let mut t = format!(
        "Container {} ignored {} from {} {}",
        m.name,
        sigs.join(", "),
        from(&first.sender),
        ago(first.ago_s)
    );
    match &w.ended {
        None => t.push_str(", and is still running"),
        Some(e) => match &e.killed_by {
            Some(k) if k.time_ns >= first.time_ns => t.push_str(&format!(
                "; {} from {} ended it {:.1} s later ({})",
                k.signal,
                from(&k.sender),
                (k.time_ns - first.time_ns) as f64 / 1e9,
                ago(k.ago_s)
            )),
            _ => t.push_str(&format!("; then it ended: {}", ending(e))),
        },
    }
    Some(t)
}

/// A pod (`label`: how its paragraph names it): which of its containers ignored a signal
/// and what ended them, from each container's own answer (`members`, the sandbox first).
pub(crate) fn pod(subject: String, label: &str, members: Vec<PodMemberWhy>) -> WhyView {
    let running = members.iter().filter(|m| m.why.alive).count();
    let mut paragraph = match (running, members.len()) {
        (_, 0) => format!("{label} has no container the agent knows of."),
        (0, n) => format!("{label}: all its {n} containers ended."),
        (r, n) => format!("{label}: {r} of its {n} containers are running."),
    };
    let said: Vec<String> = members.iter().filter_map(member_sentence).collect();
    if said.is_empty() && !members.is_empty() {
        paragraph.push_str(" None of them ignored a signal.");
    }
    for s in said {
        paragraph.push_str(&format!(" {s}."));
    }
    let mut signals: Vec<SignalView> = members
        .iter()
        .flat_map(|m| m.why.signals.iter().cloned())
        .collect();
    signals.sort_by_key(|s| s.time_ns);
    WhyView {
        subject,
        alive: running > 0,
        paragraph,
        signals,
        ended: None,
        containers: members,
        earlier: Vec::new(),
    }
}

pub(crate) fn render(v: &super::text::Escaped<WhyView>) -> String {
    let mut out = format!("{}\n", textwrap(&v.paragraph, 100));
    for m in &v.containers {
        let tag = if m.sandbox { " (sandbox)" } else { "" };
        let text = format!("{}{tag}: {}", m.name, m.why.paragraph);
        out.push_str(&format!("\n{}\n", textwrap(&text, 100)));
    }
    out
}

fn textwrap(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for w in s.split(' ') {
        if line > 0 && line + 1 + w.len() > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(w);
        line += w.len();
    }
    out
}
