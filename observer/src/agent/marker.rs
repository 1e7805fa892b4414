//! Whether the previous agent stopped cleanly. A small state file beside the socket holds
//! the running agent's pid and how many times agents started and crashed; a clean stop
//! clears the pid. An agent that finds a pid there whose process is not alive (gone, or a
//! zombie its parent has not reaped yet: `host::scan::alive`) knows its predecessor died (kill -9, OOM kill, panic) and says so in its log and its metrics —
//! its table is rebuilt by a new start-up seed, so what that agent had learned from events
//! is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::scan;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Restarts {
    /// Agents started with this state file, this one included.
    pub(crate) starts: u64,
    /// Agents that ended without a clean stop.
    pub(crate) unclean: u64,
    /// The running agent (0 after a clean stop).
    #[serde(default)]
    pid: u32,
}

pub(crate) fn path_for(socket: &Path) -> PathBuf {
    socket.with_extension("state")
}

/// Opens `path` for reading without following a symlink there.
fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut b = Vec::new();
    f.by_ref().take(64 * 1024).read_to_end(&mut b)?;
    Ok(b)
}

/// Records this agent's start; returns the counts including it.
pub(crate) fn on_start(path: &Path) -> Restarts {
    let prev: Restarts = match read_nofollow(path) {
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
    if prev.pid != 0 && prev.pid != now.pid && !scan::alive(prev.pid) {
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
pub(crate) fn on_clean_stop(path: &Path, r: Restarts) {
    write(path, &Restarts { pid: 0, ..r });
}

/// Replaces the state file without following symlinks: the new content goes to a file
/// created here with O_EXCL (which never follows one) and is renamed over `path` (which
/// replaces a symlink there, not its target). The socket's directory may be shared (a test's
/// /tmp); a link planted there must not make the agent, as root, write through it.
fn write(path: &Path, r: &Restarts) {
    if let Err(e) = replace(path, &serde_json::to_vec(r).expect("plain numbers")) {
        log::warn!("cannot record the agent's state in {}: {e}", path.display());
    }
}

fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension(format!("state.{}.tmp", std::process::id()));
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
    };
    let mut f = match create() {
        // Left by an agent with the same pid that died here, or planted: remove the name
        // (never what a link there points to) and create afresh.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        r => r?,
    };
    let written = f
        .write_all(bytes)
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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

    /// Removes the test's directory when it ends (passing or failing).
    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn symlinks_planted_at_the_state_paths_are_replaced_never_written_through() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("observer-unit-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = Cleanup(dir.clone());
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        let p = dir.join("a.state");
        // At the state file itself, at the name its temporary file gets, and at the fixed
        // one earlier versions wrote through.
        symlink(&victim, &p).unwrap();
        let tmp = p.with_extension(format!("state.{}.tmp", std::process::id()));
        symlink(&victim, &tmp).unwrap();
        symlink(&victim, p.with_extension("state.tmp")).unwrap();
        let r = on_start(&p);
        assert_eq!(
            (r.starts, r.unclean),
            (1, 0),
            "the link's target is not read"
        );
        on_clean_stop(&p, r);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.is_file(), "the link was replaced by the state file");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
            0o600
        );
        assert!(!tmp.exists() && std::fs::symlink_metadata(&tmp).is_err());
        assert_eq!(on_start(&p).starts, 2);
    }
}
