//! Exec sessions as views show them (table/sessions.rs): the `entered` object of a process,
//! of a history entry and of an event, the tree's mark on a session's root and the short
//! mark of an event line.

use serde::{Deserialize, Serialize};

use crate::{
    events::c_str,
    table::sessions::{Seen, Session},
};

/// One host process a session came in through.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ByView {
    pub(crate) pid: u32,
    pub(crate) comm: String,
}

/// How a process (or its session's root) came into its container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct EnteredView {
    /// `docker exec`, `kubectl exec`, `podman exec`, `ctr exec`, `nsenter`,
    /// `observer exec` or `setns`.
    pub(crate) via: String,
    /// The host processes it came in through, parent first: the runtime's and the tool's,
    /// up to the first one outside them (the client of a `docker exec` is not among them:
    /// the CLI talks to dockerd, which is not an ancestor).
    pub(crate) by: Vec<ByView>,
    /// Boot-clock ns when it came in; for one seen at start-up, its root's start.
    pub(crate) time_ns: u64,
    /// Host pid of the session's root (the process that came in).
    pub(crate) root_pid: u32,
    /// This process is the root (the others are its descendants).
    pub(crate) root: bool,
    /// `entry`: the agent saw it come in; `startup`: it began before the agent, which
    /// deduced it at start-up from what was left of its host ancestors (the shim or
    /// conmon that adopted it, nsenter, ...).
    #[serde(default)]
    pub(crate) seen_at: Seen,
}

/// The `entered` view of process `pid` in session `s`.
pub(crate) fn entered_view(s: &Session, pid: u32) -> EnteredView {
    EnteredView {
        via: s.via.as_str().to_string(),
        by: s
            .by
            .iter()
            .map(|l| ByView {
                pid: l.pid,
                comm: c_str(&l.comm).into_owned(),
            })
            .collect(),
        time_ns: s.at_ns,
        root_pid: s.root,
        root: s.is_root(pid),
        seen_at: s.seen,
    }
}

/// `runc (812) < containerd-shim (790)`.
pub(crate) fn by_text(e: &EnteredView) -> String {
    if e.by.is_empty() {
        return "an unknown parent".into();
    }
    e.by.iter()
        .map(|b| format!("{} ({})", b.comm, b.pid))
        .collect::<Vec<_>>()
        .join(" < ")
}

/// The tree's mark on a session's root: `[exec by docker exec: runc (812) <
/// containerd-shim (790) at 1234.567 s]` (boot clock, as event lines show times); one seen
/// at start-up ends `, seen at start-up]`.
pub(crate) fn mark(e: &EnteredView) -> String {
    format!(
        "[exec by {}: {} at {:.3} s{}]",
        e.via,
        by_text(e),
        e.time_ns as f64 / 1e9,
        startup_note(e)
    )
}

/// An event line's mark: `[exec by docker exec]` on the root's events, `[exec by docker
/// exec, root 900]` on its descendants'.
pub(crate) fn short_mark(e: &EnteredView) -> String {
    let root = if e.root {
        String::new()
    } else {
        format!(", root {}", e.root_pid)
    };
    format!("[exec by {}{root}{}]", e.via, startup_note(e))
}

fn startup_note(e: &EnteredView) -> &'static str {
    match e.seen_at {
        Seen::Entry => "",
        Seen::Startup => ", seen at start-up",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::table::sessions::{HostLink, Via};

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    #[test]
    fn a_roots_mark_names_the_way_in_the_chain_and_the_time() {
        let s = Arc::new(Session {
            root: 900,
            via: Via::DockerExec,
            by: vec![
                HostLink {
                    pid: 812,
                    comm: comm("runc"),
                },
                HostLink {
                    pid: 790,
                    comm: comm("containerd-shim"),
                },
            ]
            .into(),
            at_ns: 1_234_567_000_000,
            seen: Seen::Entry,
        });
        let v = entered_view(&s, 900);
        assert!(v.root);
        assert_eq!(
            mark(&v),
            "[exec by docker exec: runc (812) < containerd-shim (790) at 1234.567 s]"
        );
        let child = entered_view(&s, 901);
        assert!(!child.root);
        assert_eq!(child.root_pid, 900);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["via"], "docker exec");
        assert_eq!(json["by"][1]["comm"], "containerd-shim");
        assert_eq!(json["seen_at"], "entry");
        assert_eq!(short_mark(&v), "[exec by docker exec]");
        assert_eq!(short_mark(&child), "[exec by docker exec, root 900]");
    }

    #[test]
    fn a_session_seen_at_start_up_says_so_in_its_marks_and_json() {
        let s = Session {
            root: 900,
            via: Via::Nsenter,
            by: vec![HostLink {
                pid: 41,
                comm: comm("nsenter"),
            }]
            .into(),
            at_ns: 5_000_000_000,
            seen: Seen::Startup,
        };
        let v = entered_view(&s, 900);
        assert_eq!(
            mark(&v),
            "[exec by nsenter: nsenter (41) at 5.000 s, seen at start-up]"
        );
        assert_eq!(short_mark(&v), "[exec by nsenter, seen at start-up]");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["seen_at"], "startup");
        let back: EnteredView = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }
}
