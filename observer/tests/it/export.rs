//! The export sinks against a real agent (`--export-file`, `--export-stdout`): a storm of
//! short-lived processes exported without losing a line across rotated files (or every
//! loss counted), the schema on every line, history entries with exit codes, the type
//! filter, redaction, and a sink on a full file system that drops and counts while the
//! agent goes on applying events. Run as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::common::{agent::Agent, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

/// A directory of the test's own, removed at the end.
/// A tmpfs this test mounted; unmounted (only it) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The agent's /v1/status.
fn status(a: &Agent) -> Value {
    serde_json::from_str(&http_body(&a.http_get("/v1/status"))).unwrap()
}

/// (sent, dropped) of one sink.
fn export_counts(st: &Value, sink: &str) -> (u64, u64) {
    let s = st["export"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["sink"] == sink))
        .unwrap_or_else(|| panic!("no {sink} sink in /v1/status: {}", st["export"]));
    (u64_of(s, "sent"), u64_of(s, "dropped"))
}

/// Events applied to the table, all types.
fn applied(st: &Value) -> u64 {
    st["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| u64_of(e, "applied"))
        .sum()
}

/// Waits until `path` has a line with every one of `words` (the last the test caused), or
/// — when that line was dropped — until the sink's counts stop moving (the node's own
/// processes keep adding lines, so counts alone may never settle); returns the counts.
fn settled(a: &Agent, sink: &str, path: &Path, words: &[&str]) -> (u64, u64) {
    let mut last = (u64::MAX, u64::MAX);
    let mut same = 0;
    // PATH, or PATH.1 (PATH.1.gz) if a rotation came right after.
    let rotated = PathBuf::from(format!("{}.1", path.display()));
    let gz = PathBuf::from(format!("{}.1.gz", path.display()));
    let found = || {
        [path, rotated.as_path(), gz.as_path()].iter().any(|p| {
            try_text(p).is_ok_and(|t| t.lines().any(|l| words.iter().all(|w| l.contains(w))))
        })
    };
    // The file is searched before the counts are read: a line dropped before the last one
    // was counted before it was written, so these counts hold every drop of the test's.
    let counts = eventually(T, "the export sink to settle", || {
        std::thread::sleep(Duration::from_millis(300));
        let hit = found();
        let now = export_counts(&status(a), sink);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        (hit || same >= 5).then_some(now)
    });
    // Counted right after the write that put the line there.
    std::thread::sleep(Duration::from_millis(200));
    counts
}

/// PATH.keep … PATH.1 (or PATH.n.gz), PATH that exist, oldest first.
fn export_files(path: &Path, keep: u32) -> Vec<PathBuf> {
    (0..=keep)
        .rev()
        .flat_map(|n| match n {
            0 => vec![path.to_path_buf()],
            n => vec![
                PathBuf::from(format!("{}.{n}", path.display())),
                PathBuf::from(format!("{}.{n}.gz", path.display())),
            ],
        })
        .filter(|p| p.exists())
        .collect()
}

/// A file's text, decompressed when it is a .gz.
fn read_text(f: &Path) -> String {
    try_text(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
}

fn try_text(f: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    if f.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(std::fs::File::open(f)?).read_to_string(&mut text)?;
    } else {
        std::fs::File::open(f)?.read_to_string(&mut text)?;
    }
    Ok(text)
}

/// Every line of `files`, parsed; panics on a line that is not a JSON object with a
/// schema.
fn lines(files: &[PathBuf]) -> Vec<Value> {
    let texts: Vec<(PathBuf, String)> = files.iter().map(|f| (f.clone(), read_text(f))).collect();
    lines_of(&texts)
}

/// The files and their text, read between two rotations: the node's own processes keep
/// adding lines, and a rotation while the files are listed and read moves lines from one
/// name to another (read twice, or not at all).
fn snapshot(path: &Path, keep: u32) -> Vec<(PathBuf, String)> {
    use std::os::unix::fs::MetadataExt;
    let inodes = |files: &[PathBuf]| -> Vec<Option<u64>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).ok().map(|m| m.ino()))
            .collect()
    };
    eventually(
        T,
        "a read of the export files between two rotations",
        || {
            let files = export_files(path, keep);
            let before = inodes(&files);
            let texts: Option<Vec<(PathBuf, String)>> = files
                .iter()
                .map(|f| try_text(f).ok().map(|t| (f.clone(), t)))
                .collect();
            let same = export_files(path, keep) == files && inodes(&files) == before;
            texts.filter(|_| same)
        },
    )
}

