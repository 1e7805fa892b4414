//! The cgroup resource files (use and limits) of every live container, kept open between
//! scrapes and re-read with `pread` at offset 0 (cgroup files are generated at each read
//! from the start).
//! Opening is most of a cgroup file's cost — the path walk through kernfs, the open and
//! the close: 4,000 files at 1,000 containers made up ~80 ms of CPU per /metrics. A read
//! that fails (the cgroup was removed, maybe re-created at the same path by a restart)
//! opens the file again. Open files stay within a budget under RLIMIT_NOFILE; past it, a
//! file is opened and closed at each read as before. Limits, which rarely change, are
//! re-read every 30–60 s; use at every read. So is a cgroup's OOM kill counter when the
//! agent sees OOM kills (the oom:mark_victim tracepoint fires for each victim the counter
//! counts): re-read at once when the table counted a new victim in that cgroup's container
//! (`note_ooms`), and every 30–60 s in case an event was lost.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

// Keyed by cgroup path: a thousand long paths hashed several times a scrape, where std's
// SipHash showed in profiles.
use rustc_hash::{FxHashMap as HashMap, FxHashSet};

use super::{
    cgroupfs::{CgroupFs, UsageField},
    facts::Resources,
};

/// Descriptors left for everything else (sockets, /proc, BPF maps).
const RESERVE_FDS: u64 = 1024;

/// A limit is re-read after this, plus up to as much again (spread so that the limits of
/// a thousand containers are not all re-read by the same scrape); use at every read.
const LIMITS_TTL: Duration = Duration::from_secs(30);

struct Open {
    field: UsageField,
    path: PathBuf,
    file: Mutex<Option<File>>,
    /// A limit's (or kept OOM counter's) last text, and until when it holds.
    kept: Mutex<Option<(Instant, String)>>,
}

pub(crate) struct ResourceFiles {
    by_cgroup: HashMap<String, Vec<Open>>,
    open: AtomicUsize,
    budget: usize,
    /// The agent sees OOM kills as events: OOM counters are kept between changes.
    oom_events: bool,
    /// OOM victims the table had counted per cgroup at the last `note_ooms`.
    ooms_seen: HashMap<String, u64>,
}

impl Default for ResourceFiles {
    fn default() -> Self {
        // The views' kept /proc stat files share the descriptor table.
        Self::with_budget(fd_budget().saturating_sub(super::stat_files::MAX_OPEN))
    }
}

impl ResourceFiles {
    pub(crate) fn with_budget(budget: usize) -> Self {
        ResourceFiles {
            by_cgroup: HashMap::default(),
            open: AtomicUsize::new(0),
            budget,
            oom_events: false,
            ooms_seen: HashMap::default(),
        }
    }

    /// The resources of the live containers' cgroups `paths`, whose OOM victims the table
    /// counted as `ooms` (per cgroup path): `known` (from `read_known`) is taken as read
    /// except for cgroups with a new OOM victim since (`note_ooms`); the rest are read now,
    /// and files of cgroups gone are closed.
    pub(crate) fn read_containers(
        &mut self,
        cg: &CgroupFs,
        paths: &[String],
        ooms: &HashMap<String, u64>,
        mut known: HashMap<String, Resources>,
    ) -> HashMap<String, Resources> {
        let stale = self.note_ooms(ooms);
        known.retain(|p, _| !stale.contains(p));
        self.read_new(cg, paths, known)
    }

    /// Whether OOM kills arrive as events (oom:mark_victim attached): only then are OOM
    /// counter files kept between reads.
    pub(crate) fn set_oom_events(&mut self, on: bool) {
        self.oom_events = on;
    }

