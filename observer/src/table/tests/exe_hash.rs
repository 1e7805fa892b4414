use std::{fs::File, io::Write, os::unix::fs::MetadataExt, time::Duration};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn id(ino: u64) -> ExeId {
    ExeId {
        dev: 1,
        ino,
        size: 10,
        mtime_ns: 5,
    }
}

fn cfg(cache: usize) -> HashConfig {
    HashConfig {
        cache,
        ..HashConfig::default()
    }
}

/// A file of `content` and its identity as an exec event would give it.
fn file(name: &str, content: &[u8]) -> (std::path::PathBuf, ExeId) {
    let p = std::env::temp_dir().join(format!("observer-exe-hash-{name}-{}", std::process::id()));
    File::create(&p).unwrap().write_all(content).unwrap();
    let m = std::fs::metadata(&p).unwrap();
    let id = ExeId {
        dev: m.dev() as u32,
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
    };
    (p, id)
}

/// How a test opens a miss's file: made on the loop, run by a worker.
type Open = Box<dyn FnOnce() -> std::io::Result<(File, FileId)> + Send>;

fn opener(p: &std::path::Path) -> impl FnOnce() -> Open {
    let p = p.to_path_buf();
    move || {
        Box::new(move || {
            let f = File::open(&p)?;
            let m = f.metadata()?;
            let fid = FileId {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            };
            Ok((f, fid))
        })
    }
}

/// A process gone, its path naming nothing.
fn gone() -> impl FnOnce() -> Open {
    || Box::new(|| Err(std::io::ErrorKind::NotFound.into()))
}

/// A miss that must not open anything (answered from the cache, too large, hashing off).
fn not_opened(why: &'static str) -> impl FnOnce() -> Open {
    move || panic!("{why}: not opened")
}

/// `open_exec` of a process gone (pid 0) that ran `path`.
fn exec_at(id: ExeId, path: &[u8]) -> impl FnOnce() -> Open {
    let path = path.to_vec();
    move || Box::new(move || open_exec(id, 0, 0, &path))
}

fn count(h: &Hasher, what: &str) -> u64 {
    h.counts().pairs().iter().find(|p| p.0 == what).unwrap().1
}

