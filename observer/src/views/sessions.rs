//! Exec sessions as views show them (table/sessions.rs): the `entered` object of a process
//! and of a history entry, and the tree's mark on a session's root.

use serde::{Deserialize, Serialize};

use crate::{events::c_str, table::sessions::Session};

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
    /// Boot-clock ns when it came in.
    pub(crate) time_ns: u64,
    /// Host pid of the session's root (the process that came in).
    pub(crate) root_pid: u32,
    /// This process is the root (the others are its descendants).
    pub(crate) root: bool,
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
/// containerd-shim (790) at 1234.567 s]` (boot clock, as event lines show times).
pub(crate) fn mark(e: &EnteredView) -> String {
    format!(
        "[exec by {}: {} at {:.3} s]",
        e.via,
        by_text(e),
        e.time_ns as f64 / 1e9
    )
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
    }
}