    /// Takes the OOM victims the table counted per cgroup (`oom_counts`); forgets the kept
    /// OOM counter of each cgroup whose count changed, and returns those cgroups: what was
    /// read of them before this (`read_known`) is out of date.
    pub(crate) fn note_ooms(&mut self, counts: &HashMap<String, u64>) -> Vec<String> {
        let mut stale = Vec::new();
        for (path, &n) in counts {
            let before = self.ooms_seen.insert(path.clone(), n);
            if before.is_some_and(|b| b != n) {
                for f in self.by_cgroup.get(path).into_iter().flatten() {
                    if f.field == UsageField::OomKills {
                        *lock(&f.kept) = None;
                    }
                }
                stale.push(path.clone());
            }
        }
        self.ooms_seen.retain(|p, _| counts.contains_key(p));
        stale
    }

    fn kept_field(&self, field: UsageField) -> bool {
        field.is_limit() || (self.oom_events && field == UsageField::OomKills)
    }

    /// Files open now.
    #[cfg(test)]
    pub(crate) fn open_files(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Use and limits of each cgroup of `paths` (what `CgroupFs::resources` gives), read in
    /// parallel; the files of cgroups not in `paths` are closed.
    #[cfg(test)]
    pub(crate) fn read(&mut self, cg: &CgroupFs, paths: &[String]) -> HashMap<String, Resources> {
        self.read_new(cg, paths, HashMap::default())
    }

    /// The cgroups of the last `read`, read again now.
    pub(crate) fn read_known(&self) -> HashMap<String, Resources> {
        let entries: Vec<(&String, &Vec<Open>)> = self.by_cgroup.iter().collect();
        self.read_entries(&entries)
    }

    /// Like `read`, with `known` (from `read_known`) taken as read: only the cgroups of
    /// `paths` missing from it are read.
    pub(crate) fn read_new(
        &mut self,
        cg: &CgroupFs,
        paths: &[String],
        mut known: HashMap<String, Resources>,
    ) -> HashMap<String, Resources> {
        let live: FxHashSet<&str> = paths.iter().map(String::as_str).collect();
        let open = &self.open;
        self.by_cgroup.retain(|p, files| {
            let keep = live.contains(p.as_str());
            if !keep {
                let n = files.iter().filter(|f| lock(&f.file).is_some()).count();
                open.fetch_sub(n, Ordering::Relaxed);
            }
            keep
        });
        known.retain(|p, _| live.contains(p.as_str()));
        for p in paths {
            if !self.by_cgroup.contains_key(p) {
                let files = cg
                    .resource_files(p)
                    .into_iter()
                    .map(|(field, path)| Open {
                        field,
                        path,
                        file: Mutex::new(None),
                        kept: Mutex::new(None),
                    })
                    .collect();
                self.by_cgroup.insert(p.clone(), files);
            }
        }
        let entries: Vec<(&String, &Vec<Open>)> = self
            .by_cgroup
            .iter()
            .filter(|(p, _)| !known.contains_key(p.as_str()))
            .collect();
        let fresh = self.read_entries(&entries);
        known.extend(fresh);
        known
    }

    fn read_entries(&self, entries: &[(&String, &Vec<Open>)]) -> HashMap<String, Resources> {
        super::scan::parallel(entries, |(path, files)| {
            let mut r = Resources::default();
            let mut buf = Vec::with_capacity(512);
            for f in *files {
                if !f.field.needed(&r) {
                    continue;
                }
                let mut kept = lock(&f.kept);
                if let Some((_, text)) = kept.as_ref().filter(|(until, _)| *until > Instant::now())
                {
                    f.field.apply(&mut r, text);
                    continue;
                }
                if !self.read_one(f, &mut buf) {
                    continue;
                }
                if let Ok(text) = std::str::from_utf8(&buf) {
                    f.field.apply(&mut r, text);
                    if self.kept_field(f.field) {
                        *kept = Some((Instant::now() + spread(LIMITS_TTL), text.to_string()));
                    }
                }
            }
            Some(((*path).clone(), r))
        })
        .into_iter()
        .collect()
    }

    /// Reads one file whole into `buf`: through its open descriptor, else (none yet, or
    /// the read failed) opened again.
    fn read_one(&self, f: &Open, buf: &mut Vec<u8>) -> bool {
        let mut file = lock(&f.file);
        if let Some(fd) = file.as_ref() {
            if pread_all(fd, buf) {
                return true;
            }
            *file = None;
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        let Ok(fd) = File::open(&f.path) else {
            return false;
        };
        let ok = pread_all(&fd, buf);
        if ok && self.open.fetch_add(1, Ordering::Relaxed) < self.budget {
            *file = Some(fd);
        } else if ok {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        ok
    }
}

/// `d` plus a pseudo-random part of it (the clock's nanoseconds).
fn spread(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos) / 1e9)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole file from offset 0. A read shorter than asked for is the end: a cgroup file
/// is generated whole and handed out up to the buffer's size (one read per file instead
/// of a second one that returns 0 — half the syscalls of a scrape).
fn pread_all(f: &File, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        match f.read_at(&mut chunk, buf.len() as u64) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// How many files may stay open: the soft RLIMIT_NOFILE (which the agent raises to the
/// hard limit at start: cli/agent.rs), less a reserve.
fn fd_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    lim.rlim_cur.saturating_sub(RESERVE_FDS).min(1 << 20) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup tree (plain files stand in for cgroup2's): values as
    /// `CgroupFs::resources` reads them, re-read through the open files, limits kept, only
    /// new cgroups read beside `read_known`, files closed with their cgroup and none kept
    /// past the budget.
    #[test]
    fn open_files_give_what_resources_gives_and_close_with_their_cgroup() {
        let root = std::env::temp_dir().join(format!("observer-resources-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("c1");
        let write = |mem: u64| {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
            std::fs::write(dir.join("memory.current"), format!("{mem}\n")).unwrap();
            std::fs::write(dir.join("memory.events"), "low 0\noom 1\noom_kill 2\n").unwrap();
            std::fs::write(dir.join("pids.current"), "3\n").unwrap();
            std::fs::write(dir.join("memory.max"), "max\n").unwrap();
            std::fs::write(dir.join("pids.max"), "64\n").unwrap();
        };
        write(100);
        let cg = CgroupFs {
            v2: Some(root.clone()),
            v2_controllers: vec!["memory".into(), "pids".into()],
            v1: Vec::new(),
        };
        let paths = vec!["/c1".to_string()];
        let mut u = ResourceFiles::with_budget(100);
        let r = u.read(&cg, &paths);
        assert_eq!(r["/c1"], cg.resources("/c1"));
        assert_eq!(r["/c1"].memory_bytes, Some(100));
        assert_eq!(r["/c1"].cpu_usage_ns, Some(7000));
        assert_eq!(r["/c1"].oom_kills, Some(2));
        assert_eq!(r["/c1"].pids_limit, Some(64));
        assert_eq!(r["/c1"].memory_limit_bytes, None);
        assert_eq!(u.open_files(), 6);
        // Rewritten in place: the open file reads the new value.
        std::fs::write(dir.join("memory.current"), "200\n").unwrap();
        std::fs::write(dir.join("pids.max"), "65\n").unwrap();
        let r = u.read(&cg, &paths);
        assert_eq!(r["/c1"].memory_bytes, Some(200));
        // A limit holds for LIMITS_TTL at least.
        assert_eq!(r["/c1"].pids_limit, Some(64));
        // What the last read saw, read again; then only a new cgroup is read.
        std::fs::write(dir.join("memory.current"), "250\n").unwrap();
        let known = u.read_known();
        assert_eq!(known["/c1"].memory_bytes, Some(250));
        std::fs::create_dir_all(root.join("c2")).unwrap();
        std::fs::write(root.join("c2/pids.current"), "9\n").unwrap();
        std::fs::write(dir.join("memory.current"), "260\n").unwrap();
        let both = u.read_new(&cg, &["/c1".into(), "/c2".into()], known);
        assert_eq!(both["/c1"].memory_bytes, Some(250), "taken from `known`");
        assert_eq!(both["/c2"].pids, Some(9));
        assert_eq!(u.open_files(), 7);
        // Gone from the live set: its files close.
        assert!(u.read(&cg, &[]).is_empty());
        assert_eq!(u.open_files(), 0);
        // Over budget: still read, nothing kept open.
        let mut none = ResourceFiles::with_budget(0);
        assert_eq!(none.read(&cg, &paths)["/c1"], cg.resources("/c1"));
        assert_eq!(none.open_files(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A real cgroup2 directory: removed, its open files fail and nothing is reported;
    /// re-created at the same path (a container restarted under the same cgroup), the
    /// files are opened again.
    #[test]
    fn a_removed_and_recreated_cgroup_is_read_from_its_new_files() {
        let cg = CgroupFs::discover();
        let v2 = cg.v2.clone().expect("a cgroup2 mount (pure v2 or hybrid)");
        let rel = format!("/observer-resources-test-{}", std::process::id());
        let dir = v2.join(rel.trim_start_matches('/'));
        let paths = vec![rel.clone()];
        let mut u = ResourceFiles::with_budget(100);
        std::fs::create_dir(&dir).unwrap();
        let first = u.read(&cg, &paths)[&rel];
        let cleanup = || {
            let _ = std::fs::remove_dir(&dir);
        };
        let opened = u.open_files();
        std::fs::remove_dir(&dir).unwrap();
        let gone = u.read(&cg, &paths)[&rel];
        std::fs::create_dir(&dir).unwrap();
        let again = u.read(&cg, &paths)[&rel];
        let reopened = u.open_files();
        cleanup();
        assert_eq!(first.cpu_usage_ns, Some(0), "{first:?}");
        assert!(opened >= 1);
        assert_eq!(
            gone.cpu_usage_ns, None,
            "a removed cgroup's files read nothing"
        );
        assert_eq!(again, first, "the re-created cgroup reads like the first");
        assert_eq!(reopened, opened);
    }

    /// With OOM kills seen as events, the OOM counter is kept until the table counts a new
    /// victim in the cgroup; without, it is read every time like any use.
    #[test]
    fn oom_counters_are_kept_until_a_victim_is_counted() {
        let root = std::env::temp_dir().join(format!("observer-ooms-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("c1");
        std::fs::create_dir_all(&dir).unwrap();
        let kills = |n: u64| {
            std::fs::write(dir.join("memory.events"), format!("oom 1\noom_kill {n}\n")).unwrap();
        };
        std::fs::write(dir.join("memory.current"), "100\n").unwrap();
        kills(1);
        let cg = CgroupFs {
            v2: Some(root.clone()),
            v2_controllers: vec!["memory".into()],
            v1: Vec::new(),
        };
        let paths = vec!["/c1".to_string()];
        let counts = |n: u64| HashMap::from_iter([("/c1".to_string(), n)]);
        let mut u = ResourceFiles::with_budget(100);
        u.set_oom_events(true);
        assert!(
            u.note_ooms(&counts(0)).is_empty(),
            "first sight: nothing stale"
        );
        assert_eq!(u.read(&cg, &paths)["/c1"].oom_kills, Some(1));
        kills(2);
        assert!(u.note_ooms(&counts(0)).is_empty());
        assert_eq!(
            u.read(&cg, &paths)["/c1"].oom_kills,
            Some(1),
            "kept: no victim seen"
        );
        assert_eq!(
            u.note_ooms(&counts(1)),
            paths,
            "a victim: the counter is stale"
        );
        assert_eq!(u.read(&cg, &paths)["/c1"].oom_kills, Some(2));
        // Without OOM events the counter is use: read every time.
        let mut plain = ResourceFiles::with_budget(100);
        assert_eq!(plain.read(&cg, &paths)["/c1"].oom_kills, Some(2));
        kills(3);
        assert!(plain.note_ooms(&counts(1)).is_empty());
        assert_eq!(plain.read(&cg, &paths)["/c1"].oom_kills, Some(3));
        let _ = std::fs::remove_dir_all(&root);
    }
}
