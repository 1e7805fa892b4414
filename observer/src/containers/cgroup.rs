//! Container attribution from cgroup paths: the runtime, the container id and (for
//! Kubernetes) the pod UID, for every layout observer knows — Docker, containerd and CRI,
//! kubelet pod slices, cri-o, podman and its conmon, LXC, systemd-nspawn and observer's own
//! launcher — with the systemd and cgroupfs drivers, on cgroup v2, v1 and hybrid hosts.
//!
//! Pure string work on `/proc/<pid>/cgroup` lines and attach paths; no file system access.
//! The layouts are the ones the runtimes document (shared/DESIGN.md §4); captures from real
//! runtimes on this machine are in observer/tests/fixtures/cgroup and in the tests below.
//!
//! Cgroup names are chosen by anyone who may create cgroups (a user's delegated subtree,
//! rootless runtimes, a container with its own cgroup namespace): they are data. A layout
//! counts only where its runtime puts containers (anchored at the hierarchy's root), never
//! sliced at an unchecked byte offset (fuzzed structure-aware:
//! fuzz/fuzz_targets/cgroup_paths.rs).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where observer's launcher puts its containers' cgroups (`<root>/observer/<name>`).
pub(crate) const LAUNCHER_PARENT: &str = "observer";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Runtime {
    Docker,
    Containerd,
    /// A CRI container under kubelet's cgroupfs layout, whose id carries no runtime prefix
    /// (containerd or cri-o: the name resolver tells which from the node's state files).
    Cri,
    Crio,
    Podman,
    Lxc,
    Nspawn,
    /// observer's built-in launcher.
    Observer,
    /// No runtime cgroup, but a pid namespace of its own (`unshare --pid --fork`).
    Bare,
    /// A bare container its OCI runtime's state names (`runc run`, `crun run`): reported,
    /// never a key (the key stays the pid namespace's).
    Runc,
    Crun,
}