#[test]
fn an_identity_is_hashed_once_and_then_answered_from_the_cache() {
    let (p, fid) = file("once", b"abc");
    let mut h = Hasher::start(cfg(16)).unwrap();
    let first = h.exec_with(fid, opener(&p));
    let d = first.get(WAIT).unwrap();
    assert_eq!(
        hex(&d),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    for _ in 0..100 {
        let again = h.exec_with(fid, not_opened("a cached identity is not opened"));
        assert_eq!(again.now(), Ok(d));
    }
    assert_eq!(count(&h, "computed"), 1);
    assert_eq!(count(&h, "cached"), 100);
    assert_eq!(h.misses(), 1, "only the first exec missed the cache");
    std::fs::remove_file(p).unwrap();
}

#[test]
fn every_exec_the_cache_cannot_answer_is_a_miss_and_none_while_hashing_is_off() {
    let mut h = Hasher::start(cfg(16)).unwrap();
    let _ = h.exec_with(id(1), gone());
    let big = ExeId {
        size: (256 << 20) + 1,
        ..id(2)
    };
    let _ = h.exec_with(big, not_opened("too large"));
    assert_eq!(h.misses(), 2, "a gone process and a too large file");
    let mut off = Hasher::off();
    assert_eq!(
        off.exec_with(id(3), not_opened("off")).now(),
        Err(Reason::Off)
    );
    assert_eq!(off.misses(), 0);
}

#[test]
fn a_gone_process_a_replaced_file_and_a_large_one_have_no_hash_and_say_why() {
    let mut h = Hasher::start(cfg(16)).unwrap();
    let g = h.exec_with(id(1), gone());
    assert_eq!(g.get(WAIT), Err(Reason::Gone));
    // The file the process runs now is not the one the exec read: never hashed under it.
    let (p, fid) = file("replaced", b"new content");
    let stale = ExeId { size: 3, ..fid };
    assert_eq!(h.exec_with(stale, opener(&p)).get(WAIT), Err(Reason::Gone));
    let big = ExeId {
        size: (256 << 20) + 1,
        ..fid
    };
    let r = h.exec_with(big, not_opened("too large"));
    assert_eq!(r.now(), Err(Reason::TooLarge));
    assert_eq!(count(&h, "gone"), 2);
    assert_eq!(count(&h, "too_large"), 1);
    // Gone is not remembered: the next exec of the identity is hashed.
    assert!(h.exec_with(fid, opener(&p)).get(WAIT).is_ok());
    assert_eq!(count(&h, "computed"), 1);
    assert_eq!(
        Hasher::off().exec_with(fid, opener(&p)).now(),
        Err(Reason::Off)
    );
    std::fs::remove_file(p).unwrap();
}

#[test]
fn the_least_recently_used_identity_is_evicted_and_counted_but_its_processes_keep_the_hash() {
    let mut h = Hasher::start(cfg(2)).unwrap();
    let (a, b, c) = (id(1), id(2), id(3));
    h.learn(a, [1; 32]);
    h.learn(b, [2; 32]);
    let held = h.exec_with(a, not_opened("cached")); // a is now the most recent
    h.learn(c, [3; 32]); // evicts b
    assert_eq!(count(&h, "evicted"), 1);
    assert_eq!(h.cached(), 2);
    let r = h.exec_with(b, gone());
    assert_eq!(
        r.get(WAIT),
        Err(Reason::Gone),
        "b was evicted: opened again"
    );
    assert_eq!(h.exec_with(c, not_opened("cached")).now(), Ok([3; 32]));
    h.learn(id(4), [4; 32]);
    h.learn(id(5), [5; 32]);
    assert_eq!(held.now(), Ok([1; 32]), "a process keeps its entry");
}

#[test]
fn a_full_queue_is_busy_and_counted() {
    let mut h = Hasher::start(HashConfig {
        workers: 1,
        queue: 1,
        ..HashConfig::default()
    })
    .unwrap();
    // A FIFO: its worker blocks on the read until the test writes, keeping the queue full.
    let fifo = std::env::temp_dir().join(format!("observer-exe-hash-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let open_fifo = |ino| {
        let fifo = fifo.clone();
        move || -> Open {
            Box::new(move || {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&fifo)?;
                let fid = FileId {
                    dev: 1,
                    ino,
                    size: 10,
                    mtime_ns: 5,
                };
                Ok((f, fid))
            })
        }
    };
    let first = h.exec_with(id(1), open_fifo(1));
    // Until the worker took the first, the second waits in the queue and a third is busy.
    let mut seen_busy = false;
    for ino in 2..50 {
        if h.exec_with(id(ino), open_fifo(ino)).now() == Err(Reason::Busy) {
            seen_busy = true;
            break;
        }
    }
    assert!(seen_busy);
    assert_eq!(count(&h, "busy"), 1);
    assert_eq!(first.now(), Err(Reason::Pending));
    drop(h);
    std::fs::remove_file(&fifo).unwrap();
}

#[test]
fn a_gone_process_is_hashed_from_its_exec_path_while_that_names_the_same_file() {
    use std::os::unix::ffi::OsStrExt;
    let (p, fid) = file("by-path", b"abc");
    let path = p.as_os_str().as_bytes();
    // No process has pid 0 in /proc: the process is gone, its file is still at its path.
    let mut h = Hasher::start(cfg(16)).unwrap();
    let r = h.exec_with(fid, exec_at(fid, path));
    assert_eq!(
        hex(&r.get(WAIT).unwrap()),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(count(&h, "gone"), 0);
    // The path names another file now (another identity): never hashed under the exec's.
    let other = ExeId {
        ino: fid.ino + 1,
        ..fid
    };
    assert_eq!(
        h.exec_with(other, exec_at(other, path)).get(WAIT),
        Err(Reason::Gone)
    );
    // A living process is opened through /proc, whatever its path says.
    let me = std::process::id();
    let exe = std::fs::metadata("/proc/self/exe").unwrap();
    let mine = ExeId {
        dev: exe.dev() as u32,
        ino: exe.ino(),
        size: exe.size(),
        mtime_ns: exe.mtime() * 1_000_000_000 + exe.mtime_nsec(),
    };
    let (_, via) = open_exec(mine, me, 0, b"/nonexistent").unwrap();
    assert_eq!(via.ino, mine.ino);
    std::fs::remove_file(&p).unwrap();
    let mut fresh = Hasher::start(cfg(16)).unwrap();
    assert_eq!(
        fresh.exec_with(fid, exec_at(fid, path)).get(WAIT),
        Err(Reason::Gone),
        "the process and its file gone"
    );
}

/// The event loop keeps its quick pace only while execs escape it: a miss whose file was
/// opened (through the process or by its path) is answered by the cache from then on.
#[test]
fn only_a_miss_whose_file_could_not_be_opened_counts_as_unopened() {
    let (p, fid) = file("unopened", b"abc");
    let mut h = Hasher::start(cfg(16)).unwrap();
    assert!(h.exec_with(fid, opener(&p)).get(WAIT).is_ok());
    let big = ExeId {
        size: (256 << 20) + 1,
        ..id(2)
    };
    let _ = h.exec_with(big, not_opened("too large"));
    assert_eq!((h.misses(), h.unopened()), (2, 0));
    let g = h.exec_with(id(3), gone());
    assert_eq!(g.get(WAIT), Err(Reason::Gone));
    assert_eq!((h.misses(), h.unopened()), (3, 1));
    assert_eq!(Hasher::off().unopened(), 0);
    std::fs::remove_file(p).unwrap();
}

/// A gone process's exec path that names another file by now (a hostile user's: a host
/// file named as the file they exec'd was named in their own mount namespace, say) is
/// refused on its identity before it is opened for reading: the root agent opens for
/// reading no file but the exec's (inotify sees no open; the lookup as O_PATH opens none).
#[test]
fn a_path_naming_another_file_is_not_opened_for_reading() {
    use std::os::unix::ffi::OsStrExt;
    let (p, fid) = file("not-opened", b"abc");
    let path = p.as_os_str().as_bytes();
    // SAFETY: plain syscalls; the results are checked, the descriptor closed.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let c = std::ffi::CString::new(path).unwrap();
    assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN) } >= 0);
    let opened = || {
        let mut buf = [0u8; 4096];
        // SAFETY: a buffer of the length passed.
        unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 }
    };
    let other = ExeId {
        ino: fid.ino + 1,
        ..fid
    };
    assert!(open_exec(other, 0, 0, path).is_err());
    assert!(!opened(), "another file was opened for reading");
    assert!(open_exec(fid, 0, 0, path).is_ok());
    assert!(opened(), "the exec's file is opened");
    unsafe { libc::close(fd) };
    std::fs::remove_file(&p).unwrap();
}

