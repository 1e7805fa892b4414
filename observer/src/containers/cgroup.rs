//! Container attribution from cgroup paths: the runtime, the container id and (for
//! Kubernetes) the pod UID, for every layout observer knows — Docker, containerd and CRI,
//! kubelet pod slices, cri-o, podman and its conmon, LXC, systemd-nspawn and observer's own
//! launcher — with the systemd and cgroupfs drivers, on cgroup v2, v1 and hybrid hosts.
//!
//! Pure string work on `/proc/<pid>/cgroup` lines and attach paths; no file system access.
//! The layouts are the ones the runtimes document (shared/DESIGN.md §4); captures from real
//! runtimes on this machine are in shared/fixtures/cgroup and in the tests below.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where observer's launcher puts its containers' cgroups (`<root>/observer/<name>`).
pub const LAUNCHER_PARENT: &str = "observer";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
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
    pub fn as_str(self) -> &'static str {
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
pub enum Role {
    Member,
    /// conmon (podman, cri-o) or the LXC monitor: the process that supervises the container.
    Shim,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CgroupMatch {
    pub runtime: Runtime,
    pub id: String,
    /// Kubernetes pod UID (dashes restored), when the path carries one.
    pub pod_uid: Option<String>,
    /// containerd namespace (`default`, `k8s.io`, ...), when known from the path.
    pub namespace: Option<String>,
    /// Podman pod id, when the path is under a pod's cgroup (`/libpod_parent/<pod id>/…`,
    /// `machine-libpod_pod_<pod id>.slice`).
    pub pod_id: Option<String>,
    pub role: Role,
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

/// The podman pod id of a path: the directory after `libpod_parent` (cgroupfs driver) or a
/// `machine-libpod_pod_<id>.slice` (systemd driver).
fn podman_pod(comps: &[&str]) -> Option<String> {
    comps.iter().enumerate().find_map(|(i, c)| {
        let id = c
            .strip_prefix("machine-libpod_pod_")
            .and_then(|r| r.strip_suffix(".slice"))
            .or_else(|| (i > 0 && comps[i - 1] == "libpod_parent").then_some(*c))?;
        is_hex_id(id).then(|| id.to_string())
    })
}

/// Undoes systemd unit-name escaping (`\x2d` → `-`).
fn systemd_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Matches one path component that names a container by itself (systemd-driver scopes and
/// the prefixed cgroupfs names).
fn component_match(c: &str) -> Option<CgroupMatch> {
    let scope = |prefix: &str| {
        c.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".scope"))
    };
    if let Some(id) = scope("docker-") {
        return Some(CgroupMatch::new(Runtime::Docker, id));
    }
    if let Some(id) = scope("cri-containerd-") {
        return Some(CgroupMatch::new(Runtime::Containerd, id));
    }
    if let Some(id) = scope("crio-conmon-") {
        return Some(CgroupMatch {
            role: Role::Shim,
            ..CgroupMatch::new(Runtime::Crio, id)
        });
    }
    if let Some(id) = scope("crio-") {
        return Some(CgroupMatch::new(Runtime::Crio, id));
    }
    if let Some(id) = scope("libpod-conmon-") {
        return Some(CgroupMatch {
            role: Role::Shim,
            ..CgroupMatch::new(Runtime::Podman, id)
        });
    }
    if let Some(id) = scope("libpod-") {
        return Some(CgroupMatch::new(Runtime::Podman, id));
    }
    if let Some(name) = scope("machine-") {
        return Some(CgroupMatch::new(Runtime::Nspawn, &systemd_unescape(name)));
    }
    // cri-o with the cgroupfs driver: the same names without `.scope`.
    if let Some(id) = c.strip_prefix("crio-conmon-") {
        return Some(CgroupMatch {
            role: Role::Shim,
            ..CgroupMatch::new(Runtime::Crio, id)
        });
    }
    if let Some(id) = c.strip_prefix("crio-").filter(|id| is_hex_id(id)) {
        return Some(CgroupMatch::new(Runtime::Crio, id));
    }
    if let Some(id) = c.strip_prefix("libpod-conmon-") {
        return Some(CgroupMatch {
            role: Role::Shim,
            ..CgroupMatch::new(Runtime::Podman, id)
        });
    }
    if let Some(id) = c.strip_prefix("libpod-").filter(|id| is_hex_id(id)) {
        return Some(CgroupMatch::new(Runtime::Podman, id));
    }
    if let Some(name) = c.strip_prefix("lxc.payload.") {
        return Some(CgroupMatch::new(Runtime::Lxc, name));
    }
    if let Some(name) = c.strip_prefix("lxc.monitor.") {
        return Some(CgroupMatch {
            role: Role::Shim,
            ..CgroupMatch::new(Runtime::Lxc, name)
        });
    }
    None
}

/// Well-known containerd namespaces whose `/<namespace>/<id>` cgroups (cgroupfs driver) are
/// recognised from the path alone. Other namespaces need the task directory to exist (see
/// `containers::names`).
pub const CONTAINERD_NAMESPACES: &[&str] = &["default", "k8s.io", "moby", "buildkit"];

/// Attributes one cgroup path (the part after `N:controllers:`).
pub fn parse_path(path: &str) -> Option<CgroupMatch> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The innermost recognisable component wins: nested containers (a kind node in docker)
    // belong to the inner runtime.
    let pod = comps.iter().find_map(|c| {
        (c.starts_with("kubepods") || c.starts_with("pod"))
            .then(|| pod_uid(c))
            .flatten()
    });
    let m = innermost(&comps, pod);
    m.map(|mut m| {
        if m.runtime == Runtime::Podman {
            m.pod_id = podman_pod(&comps);
        }
        m
    })
}

