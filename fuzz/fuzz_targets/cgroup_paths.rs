//! /proc/<pid>/cgroup files and cgroup paths, which any process can shape (it names its own
//! cgroups where it may create them): attribution never panics, and a container-like name
//! outside its runtime's parents is never a container.
//!
//! Each input is read twice: as the raw text of a file (the committed seeds are real
//! files), and as the choices of a structure-aware generator (`arbitrary::Unstructured`)
//! that builds files from what attribution looks at: runtime parents and prefixes, ids,
//! systemd escapes (`\x..`) mixed with multi-byte characters, bytes that are not UTF-8,
//! control characters, long names and deep paths. Bytes reach the parsers as the agent
//! hands them over: decoded lossily.
#![no_main]

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use observer::containers::{
    cgroup::{parse_file, parse_line, parse_path, systemd_unescape},
    Registry,
};

const PARENTS: &[&str] = &[
    "docker",
    "system.slice",
    "machine.slice",
    "libpod_parent",
    "observer",
    "lxc",
    "kubepods",
    "kubepods.slice",
    "kubelet",
    "kubelet.slice",
    "kubelet-kubepods.slice",
    "kubepods-burstable.slice",
    "kubepods-besteffort.slice",
    "burstable",
    "besteffort",
    "default",
    "k8s.io",
    "moby",
    "user.slice",
    "user-1000.slice",
    "user@1000.service",
    "init.scope",
    "conmon",
];
const PREFIXES: &[&str] = &[
    "docker-",
    "cri-containerd-",
    "crio-",
    "crio-conmon-",
    "libpod-",
    "libpod-conmon-",
    "machine-",
    "machine-libpod_pod_",
    "lxc.payload.",
    "lxc.monitor.",
    "pod",
    "kubepods-pod",
    "kubepods-burstable-pod",
    "kubelet-kubepods-besteffort-pod",
    "",
];
const SUFFIXES: &[&str] = &["", ".scope", ".slice", ".service"];
const CONTROLLERS: &[&str] = &[
    "",
    "name=systemd",
    "pids",
    "memory",
    "cpu,cpuacct",
    "freezer",
];
const WIDE: &[&str] = &[
    "é",
    "日",
    "🦀",
    "\u{fffd}",
    "\u{7f}",
    "\u{1b}[2J",
    "\r",
    "\t",
    "\n",
];
const ID: &str = "16dc7dabfae21e9e90c50928c94107f5b38dcc65cb88a12b3d695d2dc6b837e4";
const UID: &str = "0a1b2c3d_4e5f_6789_abcd_ef0123456789";

fn pick<'a>(u: &mut Unstructured, from: &[&'a str]) -> Result<&'a str> {
    u.choose(from).copied()
}

/// Bytes systemd's escaping and its undoing meet: `\x`, hex digits, multi-byte characters,
/// bytes that are not UTF-8.
fn escape_soup(u: &mut Unstructured, out: &mut Vec<u8>) -> Result<()> {
    for _ in 0..u.int_in_range(1..=8)? {
        match u.int_in_range(0..=5)? {
            0 => out.extend_from_slice(b"\\x"),
            1 => out.push(*u.choose(b"0123456789abcdefABCDEF+-g")?),
            2 => out.extend_from_slice(pick(u, WIDE)?.as_bytes()),
            3 => out.push(u.int_in_range(0x80..=0xff)?),
            // An escape cut short by what follows (one digit, then a wide character).
            4 => {
                out.extend_from_slice(b"\\x");
                out.push(*u.choose(b"0123456789abcdef")?);
                out.extend_from_slice(pick(u, WIDE)?.as_bytes());
            }
            _ => out.extend_from_slice(format!("\\x{:02x}", u.arbitrary::<u8>()?).as_bytes()),
        }
    }
    Ok(())
}

