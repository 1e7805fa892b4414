use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    io::Write,
    path::PathBuf,
};

use super::*;
use crate::containers::names::parse::{self, DockerConfig, PodmanContainers, MAX_PODMAN_ENTRIES};

/// Counts the bytes each thread has allocated and not freed, and its peak: what parsing a
/// file on this thread costs, whatever other tests do meanwhile.
struct Counting;

thread_local! {
    static NOW: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = NOW.try_with(|n| {
        let v = n.get() + delta;
        n.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call goes to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on unchanged.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as in alloc.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as in alloc.
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as in alloc.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `f`'s result and the most memory it held at once beyond what the thread held before.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = NOW.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, (PEAK.with(Cell::get) - start).max(0) as usize)
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("observer-state-{name}-{}", std::process::id()))
}

/// Writes `parts` (concatenated) to a fresh file; its path and size.
fn write(name: &str, parts: impl IntoIterator<Item = String>) -> (PathBuf, u64) {
    let p = tmp(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    for s in parts {
        f.write_all(s.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    (p, len)
}

#[test]
fn fields_of_the_wrong_type_read_as_absent() {
    let d: DockerConfig = serde_json::from_str(
        r#"{"Name":["x"],"Config":{"Image":7,"Labels":{"io.kubernetes.pod.name":{"a":[1]},
            "io.kubernetes.pod.namespace":"ns"},"Env":[[[]]]},"State":{"Pid":1}}"#,
    )
    .unwrap();
    let m = parse::docker(&d);
    assert_eq!((m.name, m.image, m.pod), (None, None, None));
    assert_eq!(m.pod_namespace.as_deref(), Some("ns"));
    let d: DockerConfig = serde_json::from_str(r#"{"Name":"/web","Config":"x"}"#).unwrap();
    assert_eq!(parse::docker(&d).name.as_deref(), Some("web"));
    let n: Num = serde_json::from_str("-1").unwrap();
    assert_eq!(n, Num(None));
    let f: FirstStr = serde_json::from_str(r#"[{"a":1},"b"]"#).unwrap();
    assert_eq!(f, FirstStr(None));
    let f: FirstStr = serde_json::from_str(r#"["a",{"b":[]},3]"#).unwrap();
    assert_eq!(f.0.as_deref(), Some("a"));
}

#[test]
fn long_strings_are_cut_at_a_character_boundary() {
    let s = format!("a{}", "é".repeat(MAX_FIELD));
    let c = capped(&s);
    assert!(
        c.len() <= MAX_FIELD && c.len() >= MAX_FIELD - 1,
        "{}",
        c.len()
    );
    assert!(s.starts_with(&c));
    let d: DockerConfig = serde_json::from_str(&format!(r#"{{"Name":"{s}"}}"#)).unwrap();
    assert_eq!(d.name.0.unwrap().len(), c.len());
}

#[test]
fn a_file_over_the_cap_is_refused_unread() {
    let p = tmp("huge");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(MAX_STATE_FILE + 1)
        .unwrap();
    let (v, peak) = peak_during(|| read::<DockerConfig>(&p));
    assert!(v.is_none());
    assert!(peak < 1 << 20, "refusing it cost {peak} bytes");
    std::fs::remove_file(p).unwrap();
}

#[test]
fn hostile_state_files_just_under_the_cap_parse_within_bounded_memory() {
    // podman's containers.json with as many tiny entries as fit: a value tree of it costs
    // hundreds of MiB; the typed read keeps at most MAX_PODMAN_ENTRIES names.
    let entry = |i: u64| format!(r#"{{"id":"{i:08x}","names":["n"]}},"#);
    let n = (MAX_STATE_FILE - 64) / entry(0).len() as u64;
    let (p, len) = write(
        "podman",
        std::iter::once("[".to_string())
            .chain((0..n).map(entry))
            .chain(std::iter::once(r#"{"id":"last"}]"#.to_string())),
    );
    assert!(
        len <= MAX_STATE_FILE && len > MAX_STATE_FILE - (1 << 20),
        "{len}"
    );
    let (v, peak) = peak_during(|| read::<PodmanContainers>(&p));
    let v = v.expect("parsed");
    assert_eq!(v.0.len(), MAX_PODMAN_ENTRIES);
    assert!(
        peak < 32 << 20,
        "{len} bytes of containers.json cost {peak} bytes"
    );
    std::fs::remove_file(&p).unwrap();

    // A Docker config whose wanted fields are huge strings and whose other fields are deep
    // or long: skipped as they stream by, the strings kept cut.
    let big = "x".repeat(5 << 20);
    let (p, len) = write(
        "docker",
        [
            format!(r#"{{"Name":"{big}","Config":{{"Image":"{big}","Labels":{{"#),
            r#""io.kubernetes.pod.name":"p"}},"Env":"#.to_string(),
            "[".repeat(100),
            "]".repeat(100),
            r#","Junk":["#.to_string(),
            "0,".repeat(2 << 20),
            "0]}".to_string(),
        ],
    );
    assert!(len <= MAX_STATE_FILE, "{len}");
    let (v, peak) = peak_during(|| read::<DockerConfig>(&p));
    let m = parse::docker(&v.expect("parsed"));
    assert_eq!(m.name.map(|n| n.len()), Some(MAX_FIELD));
    assert_eq!(m.pod.as_deref(), Some("p"));
    assert!(
        peak < 24 << 20,
        "{len} bytes of config.v2.json cost {peak} bytes"
    );
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_value_tree_costs_many_times_its_text_and_the_typed_read_does_not() {
    // What the typed read is measured against: the same 1 MiB file as a serde_json::Value.
    let (p, len) = write(
        "tree",
        std::iter::once("[".to_string())
            .chain((0..(1u64 << 20) / 10).map(|i| format!(r#"{{"id":{}}},"#, i % 10)))
            .chain(std::iter::once("{}]".to_string())),
    );
    let bytes = std::fs::read(&p).unwrap();
    let (tree, tree_peak) = peak_during(|| serde_json::from_slice::<serde_json::Value>(&bytes));
    assert!(tree.is_ok());
    drop(tree);
    let (typed, typed_peak) = peak_during(|| read::<PodmanContainers>(&p));
    assert!(typed.is_some());
    assert!(
        tree_peak > 5 * len as usize,
        "a value tree took {tree_peak} for {len}"
    );
    assert!(
        typed_peak < len as usize,
        "the typed read took {typed_peak} for {len}"
    );
    std::fs::remove_file(&p).unwrap();
}