fn lines_of(texts: &[(PathBuf, String)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (f, text) in texts {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends mid-line",
            f.display()
        );
        for l in text.lines() {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", f.display()));
            let schema = v["schema"].as_str().unwrap_or_default();
            assert!(
                schema == "observer.event/v2" || schema == "observer.history/v2",
                "{}: schema {schema:?}: {l}",
                f.display()
            );
            out.push(v);
        }
    }
    out
}

fn argv_has(v: &Value, word: &str) -> bool {
    v["argv"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(word)))
}

/// `n` runs of a `true` (common::tiny's binary, with a secret and `mark` on their command
/// line) by a shell that is PID 1 of a new pid namespace — a bare container, so each has a
/// history entry — and that shell then runs `true MARK-end` and exits with 7.
fn storm(n: u32, mark: &str) {
    Storm::start(n, mark).end();
}

/// A storm's shell that, its `n` runs done, waits to be told to end: the test lets its
/// last lines (`MARK-end`'s exec, the shell's own history entry) come once the storm's are
/// out of the queues, so that a queue the storm filled cannot drop them. Killed (with
/// everything in its pid namespace) if the test ends before it did.
struct Storm {
    unshare: Option<std::process::Child>,
    dir: TempDir,
}

impl Storm {
    fn start(n: u32, mark: &str) -> Storm {
        let dir = TempDir::new("export", "storm-bin");
        let t = dir.0.join("true");
        tiny::write(&t, mark);
        let fifo = dir.0.join("go");
        let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(ok.success(), "mkfifo {}", fifo.display());
        let (t, fifo, looped) = (t.display(), fifo.display(), dir.0.join("looped"));
        // `: >` and `read` are the shell's own: no exec of theirs in the export.
        let script = format!(
            "i=0; while [ $i -lt {n} ]; do {t} secret=hunter2 {mark} $i; i=$((i+1)); done; \
             : > {}; read _ < {fifo}; {t} {mark}-end; exit 7",
            looped.display()
        );
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
            .spawn()
            .unwrap();
        let mut s = Storm {
            unshare: Some(unshare),
            dir,
        };
        eventually(T * 5, "the storm's runs", || {
            let c = s.unshare.as_mut().unwrap();
            let ended = c.try_wait().unwrap();
            assert!(ended.is_none(), "the storm's shell ended early: {ended:?}");
            looped.exists().then_some(())
        });
        s
    }

    /// Once the storm's `lines` left the sinks' queues (every sink wrote or dropped that
    /// many more than `before`, and none has a line queued), lets the shell end.
    fn end_after(self, a: &Agent, before: u64, lines: u64) {
        eventually(T, "the storm's lines out of the export queues", || {
            let (out, queued) = queues(a);
            (out >= before + lines && queued == 0).then_some(())
        });
        self.end();
    }