fn innermost(comps: &[&str], pod: Option<String>) -> Option<CgroupMatch> {
    for (i, c) in comps.iter().enumerate().rev() {
        if let Some(mut m) = component_match(c) {
            m.pod_uid = pod.clone();
            return Some(m);
        }
        let parent = i.checked_sub(1).map(|p| comps[p]);
        match parent {
            Some("docker") if is_hex_id(c) => return Some(CgroupMatch::new(Runtime::Docker, c)),
            Some("libpod_parent") => {
                if let Some(id) = c.strip_prefix("libpod-") {
                    return Some(CgroupMatch::new(Runtime::Podman, id));
                }
            }
            Some(p) if p == LAUNCHER_PARENT && i == comps.len() - 1 => {
                return Some(CgroupMatch::new(Runtime::Observer, c));
            }
            Some("lxc") if i == 1 => return Some(CgroupMatch::new(Runtime::Lxc, c)),
            Some(p) if pod.is_some() && p.starts_with("pod") && i == comps.len() - 1 => {
                // kubelet cgroupfs driver: /kubepods/[qos/]pod<uid>/<container id>.
                let mut m = CgroupMatch::new(Runtime::Cri, c);
                m.pod_uid = pod.clone();
                return Some(m);
            }
            Some(ns) if i == 1 && CONTAINERD_NAMESPACES.contains(&ns) => {
                let mut m = CgroupMatch::new(Runtime::Containerd, c);
                m.namespace = Some(ns.to_string());
                return Some(m);
            }
            _ => {}
        }
    }
    None
}

/// One line of /proc/<pid>/cgroup: hierarchy id, controllers, path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine<'a> {
    pub hierarchy: u32,
    pub controllers: &'a str,
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

/// Attributes a whole /proc/<pid>/cgroup file: the cgroup v2 line first, then the
/// `name=systemd` line, then the v1 controllers (v1-only and hybrid hosts).
pub fn parse_file(content: &str) -> Option<CgroupMatch> {
    let lines: Vec<CgroupLine> = content.lines().filter_map(parse_line).collect();
    let rank = |l: &CgroupLine| match (l.hierarchy, l.controllers) {
        (0, _) => 0,
        (_, "name=systemd") => 1,
        (_, c) if c.split(',').any(|c| c == "pids" || c == "memory") => 2,
        _ => 3,
    };
    let mut sorted = lines;
    sorted.sort_by_key(rank);
    sorted.iter().find_map(|l| parse_path(l.path))
}

#[cfg(test)]
mod tests;
