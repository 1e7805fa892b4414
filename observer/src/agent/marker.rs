//! Whether the previous agent stopped cleanly. A small state file beside the socket holds
//! the running agent's pid and how many times agents started and crashed; a clean stop
//! clears the pid. An agent that finds a pid there whose process is gone knows its
//! predecessor died (kill -9, OOM kill, panic) and says so in its log and its metrics —
//! its table is rebuilt from /proc, so what that agent had learned from events is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Restarts {
    /// Agents started with this state file, this one included.
    pub starts: u64,
    /// Agents that ended without a clean stop.
    pub unclean: u64,
    /// The running agent (0 after a clean stop).
    #[serde(default)]
    pid: u32,
}

pub fn path_for(socket: &Path) -> PathBuf {
    socket.with_extension("state")
}

fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Records this agent's start; returns the counts including it.
pub fn on_start(path: &Path) -> Restarts {
    let prev: Restarts = match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            log::warn!("ignoring unreadable {}: {e}", path.display());
            Restarts::default()
        }),
        Err(_) => Restarts::default(),
    };
    let mut now = Restarts {
        starts: prev.starts + 1,
        unclean: prev.unclean,
        pid: std::process::id(),
    };
    if prev.pid != 0 && prev.pid != now.pid && !alive(prev.pid) {
        now.unclean += 1;
        log::warn!(
            "the previous agent (pid {}) did not stop cleanly; the table is rebuilt from /proc",
            prev.pid
        );
    }
    write(path, &now);
    now
}

/// Records a clean stop.
pub fn on_clean_stop(path: &Path, r: Restarts) {
    write(path, &Restarts { pid: 0, ..r });
}

fn write(path: &Path, r: &Restarts) {
    let tmp = path.with_extension("state.tmp");
    let ok = serde_json::to_vec(r)
        .map_err(std::io::Error::from)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        log::warn!("cannot record the agent's state in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_predecessor_counts_as_an_unclean_restart() {
        let dir = std::env::temp_dir().join(format!("observer-unit-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.state");
        let first = on_start(&p);
        assert_eq!((first.starts, first.unclean), (1, 0));
        on_clean_stop(&p, first);
        let second = on_start(&p);
        assert_eq!(
            (second.starts, second.unclean),
            (2, 0),
            "a clean stop before"
        );
        let third = on_start(&p);
        assert_eq!(
            (third.starts, third.unclean),
            (3, 0),
            "its own pid is alive"
        );
        // A pid that cannot be alive: above pid_max.
        write(
            &p,
            &Restarts {
                starts: 3,
                unclean: 0,
                pid: 4_194_305,
            },
        );
        let after_crash = on_start(&p);
        assert_eq!((after_crash.starts, after_crash.unclean), (4, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