/// Opening the file waits as long as its filesystem likes (a stopped FUSE daemon): that is
/// a worker's wait, never the caller's (the event loop). Opened by the caller, the first
/// exec here held it for the open's 5 s.
#[test]
fn an_open_that_hangs_holds_a_worker_not_the_event_loop() {
    let mut h = Hasher::start(HashConfig {
        workers: 1,
        queue: 1,
        ..HashConfig::default()
    })
    .unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let t = std::time::Instant::now();
    let stuck = h.exec_with(id(1), move || -> Open {
        Box::new(move || {
            let _ = held.recv_timeout(Duration::from_secs(5));
            Err(std::io::ErrorKind::NotFound.into())
        })
    });
    // The queue's one place is taken, then every later miss is busy: none waits.
    let later: Vec<ExeHash> = (2..10).map(|i| h.exec_with(id(i), gone())).collect();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "the caller waited {took:?}");
    assert!(later.iter().any(|r| r.now() == Err(Reason::Busy)));
    assert_eq!(stuck.now(), Err(Reason::Pending));
    release.send(()).unwrap();
    assert_eq!(stuck.get(WAIT), Err(Reason::Gone));
}

/// A miss's file is opened at once, not behind the reads: a reader may pace itself or wait
/// on a file for seconds, and a short-lived process's executable must be opened while it
/// lives. (One pool for both: the second open waited behind the first read, for good.)
#[test]
fn opening_a_file_does_not_wait_for_the_readers() {
    let mut h = Hasher::start(HashConfig {
        workers: 1,
        queue: 1,
        ..HashConfig::default()
    })
    .unwrap();
    // A FIFO held open for writing too: the one reader blocks reading it, for good.
    let fifo = std::env::temp_dir().join(format!("observer-exe-hash-fifo2-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let path = fifo.clone();
    let (first_opened, first_seen) = std::sync::mpsc::channel();
    let reading = h.exec_with(id(1), move || -> Open {
        Box::new(move || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?;
            let _ = first_opened.send(());
            Ok((f, id(1).file_id()))
        })
    });
    // The opener free again (its one queue place too): the first file is the reader's.
    first_seen.recv_timeout(WAIT).unwrap();
    let (opened, seen) = std::sync::mpsc::channel();
    let next = h.exec_with(id(2), move || -> Open {
        Box::new(move || {
            let _ = opened.send(());
            Err(std::io::ErrorKind::NotFound.into())
        })
    });
    assert!(
        seen.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the second file's open waited for the first one's read"
    );
    assert_eq!(next.get(WAIT), Err(Reason::Gone));
    assert_eq!(reading.now(), Err(Reason::Pending));
    std::fs::remove_file(&fifo).unwrap();
}