/// What a container's id position holds.
fn id(u: &mut Unstructured, out: &mut Vec<u8>) -> Result<()> {
    match u.int_in_range(0..=5)? {
        0 => out.extend_from_slice(ID.as_bytes()),
        1 => out.extend_from_slice(UID.as_bytes()),
        2 => out.extend_from_slice(&ID.as_bytes()[..u.int_in_range(0..=64)?]),
        3 => escape_soup(u, out)?,
        4 => out.extend(std::iter::repeat_n(b'a', u.int_in_range(0..=300)?)),
        _ => {
            let n = u.int_in_range(0..=16)?;
            out.extend_from_slice(u.bytes(n)?);
        }
    }
    Ok(())
}

fn component(u: &mut Unstructured, out: &mut Vec<u8>) -> Result<()> {
    match u.int_in_range(0..=4)? {
        0 => out.extend_from_slice(pick(u, PARENTS)?.as_bytes()),
        1 | 2 => {
            out.extend_from_slice(pick(u, PREFIXES)?.as_bytes());
            id(u, out)?;
            out.extend_from_slice(pick(u, SUFFIXES)?.as_bytes());
        }
        3 => escape_soup(u, out)?,
        _ => id(u, out)?,
    }
    Ok(())
}

/// Where runtimes put containers: a parent at the root, the container's name prefix and
/// suffix.
const LAYOUTS: &[(&str, &str, &str)] = &[
    ("/machine.slice", "machine-", ".scope"),
    ("/machine.slice", "libpod-", ".scope"),
    ("/machine.slice/machine-libpod_pod_", "", ".slice"),
    ("/system.slice", "docker-", ".scope"),
    ("/docker", "", ""),
    ("/libpod_parent", "libpod-", ""),
    (
        "/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice",
        "cri-containerd-",
        ".scope",
    ),
    (
        "/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789",
        "crio-",
        "",
    ),
    ("/observer", "", ""),
    ("/lxc", "", ""),
    ("", "/lxc.payload.", ""),
    ("/default", "", ""),
];

/// A path of up to 60 components: sometimes a runtime's layout, sometimes a deep chain of
/// one name, then components of every kind.
fn path(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if u.ratio(1, 2)? {
        let (parent, prefix, suffix) = *u.choose(LAYOUTS)?;
        out.extend_from_slice(parent.as_bytes());
        out.push(b'/');
        out.extend_from_slice(prefix.trim_start_matches('/').as_bytes());
        id(u, &mut out)?;
        out.extend_from_slice(suffix.as_bytes());
    } else if u.ratio(1, 4)? {
        let n = u.int_in_range(40..=60)?;
        out.extend_from_slice("/d".repeat(n).as_bytes());
    }
    for _ in 0..u.int_in_range(0..=6)? {
        out.push(b'/');
        component(u, &mut out)?;
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

fn file(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        let h = if u.ratio(1, 2)? {
            0
        } else {
            u.int_in_range(1..=12)?
        };
        out.extend_from_slice(format!("{h}:{}:", pick(u, CONTROLLERS)?).as_bytes());
        out.extend(path(u)?);
        out.push(b'\n');
    }
    Ok(out)
}

fn check(text: &str) {
    let _ = parse_file(text);
    let mut r = Registry::new(1);
    let p = r.intern_file(text);
    let _ = r.attribute(p, 1, 1);
    let _ = r.attribute(p, 2, 1);
    for line in text.lines() {
        let _ = parse_line(line);
        let _ = parse_path(line);
        if let Some(l) = parse_line(line) {
            for c in l.path.split('/') {
                let _ = systemd_unescape(c);
            }
            // Any user can make cgroups in their slice: nothing there is a container.
            if l.path.starts_with("/user.slice/") {
                assert_eq!(parse_path(l.path), None, "{:?}", l.path);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    if let Ok(bytes) = file(&mut Unstructured::new(data)) {
        check(&String::from_utf8_lossy(&bytes));
    }
});
