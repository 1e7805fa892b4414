//! Every text view against views whose every name others choose carries terminal escapes:
//! no control character but the renderers' own line breaks may come out, and the names
//! show escaped. (tests/it/escapes.rs runs the same views end to end with a real agent; the
//! API's error messages are held to the same in api/service.rs, with these helpers.)

use super::{
    endings::{self, EndedView, HistoryView, InitEndView, LinkView, OomView, SenderView},
    event_line::text_line,
    lists,
    model::{ContainerView, OutsideParent, ProcessView, TreeView, ZombieView},
    pods::{self, PodContainer, PodTreeView, PodView},
    text::{Escaped, Style},
    tree,
    why::{self, WhyView},
};

/// OSC (set the window title) closed by BEL, CSI (clear the screen), CR and LF, an 8-bit
/// CSI (C1) and DEL.
const H: &str = "x\x1b]0;PWNED\x07\x1b[2J\r\n\u{9b}31m\x7f";
/// `H` as every view shows it.
pub(crate) const SHOWN: &str = "x\\x1b]0;PWNED\\x07\\x1b[2J\\x0d\\n\\x9b31m\\x7f";

pub(crate) fn h(tag: &str) -> String {
    format!("{tag}{H}")
}

/// `out` holds no control character but line breaks (and, with colour, [`Style`]'s own
/// sequences, which these runs do not ask for), and shows the hostile name escaped.
pub(crate) fn assert_clean(what: &str, out: &str) {
    if let Some(c) = out.chars().find(|&c| c != '\n' && c.is_control()) {
        panic!("{what} printed {c:?}:\n{out}");
    }
    assert!(
        out.contains(SHOWN),
        "{what} shows the names escaped:\n{out}"
    );
}

fn sender() -> SenderView {
    SenderView {
        pid: 77,
        ns_pid: Some(3),
        comm: h("killer"),
        origin: h("origin"),
        container_id: Some(h("cid")),
        runtime: Some(h("rt")),
    }
}

fn signal(signal: &str, result: &str) -> endings::SignalView {
    endings::SignalView {
        signal: signal.into(),
        signo: 15,
        result: result.into(),
        si_code: 0,
        group: true,
        time_ns: 5_000_000_000,
        ago_s: 3.0,
        sender: sender(),
    }
}

fn process(pid: u32, ppid: u32, ns_pid: u32) -> ProcessView {
    ProcessView {
        pid,
        ppid,
        ns_pids: vec![pid, ns_pid],
        ns_pid,
        ns_ppid: u32::from(ns_pid != 1),
        state: "S".into(),
        live: true,
        comm: h("comm"),
        cmdline: format!("{} {}", h("argv0"), h("arg1")),
        argv: vec![h("argv0"), h("arg1")],
        exe: h("/exe"),
        uid: 0,
        threads: 2,
        start_time_ns: 1,
        age_s: 10.0,
        cpu_s: 0.5,
        rss_bytes: 4096,
        pidns: 4026531836,
        ns: super::event_line::NsJson([0; observer_common::NS_COUNT]),
        cgroup: h("/observer/"),
        cgroup_id: Some(9),
        container: Some(h("short")),
        zombie_age_s: None,
        exit_code: None,
        adopted_from: Some(5),
        adopter: Some(h("adopter")),
        ignored_signals: vec![signal("SIGTERM", "ignored")],
        exec: None,
        exe_sha256: Some(h("0123")),
        exe_hash_reason: None,
        entered: Some(entered(pid)),
    }
}

fn entered(root_pid: u32) -> super::sessions::EnteredView {
    super::sessions::EnteredView {
        via: h("via"),
        by: vec![super::sessions::ByView {
            pid: 3,
            comm: h("by"),
        }],
        time_ns: 1,
        root_pid,
        root: true,
        seen_at: Default::default(),
    }
}