    fn end(mut self) {
        std::fs::write(self.dir.0.join("go"), "\n").unwrap();
        let st = self.unshare.take().unwrap().wait().unwrap();
        assert_eq!(st.code(), Some(7), "the storm's shell");
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        if let Some(mut c) = self.unshare.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines written or dropped so far (the least of every sink's), and lines queued (all
/// sinks').
fn queues(a: &Agent) -> (u64, u64) {
    let st = status(a);
    let sinks = st["export"].as_array().unwrap();
    let out = sinks
        .iter()
        .map(|s| u64_of(s, "sent") + u64_of(s, "dropped"));
    let queued = sinks.iter().map(|s| u64_of(s, "queued")).sum();
    (out.min().unwrap_or(0), queued)
}

#[test]
fn file_sink_exports_every_exec_and_history_entry_of_a_storm_across_rotated_gzip_files() {
    const N: u32 = 20_000;
    const MAX: u64 = 64 << 10;
    const KEEP: u32 = 1000; // enough to hold every line of the storm
    let dir = TempDir::new("export", "storm");
    let path = dir.0.join("events.jsonl");
    let mark = format!("export-storm-{}", std::process::id());
    let a = Agent::start(&[
        "--export-file",
        path.to_str().unwrap(),
        "--export-file-max",
        "64K",
        "--export-file-keep",
        &KEEP.to_string(),
        "--export-file-gzip",
        "--export-types",
        "exec,history",
        "--redact-args",
        "secret=\\S*",
    ]);
    let before = queues(&a).0;
    Storm::start(N, &mark).end_after(&a, before, 2 * N as u64);
    // The last line the storm causes: its shell's history entry.
    let last = ["observer.history/v2", "\"comm\":\"sh\"", &mark];
    let (_, dropped) = settled(&a, "file", &path, &last);
    let before = status(&a);
    let texts = snapshot(&path, KEEP);
    let files: Vec<PathBuf> = texts.iter().map(|(f, _)| f.clone()).collect();
    assert!(
        files.len() as u32 <= KEEP,
        "{} files: the storm overflowed keep",
        files.len()
    );
    assert!(files.len() > 10, "{} files: the storm rotated", files.len());
    let all = lines_of(&texts);
    for (f, t) in &texts {
        let len = t.len() as u64;
        assert!(len <= MAX, "{}: {len} bytes > {MAX}", f.display());
    }
    assert!(
        files[..files.len() - 1]
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "gz")),
        "every rotated file is compressed: {files:?}"
    );
    // The node goes on running processes: lines counted before the files were read ≤ lines
    // read ≤ lines counted after (a line is counted once written: asked until it is).
    let n = all.len() as u64;
    let (s0, s1) = (
        export_counts(&before, "file").0,
        last_until(T, || export_counts(&status(&a), "file").0, |s1| n <= *s1),
    );
    assert!(
        s0 <= n && n <= s1,
        "lines in the files = lines sent: {s0} ≤ {n} ≤ {s1}"
    );
    let sent = n;
    let execs = all
        .iter()
        .filter(|v| v["schema"] == "observer.event/v2" && argv_has(v, &mark))
        .count() as u64;
    let ended = all
        .iter()
        .filter(|v| v["schema"] == "observer.history/v2" && argv_has(v, &mark))
        .count() as u64;
    eprintln!("{N} spawns: {execs} exec and {ended} history lines; sent {sent}, dropped {dropped}");
    if dropped == 0 {
        assert_eq!(execs, N as u64, "an exec line per spawn");
        assert_eq!(ended, N as u64, "a history line per spawn");
    } else {
        assert!(
            execs + ended + dropped >= 2 * N as u64,
            "every missing line counted"
        );
    }
    assert!(
        all.iter()
            .all(|v| v["type"] == "exec" || v["schema"] == "observer.history/v2"),
        "--export-types exec,history exports nothing else"
    );
    let text: String = texts.iter().map(|(_, t)| t.as_str()).collect();
    assert!(!text.contains("hunter2"), "a secret reached the export");
    assert!(
        all.iter().any(|v| argv_has(v, &mark) && argv_has(v, "***")),
        "the masked argument is there"
    );
    // The shell that ran the storm was its container's PID 1 and exited with 7.
    let sh = all.iter().find(|v| {
        v["schema"] == "observer.history/v2"
            && v["comm"] == "sh"
            && v["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains(&mark)))
            })
    });
    let sh = sh.unwrap_or_else(|| panic!("no history line for the storm's shell"));
    assert_eq!(sh["exit_code"], 7, "{sh}");
    assert_eq!(sh["ns_pid"], 1, "{sh}");
    assert_eq!(sh["runtime"], "bare", "{sh}");
    // The same counts on /metrics.
    let m = http_body(&a.http_get("/metrics"));
    assert!(
        m.contains("observer_export_sent_total{sink=\"file\"}"),
        "{m}"
    );
    assert!(
        m.contains("observer_export_dropped_total{sink=\"file\"}"),
        "{m}"
    );
    assert!(m.contains("# TYPE observer_export_queued gauge"), "{m}");
    assert!(m.contains("observer_export_queued{sink=\"file\"}"), "{m}");
}

#[test]
fn export_types_exec_rotated_with_keep_3_and_stdout_has_the_same_lines() {
    const N: u32 = 2_000;
    const MAX: u64 = 64 << 10;
    let dir = TempDir::new("export", "types");
    let path = dir.0.join("events.jsonl");
    let stdout = dir.0.join("stdout.jsonl");
    let mark = format!("export-types-{}", std::process::id());
    // The agent's stdout into a file: `observer agent … --export-stdout > stdout.jsonl`.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        &format!("exec \"$0\" agent \"$@\" > {}", stdout.display()),
        &observer_bin(),
    ]);
    let socket = dir.0.join("agent.sock");
    let args = [
        "--export-file",
        path.to_str().unwrap(),
        "--export-file-max",
        "64K",
        "--export-file-keep",
        "3",
        "--export-stdout",
        "--export-types",
        "exec",
    ];
    let a = Agent::launch(cmd, &socket, &args).unwrap();
    let before = queues(&a).0;
    Storm::start(N, &mark).end_after(&a, before, N as u64);
    let end = format!("{mark}-end");
    let (_, dropped) = settled(&a, "file", &path, &[&end]);
    let (_, out_dropped) = settled(&a, "stdout", &stdout, &[&end]);
    // About 1.2 MB of exec lines: rotated many times, 3 rotated files kept.
    let files = export_files(&path, 5);
    assert_eq!(files.len(), 4, "PATH and PATH.1..3: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= MAX, "{}: {len} bytes > {MAX}", f.display());
    }
    let file = lines(&files);
    let out = lines(std::slice::from_ref(&stdout));
    assert!(file.iter().all(|v| v["type"] == "exec"), "only exec lines");
    assert!(file.iter().all(|v| v["schema"] == "observer.event/v2"));
    let marked = out.iter().filter(|v| argv_has(v, &mark)).count();
    if out_dropped == 0 {
        assert_eq!(marked, N as usize, "an exec line per spawn on stdout");
    }
    // Both sinks were offered the same lines in the same order: what the file kept is a
    // run of stdout's lines (the node's own processes go on adding to both meanwhile).
    if dropped == 0 && out_dropped == 0 {
        let at = out
            .iter()
            .position(|v| *v == file[0])
            .expect("the file's oldest kept line is on stdout");
        let run = &out[at..(at + file.len()).min(out.len())];
        assert!(run == &file[..run.len()], "the file's lines are stdout's");
        assert!(
            run.len() + 50 >= file.len(),
            "stdout is not far behind the file"
        );
    }
    drop(a);
}