impl Runtime {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Cri => "cri",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
            Runtime::Lxc => "lxc",
            Runtime::Nspawn => "nspawn",
            Runtime::Observer => "observer",
            Runtime::Bare => "bare",
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the cgroup holds the container's processes or its shim/monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Member,
    /// conmon (podman, cri-o) or the LXC monitor: the process that supervises the container.
    Shim,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CgroupMatch {
    pub(crate) runtime: Runtime,
    pub(crate) id: String,
    /// Kubernetes pod UID (dashes restored), when the path carries one.
    pub(crate) pod_uid: Option<String>,
    /// containerd namespace (`default`, `k8s.io`, ...), when known from the path.
    pub(crate) namespace: Option<String>,
    /// Podman pod id, when the path is under a pod's cgroup (`/libpod_parent/<pod id>/…`,
    /// `machine-libpod_pod_<pod id>.slice`).
    pub(crate) pod_id: Option<String>,
    pub(crate) role: Role,
}

impl CgroupMatch {
    fn new(runtime: Runtime, id: &str) -> Self {
        CgroupMatch {
            runtime,
            id: id.to_string(),
            pod_uid: None,
            namespace: None,
            pod_id: None,
            role: Role::Member,
        }
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID from a kubelet pod cgroup name (`pod<uid>` or `kubepods-…-pod<uid>.slice`).
fn pod_uid(component: &str) -> Option<String> {
    let rest = component.strip_suffix(".slice").unwrap_or(component);
    let uid = rest
        .rsplit_once("-pod")
        .map(|(_, u)| u)
        .or_else(|| rest.strip_prefix("pod"))?;
    // The systemd driver writes the UID's dashes as underscores.
    let uid = uid.replace('_', "-");
    (uid.len() >= 32 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// Undoes systemd unit-name escaping (`\x2d` → `-`, `\xc3\xa9` → `é`). Works on bytes: the
/// name is anyone's (a delegated subtree names its own cgroups), so `\x` may be followed by
/// anything, multi-byte characters included; an escape that is not two hex digits stays as
/// written, and bytes that do not decode as UTF-8 become U+FFFD.
pub fn systemd_unescape(s: &str) -> String {
    fn hex(b: Option<&u8>) -> Option<u8> {
        let d = *b?;
        (d as char).to_digit(16).map(|v| v as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let (Some(hi), Some(lo)) = (hex(b.get(i + 2)), hex(b.get(i + 3))) {
                out.push(hi << 4 | lo);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `<prefix><id>.scope` (systemd driver) with a 64-hex id.
fn hex_scope<'a>(c: &'a str, prefix: &str) -> Option<&'a str> {
    c.strip_prefix(prefix)?
        .strip_suffix(".scope")
        .filter(|id| is_hex_id(id))
}

/// `<prefix><id>` (cgroupfs driver) with a 64-hex id.
fn hex_named<'a>(c: &'a str, prefix: &str) -> Option<&'a str> {
    c.strip_prefix(prefix).filter(|id| is_hex_id(id))
}

fn member(runtime: Runtime, id: &str) -> CgroupMatch {
    CgroupMatch::new(runtime, id)
}

fn shim(runtime: Runtime, id: &str) -> CgroupMatch {
    CgroupMatch {
        role: Role::Shim,
        ..CgroupMatch::new(runtime, id)
    }
}

/// Well-known containerd namespaces whose `/<namespace>/<id>` cgroups (cgroupfs driver) are
/// recognised from the path alone, at the hierarchy's root where containerd puts them.
pub(crate) const CONTAINERD_NAMESPACES: &[&str] = &["default", "k8s.io", "moby", "buildkit"];

/// Attributes one cgroup path (the part after `N:controllers:`).
///
/// A cgroup is a runtime's container only where that runtime puts its containers: a layout
/// anchored at the hierarchy's root (`/docker/<id>`, `/system.slice/docker-<id>.scope`,
/// `/kubepods…`, `/machine.slice/libpod-<id>.scope`, `/observer/<name>`, …), or at the
/// cgroup of a container already found (nested runtimes: a kind node in docker; the
/// innermost wins). Anywhere else — a user's slice, a delegated service — a container-like
/// name is only a name: any user can make one there.
pub fn parse_path(path: &str) -> Option<CgroupMatch> {
    // No runtime puts control characters in its cgroups' names.
    if path.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut found = None;
    let mut at = 0;
    while let Some((m, len)) = layout_at(&comps[at..]) {
        let is_shim = m.role == Role::Shim;
        found = Some(m);
        at += len;
        if is_shim || at >= comps.len() {
            break;
        }
    }
    found
}

/// The container whose cgroup is `r[..n]`, where `r` starts at the root of a hierarchy (or
/// of a container's cgroup), with that `n`.
fn layout_at(r: &[&str]) -> Option<(CgroupMatch, usize)> {
    let first = *r.first()?;
    let second = r.get(1).copied().unwrap_or("");
    let two = |m: Option<CgroupMatch>| m.map(|m| (m, 2));
    match first {
        "docker" => two(is_hex_id(second).then(|| member(Runtime::Docker, second))),
        "system.slice" => two(hex_scope(second, "docker-")
            .map(|id| member(Runtime::Docker, id))
            // cri-o's conmon with `conmon_cgroup = "system.slice"`.
            .or_else(|| hex_scope(second, "crio-conmon-").map(|id| shim(Runtime::Crio, id)))),
        "machine.slice" => machine_slice(&r[1..]).map(|(m, n)| (m, n + 1)),
        "libpod_parent" => libpod_parent(&r[1..]).map(|(m, n)| (m, n + 1)),
        LAUNCHER_PARENT | "lxc" if !second.is_empty() => {
            let rt = if first == "lxc" {
                Runtime::Lxc
            } else {
                Runtime::Observer
            };
            Some((member(rt, second), 2))
        }
        "kubelet" | "kubelet.slice" => kubelet(&r[1..]).map(|(m, n)| (m, n + 1)),
        c if c.starts_with("kubepods") => kubelet(r),
        c => {
            if let Some(name) = c.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
                return Some((member(Runtime::Lxc, name), 1));
            }
            if let Some(name) = c.strip_prefix("lxc.monitor.").filter(|n| !n.is_empty()) {
                return Some((shim(Runtime::Lxc, name), 1));
            }
            if CONTAINERD_NAMESPACES.contains(&c) && !second.is_empty() {
                let mut m = member(Runtime::Containerd, second);
                m.namespace = Some(c.to_string());
                return Some((m, 2));
            }
            None
        }
    }
}

/// Under `machine.slice`: podman's scopes (systemd driver), in a pod's slice or not, and
/// systemd-nspawn's (and libvirt's) `machine-<name>.scope`.
fn machine_slice(r: &[&str]) -> Option<(CgroupMatch, usize)> {
    let c = *r.first()?;
    if let Some(pod) = c
        .strip_prefix("machine-libpod_pod_")
        .and_then(|p| p.strip_suffix(".slice"))
        .filter(|p| is_hex_id(p))
    {
        let (mut m, n) = podman_scope(r.get(1)?)?;
        m.pod_id = Some(pod.to_string());
        return Some((m, n + 1));
    }
    if let Some(found) = podman_scope(c) {
        return Some(found);
    }
    let name = systemd_unescape(c.strip_prefix("machine-")?.strip_suffix(".scope")?);
    (!name.is_empty() && !name.bytes().any(|b| b.is_ascii_control() || b == b'/'))
        .then(|| (member(Runtime::Nspawn, &name), 1))
}

fn podman_scope(c: &str) -> Option<(CgroupMatch, usize)> {
    if let Some(id) = hex_scope(c, "libpod-conmon-") {
        return Some((shim(Runtime::Podman, id), 1));
    }
    hex_scope(c, "libpod-").map(|id| (member(Runtime::Podman, id), 1))
}

/// Under `libpod_parent` (podman's cgroupfs driver): `libpod-<id>`, in a pod's
/// `<pod id>/` or not. Its conmon cgroup (`conmon`) is shared: no container.
fn libpod_parent(r: &[&str]) -> Option<(CgroupMatch, usize)> {
    let c = *r.first()?;
    let named = |c: &str| {
        hex_named(c, "libpod-conmon-")
            .map(|id| shim(Runtime::Podman, id))
            .or_else(|| hex_named(c, "libpod-").map(|id| member(Runtime::Podman, id)))
    };
    if is_hex_id(c) {
        let mut m = named(r.get(1)?)?;
        m.pod_id = Some(c.to_string());
        return Some((m, 2));
    }
    named(c).map(|m| (m, 1))
}

/// kubelet's tree (`r[0]` is its `kubepods*` root), both drivers:
/// `kubepods[.slice]/[<qos>/]<pod>/<container>`, the container named by the runtime
/// (`cri-containerd-`, `crio-`, `crio-conmon-`, `docker-` scopes; `crio-`, `crio-conmon-`
/// or the bare id with cgroupfs).
fn kubelet(r: &[&str]) -> Option<(CgroupMatch, usize)> {
    let root = *r.first()?;
    if !(root.starts_with("kubepods") || root == "kubelet-kubepods.slice") {
        return None;
    }
    let qos = |c: &str| {
        matches!(c, "burstable" | "besteffort")
            || c.ends_with("-burstable.slice")
            || c.ends_with("-besteffort.slice")
    };
    let p = if r.get(1).is_some_and(|c| qos(c)) {
        2
    } else {
        1
    };
    let uid = pod_uid(r.get(p)?)?;
    let c = *r.get(p + 1)?;
    let mut m = if let Some(id) = hex_scope(c, "cri-containerd-") {
        member(Runtime::Containerd, id)
    } else if let Some(id) = hex_scope(c, "crio-conmon-").or_else(|| hex_named(c, "crio-conmon-")) {
        shim(Runtime::Crio, id)
    } else if let Some(id) = hex_scope(c, "crio-").or_else(|| hex_named(c, "crio-")) {
        member(Runtime::Crio, id)
    } else if let Some(id) = hex_scope(c, "docker-") {
        member(Runtime::Docker, id)
    } else if is_hex_id(c) {
        member(Runtime::Cri, c)
    } else {
        return None;
    };
    m.pod_uid = Some(uid);
    Some((m, p + 2))
}

/// One line of /proc/<pid>/cgroup: hierarchy id, controllers, path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub(crate) hierarchy: u32,
    pub(crate) controllers: &'a str,
    pub path: &'a str,
}

pub fn parse_line(line: &str) -> Option<CgroupLine<'_>> {
    let mut it = line.splitn(3, ':');
    let hierarchy = it.next()?.parse().ok()?;
    let controllers = it.next()?;
    let path = it.next()?;
    Some(CgroupLine {
        hierarchy,
        controllers,
        path,
    })
}

/// The lines of a /proc/<pid>/cgroup file in the order attribution reads them: the cgroup v2
/// line first, then `name=systemd`, then the v1 `pids` and `memory` hierarchies, then the
/// rest (v1-only and hybrid hosts). None when a hierarchy is listed twice: the kernel lists
/// each once, so a cgroup name smuggled a line in (kernels before 4.16 let a name hold a
/// newline) and no line of the file can be trusted to name a container.
pub(crate) fn ranked_lines(content: &str) -> Option<Vec<CgroupLine<'_>>> {
    let mut lines: Vec<CgroupLine> = content.split('\n').filter_map(parse_line).collect();
    let mut ids: Vec<u32> = lines.iter().map(|l| l.hierarchy).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let rank = |l: &CgroupLine| match (l.hierarchy, l.controllers) {
        (0, _) => 0,
        (_, "name=systemd") => 1,
        (_, c) if c.split(',').any(|c| c == "pids" || c == "memory") => 2,
        _ => 3,
    };
    lines.sort_by_key(rank);
    Some(lines)
}

/// Attributes a whole /proc/<pid>/cgroup file: the first line, in `ranked_lines` order,
/// whose path names a container.
pub fn parse_file(content: &str) -> Option<CgroupMatch> {
    ranked_lines(content)?
        .iter()
        .find_map(|l| parse_path(l.path))
}

#[cfg(test)]
mod tests;