fn container() -> ContainerView {
    ContainerView {
        id: h("id"),
        short_id: h("sid"),
        name: Some(h("name")),
        runtime: h("runtime"),
        pod: Some(h("pod")),
        namespace: Some(h("ns")),
        pod_uid: Some(h("uid")),
        pod_id: Some(h("podid")),
        sandbox: false,
        image: Some(h("image")),
        pidns: 4026531836,
        cgroup: h("/cg/"),
        init_pid: Some(100),
        shim_pid: Some(99),
        shim_comm: Some(h("shim")),
        processes: 4,
        threads: 5,
        zombies: 1,
        oldest_zombie_age_s: Some(2.0),
        forks: 1,
        execs: 1,
        exits: 1,
        resources: Default::default(),
    }
}

/// PID 1 under the shim, a child, a zombie not reaped by it, and a process entered with
/// setns whose parent is outside.
pub(crate) fn tree_view() -> TreeView {
    let mut zombie = process(102, 100, 3);
    zombie.state = "Z".into();
    zombie.zombie_age_s = Some(4.0);
    zombie.exit_code = Some(1);
    TreeView {
        container: container(),
        processes: vec![
            process(100, 99, 1),
            process(101, 100, 2),
            zombie,
            process(103, 50, 4),
        ],
        outside_parents: vec![OutsideParent {
            pid: 50,
            comm: h("outside"),
        }],
    }
}

pub(crate) fn pod_view(shared_pidns: Option<u32>) -> PodView {
    PodView {
        id: h("podid"),
        kind: h("kind"),
        name: Some(h("pod")),
        namespace: Some(h("ns")),
        uid: Some(h("uid")),
        sandbox: Some(h("sid")),
        containers: vec![PodContainer {
            id: h("id"),
            short_id: h("sid"),
            name: Some(h("name")),
            sandbox: true,
            init_pid: Some(100),
            processes: 4,
            zombies: 1,
        }],
        shared_namespaces: vec![h("pid")],
        shared_pidns,
        processes: 4,
        threads: 5,
        zombies: 1,
        sandbox_zombies: 1,
        cpu_usage_ns: 1,
        memory_bytes: 1,
    }
}

fn ended() -> EndedView {
    EndedView {
        pid: 101,
        ns_pid: 2,
        comm: h("victim"),
        argv: vec![h("argv0")],
        exe: h("/exe"),
        parents: vec![LinkView {
            pid: 100,
            ns_pid: 1,
            comm: h("parent"),
        }],
        adopted_from: None,
        start_time_ns: 1_000_000_000,
        end_time_ns: 6_000_000_000,
        duration_s: 5.0,
        exit_code: 137,
        signal: Some("SIGKILL".into()),
        core_dumped: false,
        failed: true,
        killed_by: Some(signal("SIGKILL", "delivered")),
        oom: Some(OomView {
            time_ns: 6_000_000_000,
            total_vm_kb: 1,
            anon_rss_kb: Some(1),
            file_rss_kb: None,
            shmem_rss_kb: None,
            oom_score_adj: None,
            trigger_pid: 7,
            trigger_comm: h("trigger"),
            memory_limit_bytes: Some(1 << 20),
            memory_bytes: None,
        }),
        killed_with_namespace: None,
        ignored: vec![signal("SIGTERM", "ignored")],
        boot: 0,
        cred: None,
        cap_eff: None,
        privileges: None,
        exe_id: None,
        exe_hash: None,
        entered: Some(entered(101)),
    }
}

pub(crate) fn esc<T: serde::Serialize + serde::de::DeserializeOwned>(v: T) -> Escaped<T> {
    Escaped::new(v).expect("a view serialises")
}

pub(crate) const PLAIN: Style = Style { color: false };

#[test]
fn tree_text_escapes_every_name() {
    let out = tree::render(&esc(tree_view()), PLAIN);
    assert_clean("tree", &out);
    for name in [
        "comm", "argv0", "arg1", "adopter", "killer", "name", "pod", "ns", "shim", "via", "by",
    ] {
        assert!(out.contains(&format!("{name}{SHOWN}")), "{name}:\n{out}");
    }
    // The container line, the shim and the outside parent, four processes.
    assert_eq!(out.lines().count(), 7, "{out}");
}