#[test]
fn a_sink_on_a_full_file_system_drops_and_counts_while_events_are_still_applied() {
    let dir = TempDir::new("export", "full");
    let mnt = Tmpfs::mount(&dir.0.join("mnt"), "64k");
    // Fill it (dd stops at ENOSPC).
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", mnt.0.join("filler").display()))
        .output();
    let path = mnt.0.join("events.jsonl");
    let a = Agent::start(&["--export-file", path.to_str().unwrap()]);
    let before = applied(&status(&a));
    storm(500, "export-full");
    // A drop may be counted already at start-up: wait for the storm's events too.
    let st = last_until(
        T,
        || status(&a),
        |st| export_counts(st, "file").1 > 0 && applied(st) > before + 500,
    );
    assert!(export_counts(&st, "file").1 > 0, "drops counted: {st:#}");
    assert!(
        applied(&st) > before + 500,
        "events applied while the sink drops"
    );
    // Still running and still applying.
    let mid = applied(&st);
    storm(100, "export-full-2");
    let later = eventually(T, "more events applied", || {
        let st = status(&a);
        (applied(&st) > mid + 100).then_some(st)
    });
    let (_, d1) = export_counts(&st, "file");
    let (_, d2) = export_counts(&later, "file");
    assert!(applied(&later) > applied(&st), "events still applied");
    assert!(d2 >= d1);
    // The first failure may come while the agent starts (the events buffered meanwhile);
    // the warning is printed after the drop is counted: read the log until it is there.
    let mut log = a.startup_log.clone();
    a.wait_for_log(&mut log, T, "the failure logged with its path", |l| {
        l.contains("export to")
    });
    let warned = log.iter().filter(|l| l.contains("export to")).count();
    assert!(warned >= 1, "the failure was logged with its path");
    assert!(warned <= 3, "logged once per kind, not per line: {warned}");
    if let Ok(text) = std::fs::read_to_string(&path) {
        assert!(text.is_empty() || text.ends_with('\n'), "no half line left");
    }
    drop(a);
    drop(mnt);
}

#[test]
fn export_settings_are_accepted_in_the_config_file() {
    let dir = TempDir::new("export", "config");
    let conf = dir.0.join("config.toml");
    std::fs::write(
        &conf,
        "export_file = \"/var/log/observer/events.jsonl\"\nexport_file_max = \"10M\"\n\
         export_file_keep = 3\nexport_file_gzip = true\nexport_stdout = true\n\
         export_types = \"exec,exit,history\"\n\
         otlp_endpoint = \"https://otel.example:4318\"\notlp_header = [\"Authorization=Bearer s3cret\"]\n\
         otlp_timeout = \"5s\"\n",
    )
    .unwrap();
    let out = observer()
        .args(["agent", "--print-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "export_file",
        "export_file_max",
        "export_file_keep",
        "export_file_gzip",
        "export_stdout",
        "export_types",
        "otlp_endpoint",
        "otlp_header",
        "otlp_timeout",
    ] {
        assert!(
            text.contains(key),
            "{key} missing from --print-config: {text}"
        );
    }
    assert!(
        text.contains("otlp_header = [\"Authorization=***\"]") && !text.contains("s3cret"),
        "a header's value is a credential: {text}"
    );
    std::fs::write(&conf, "export_types = \"exec,bogus\"\n").unwrap();
    let out = observer()
        .args(["agent", "--print-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bogus"), "{err}");
}