#[test]
fn pod_text_escapes_every_name_with_and_without_a_shared_pid_namespace() {
    for shared in [None, Some(4026531836)] {
        // The sandbox is the tree's container (the same short id).
        let t = PodTreeView {
            pod: pod_view(shared),
            containers: vec![tree_view()],
        };
        let out = pods::render(&esc(t), PLAIN);
        assert_clean("pod tree", &out);
        assert!(out.contains(&format!("pod{SHOWN}")), "{out}");
    }
    let out = pods::render_pods(&esc(vec![pod_view(None)]), false);
    assert_clean("pods", &out);
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn lists_escape_every_cell() {
    let ps = lists::render_ps(&esc(tree_view().processes), false, false);
    assert_clean("ps", &ps);
    assert_eq!(ps.lines().count(), 5, "{ps}");
    assert!(ps.contains(&format!("killer{SHOWN}")), "the sender: {ps}");
    let mut unnamed = process(9, 1, 9);
    unnamed.cmdline.clear();
    let ps = lists::render_ps(&esc(vec![unnamed]), true, false);
    assert_clean("ps of a kernel thread", &ps);
    let c = lists::render_containers(&esc(vec![container()]), false);
    assert_clean("containers", &c);
    assert_eq!(c.lines().count(), 2, "{c}");
    let z = lists::render_zombies(
        &esc(vec![ZombieView {
            pid: 102,
            ns_pid: 3,
            comm: h("zombie"),
            zombie_age_s: 4.0,
            exit_code: Some(1),
            parent_pid: 100,
            parent_comm: Some(h("parent")),
            parent_state: Some(h("S")),
            container: Some(h("sid")),
            container_name: Some(h("name")),
        }]),
        false,
    );
    assert_clean("zombies", &z);
    assert_eq!(z.lines().count(), 2, "{z}");
    for name in ["zombie", "parent", "name"] {
        assert!(z.contains(&format!("{name}{SHOWN}")), "{name}: {z}");
    }
}

#[test]
fn history_escapes_parents_senders_and_the_container_name() {
    let mut with_init = ended();
    with_init.oom = None;
    with_init.killed_with_namespace = Some(InitEndView {
        pid: 100,
        comm: h("init"),
        exit_code: None,
        signal: Some("SIGKILL".into()),
        killed_by: Some(signal("SIGKILL", "delivered")),
    });
    let mut killed = ended();
    killed.oom = None;
    // Only the first is an exec session's root: its mark takes a line of its own.
    (with_init.entered, killed.entered) = (None, None);
    let v = HistoryView {
        runtime: h("runtime"),
        id: h("id"),
        name: Some(h("name")),
        entries: vec![ended(), with_init, killed],
        evicted_total: 0,
    };
    let out = endings::render(&esc(v));
    assert_clean("history", &out);
    assert_eq!(out.lines().count(), 6, "{out}");
    for name in ["name", "victim", "parent", "init", "killer", "via", "by"] {
        assert!(out.contains(&format!("{name}{SHOWN}")), "{name}:\n{out}");
    }
}

/// Entries of an earlier boot (from the history store) are marked in JSON and text, and
/// `--boot` selects them.
#[test]
fn entries_of_an_earlier_boot_are_marked_and_selected_by_boot() {
    let mut old = ended();
    old.boot = -1;
    let json = serde_json::to_value(&old).unwrap();
    assert_eq!(json["boot"], -1);
    assert!(serde_json::to_value(ended()).unwrap().get("boot").is_none());
    let filter = |b| endings::HistoryFilter {
        boot: b,
        ..Default::default()
    };
    assert!(filter(Some(-1)).keep(&old, 0) && !filter(Some(0)).keep(&old, 0));
    assert!(filter(Some(0)).keep(&ended(), 0) && filter(None).keep(&old, 0));
    let v = HistoryView {
        runtime: "docker".into(),
        id: "abc".into(),
        name: None,
        entries: vec![old, ended()],
        evicted_total: 0,
    };
    let out = endings::render(&esc(v));
    assert_eq!(out.matches("[boot -1]").count(), 1, "{out}");
}

#[test]
fn why_escapes_the_process_its_senders_and_the_oom_trigger() {
    let who = format!("PID 1 of {}, {} (host pid 100)", h("name"), h("comm"));
    let live = why::live(
        "container x".into(),
        &who,
        true,
        vec![signal("SIGTERM", "ignored"), signal("SIGKILL", "delivered")],
    );
    let mut gone = ended();
    gone.killed_with_namespace = Some(InitEndView {
        pid: 100,
        comm: h("init"),
        exit_code: None,
        signal: Some("SIGKILL".into()),
        killed_by: Some(signal("SIGKILL", "delivered")),
    });
    let ended = why::ended("pid 101".into(), &who, gone, 9_000_000_000);
    for v in [live, ended] {
        let out = why::render(&esc::<WhyView>(v));
        assert_clean("why", &out);
        assert!(out.contains(&format!("killer{SHOWN}")), "{out}");
    }
}

/// A pod's answer names the container that ignored SIGTERM, who sent the SIGKILL and how
/// long after; each container's own paragraph follows, escaped like every other name.
#[test]
fn why_of_a_pod_names_the_container_that_ignored_sigterm_and_who_killed_it() {
    let member = |name: &str, sandbox: bool, why: WhyView| why::PodMemberWhy {
        name: name.into(),
        id: format!("{name}-id"),
        sandbox,
        why,
    };
    let mut pause = ended();
    (pause.ignored, pause.oom, pause.killed_by) = (vec![], None, None);
    let mut stubborn = ended();
    stubborn.oom = None;
    stubborn.ignored[0].time_ns = 2_000_000_000;
    let at = |v: EndedView| why::ended("container x".into(), "PID 1", v, 9_000_000_000);
    let v = why::pod(
        "pod ns/stop".into(),
        "Pod ns/stop (kubernetes 0123)",
        vec![
            member("pause", true, at(pause)),
            member(&h("stubborn"), false, at(stubborn)),
        ],
    );
    assert!(!v.alive);
    let p = &v.paragraph;
    assert!(
        p.starts_with("Pod ns/stop (kubernetes 0123): all its 2 containers ended."),
        "{p}"
    );
    let want = format!("Container {} ignored SIGTERM from killer", h("stubborn"));
    assert!(p.contains(&want), "{p}");
    assert!(
        p.contains("; SIGKILL from killer") && p.contains("ended it 3.0 s later"),
        "{p}"
    );
    assert_eq!(
        p.matches("ignored").count(),
        1,
        "the sandbox ignored nothing: {p}"
    );
    assert_eq!(v.signals.len(), 2, "{v:#?}");
    let back: WhyView = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    let out = why::render(&esc(v));
    assert_clean("why of a pod", &out);
    assert!(out.contains("\npause (sandbox): PID 1 ended"), "{out}");
    assert!(
        out.contains(&format!("stubborn{SHOWN}: PID 1 ended")),
        "{out}"
    );

    // One still running, having ignored SIGTERM.
    let live = why::live(
        "container web".into(),
        "PID 1 of web",
        true,
        vec![signal("SIGTERM", "ignored")],
    );
    let v = why::pod(
        "pod web".into(),
        "Pod web (podman 4567)",
        vec![member("web", false, live)],
    );
    assert!(v.alive);
    assert!(
        v.paragraph.contains("1 of its 1 containers are running"),
        "{}",
        v.paragraph
    );
    assert!(
        v.paragraph.contains("ignored SIGTERM from killer"),
        "{}",
        v.paragraph
    );
    assert!(
        v.paragraph.contains("and is still running"),
        "{}",
        v.paragraph
    );
}

/// Pids are reused: `why <pid>` answers for the latest process that had it, says which
/// (its container and start) and lists the earlier ones.
#[test]
fn why_of_a_reused_pid_answers_for_the_latest_and_lists_the_earlier() {
    let at = |end_s: u64, exit: i32| {
        let mut v = ended();
        (v.end_time_ns, v.exit_code, v.signal) = (end_s * 1_000_000_000, exit, None);
        (v.oom, v.killed_by) = (None, None);
        v
    };
    let found = vec![
        why::PidEnded {
            container: format!("container {}", h("new")),
            view: at(8, 7),
        },
        why::PidEnded {
            container: "bare container 4026532".into(),
            view: at(5, 3),
        },
    ];
    let v = why::pid_ended(42, found, 9_000_000_000).unwrap();
    assert_eq!(v.ended.as_ref().unwrap().exit_code, 7, "the latest: {v:#?}");
    let p = &v.paragraph;
    assert!(p.contains("host pid 42") && p.contains("started"), "{p}");
    assert!(
        p.contains("latest of 2 processes with host pid 42")
            && p.contains("in bare container 4026532 ended 4.0 s ago (exit 3)"),
        "{p}"
    );
    assert_eq!(v.earlier.len(), 1);
    assert!(why::pid_ended(42, vec![], 0).is_none());
    let out = why::render(&esc(v));
    assert_clean("why of a pid", &out);
}

#[test]
fn event_lines_escape_comm_filename_argv_cgroup_path_and_sender() {
    use observer_common::*;
    let mut task = TaskInfo {
        start_time_ns: 1,
        cgroup_id: 2,
        ppid: 1,
        uid: 0,
        gid: 0,
        pid_level: 0,
        ns_pids: [0; MAX_PID_LEVELS],
        ns: [0; NS_COUNT],
        flags: 0,
        comm: [0; COMM_LEN],
    };
    let comm = b"c\x1b]0;X\x07\x1b[2J\r\n\xc2\x9b";
    task.comm[..comm.len()].copy_from_slice(comm);
    let header = |kind: EventKind| EventHeader {
        kind: kind as u32,
        cpu: 0,
        ktime_ns: 1,
        tgid: 5,
        pid: 5,
    };
    // Invalid UTF-8 (0xff, a lone 0x9b) beside the escapes.
    let hostile = b"f\x1b]0;PWNED\x07\x1b[2J\r\n\xff\x9b";
    let mut exec = ExecEvent {
        header: header(EventKind::Exec),
        task,
        old_tid: 5,
        args_len: 0,
        filename: [0; FILENAME_LEN],
        args: [0; ARGS_LEN],
        // SAFETY: plain integers: all zeroes is a valid value.
        ..unsafe { std::mem::zeroed() }
    };
    exec.filename[..hostile.len()].copy_from_slice(hostile);
    let args = [&hostile[..], b"\0", &hostile[..], b"\0"].concat();
    exec.args[..args.len()].copy_from_slice(&args);
    exec.args_len = args.len() as u32;
    let mut attach = CgroupAttachEvent {
        header: header(EventKind::CgroupAttach),
        task,
        dst_cgroup_id: 1,
        hierarchy_id: 0,
        dst_level: 1,
        threadgroup: 1,
        _pad: 0,
        path: [0; CGROUP_PATH_LEN],
    };
    attach.path[..hostile.len()].copy_from_slice(hostile);
    let mut sig = SignalEvent {
        header: header(EventKind::Signal),
        task,
        sender_start_ns: 1,
        sender_cgroup_id: 1,
        sender_tgid: 7,
        sender_pid: 7,
        sender_pidns: 1,
        sig: 9,
        code: 0,
        group: 1,
        result: 0,
        _pad: 0,
        sender_comm: [0; COMM_LEN],
    };
    sig.sender_comm[..comm.len()].copy_from_slice(comm);
    for ev in [
        crate::events::Event::Exec(exec),
        crate::events::Event::CgroupAttach(attach),
        crate::events::Event::Signal(sig),
    ] {
        let line = text_line(&ev);
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            panic!("{:?} event printed {c:?}: {line}", ev.kind());
        }
        assert!(line.contains("\\x1b]0;X\\x07"), "the comm: {line}");
    }
}

#[test]
fn text_from_another_process_keeps_only_line_breaks_and_colours() {
    let colour = Style { color: true }.red("zombie");
    let got = super::text::rendered(&format!("{colour}\nx\x1b]0;X\x07\r\u{9b}1m\x7f\n"), true);
    assert_eq!(got, format!("{colour}\nx\\x1b]0;X\\x07\\x0d\\x9b1m\\x7f\n"));
    let got = super::text::rendered(&format!("{colour}\n"), false);
    assert_eq!(
        got, "\\x1b[31mzombie\\x1b[0m\n",
        "no colour asked: none passes"
    );
    // A sequence that only starts like a colour is escaped whole.
    assert_eq!(
        super::text::rendered("\x1b[2J\x1b[", true),
        "\\x1b[2J\\x1b["
    );
}
