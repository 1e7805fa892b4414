//! The workload's processes as /proc shows them at a frozen moment, and as the agent's views
//! list them; every difference, both ways (listed but not in /proc, in /proc but not
//! listed), with both sides printed.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    os::unix::fs::MetadataExt,
};

use serde_json::Value;

use super::host::Cgroup;

/// Namespace names as /proc/<pid>/ns and the agent's `ns` object spell them.
use observer_common::NS_NAMES as NS;

/// What both sides must agree on for one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub ppid: u64,
    pub ns_pids: Vec<u64>,
    pub zombie: bool,
    /// Its pid namespace; None where /proc cannot tell (a zombie's links are gone).
    pub pidns: Option<u64>,
    /// Namespace inodes (None: unreadable in /proc, unknown to the agent).
    pub ns: BTreeMap<&'static str, Option<u64>>,
    /// cgroup v2 path.
    pub cgroup: String,
    /// Command name (shown, not compared: /proc is where the views read it).
    pub comm: String,
}

impl fmt::Display for Facts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ppid {} ns_pids {:?} {} pidns {:?} cgroup {}",
            self.comm,
            self.ppid,
            self.ns_pids,
            if self.zombie { "zombie" } else { "alive" },
            self.pidns,
            self.cgroup
        )
    }
}

/// One process as /proc shows it now; None when it is gone.
pub fn proc_facts(pid: u32) -> Option<Facts> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything, ')' included: the fields follow the last one.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let open = stat.iter().position(|&b| b == b'(')?;
    let comm = String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned();
    let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
    let mut f = rest.split_whitespace();
    let zombie = f.next()? == "Z";
    let ppid = f.next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ns_pids = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))?;
    let ino = |n: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/{n}"))
            .ok()
            .map(|m| m.ino())
    };
    Some(Facts {
        ppid,
        ns_pids,
        zombie,
        pidns: ino("pid"),
        ns: NS.iter().map(|n| (*n, ino(n))).collect(),
        cgroup,
        comm,
    })
}

/// Every process in `cg` (or below) according to /proc.
pub fn proc_side(cg: &Cgroup) -> BTreeMap<u32, Facts> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_facts(pid)?)))
        .filter(|(_, f)| cg.holds(&f.cgroup))
        .collect()
}

/// One entry of `ps -o json` as facts.
pub fn agent_facts(p: &Value) -> Facts {
    let u = |v: &Value| v.as_u64();
    Facts {
        ppid: p["ppid"].as_u64().unwrap_or(u64::MAX),
        ns_pids: p["ns_pids"]
            .as_array()
            .map(|a| a.iter().filter_map(u).collect())
            .unwrap_or_default(),
        // A zombie to the agent: its exit seen (zombie_age_s is only set then) and /proc
        // saying Z.
        zombie: p["zombie_age_s"].is_number(),
        pidns: u(&p["pidns"]),
        ns: NS.iter().map(|n| (*n, u(&p["ns"][*n]))).collect(),
        cgroup: p["cgroup"].as_str().unwrap_or("?").to_string(),
        comm: p["comm"].as_str().unwrap_or("?").to_string(),
    }
}

/// The agent's `ps -o json` entries in `cg` (by cgroup id or path), by pid.
pub fn agent_side(ps: &Value, cg: &Cgroup, ids: &HashSet<u64>) -> BTreeMap<u32, Facts> {
    ps.as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["cgroup_id"].as_u64().is_some_and(|i| ids.contains(&i))
                || p["cgroup"].as_str().is_some_and(|c| cg.holds(c))
        })
        .filter_map(|p| Some((p["pid"].as_u64()? as u32, agent_facts(p))))
        .collect()
}

/// Whether an agent answer's `live` flag is false for `pid` (its /proc read failed).
fn not_live(ps: &Value, pid: u32) -> bool {
    ps.as_array()
        .into_iter()
        .flatten()
        .any(|p| p["pid"] == pid && p["live"] == false)
}

/// The agent's entry for `pid` anywhere in its answer (for a process it files elsewhere).
fn anywhere(ps: &Value, pid: u32) -> Option<Facts> {
    ps.as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
        .map(agent_facts)
}

/// Field-by-field differences of one process (the agent's side first).
fn field_diffs(a: &Facts, p: &Facts) -> Vec<String> {
    let mut d = Vec::new();
    if a.ppid != p.ppid {
        d.push(format!("ppid {} vs {}", a.ppid, p.ppid));
    }
    if a.ns_pids != p.ns_pids {
        d.push(format!("ns_pids {:?} vs {:?}", a.ns_pids, p.ns_pids));
    }
    if a.zombie != p.zombie {
        d.push(format!("zombie {} vs {}", a.zombie, p.zombie));
    }
    if p.pidns.is_some() && a.pidns != p.pidns {
        d.push(format!("pidns {:?} vs {:?}", a.pidns, p.pidns));
    }
    for (n, want) in &p.ns {
        let have = a.ns.get(n).copied().flatten();
        if want.is_some() && have != *want {
            d.push(format!("ns.{n} {have:?} vs {want:?}"));
        }
    }
    if a.cgroup != p.cgroup {
        d.push(format!("cgroup {} vs {}", a.cgroup, p.cgroup));
    }
    d
}

/// Every difference between the agent's `ps` answer and /proc for the workload.
pub fn diff(ps: &Value, agent: &BTreeMap<u32, Facts>, proc: &BTreeMap<u32, Facts>) -> Vec<String> {
    let mut out = Vec::new();
    for (pid, p) in proc {
        match agent.get(pid).cloned().or_else(|| anywhere(ps, *pid)) {
            None => out.push(format!("{pid}: in /proc but not listed\n    /proc: {p}")),
            Some(a) => {
                let d = field_diffs(&a, p);
                if !d.is_empty() {
                    out.push(format!(
                        "{pid}: {} (agent vs /proc)\n    agent: {a}\n    /proc: {p}",
                        d.join(", ")
                    ));
                }
            }
        }
        if not_live(ps, *pid) {
            out.push(format!("{pid}: listed with live: false"));
        }
    }
    for (pid, a) in agent {
        if proc.contains_key(pid) {
            continue;
        }
        match proc_facts(*pid) {
            None => out.push(format!("{pid}: listed but not in /proc\n    agent: {a}")),
            Some(p) => out.push(format!(
                "{pid}: listed in the workload's cgroup, /proc has it elsewhere\n    agent: {a}\n    /proc: {p}"
            )),
        }
    }
    out
}

/// The parents with the most zombies: "pid (comm) ×count", at most three.
pub fn zombie_parents(proc: &BTreeMap<u32, Facts>) -> String {
    let mut by: BTreeMap<u64, usize> = BTreeMap::new();
    for f in proc.values().filter(|f| f.zombie) {
        *by.entry(f.ppid).or_default() += 1;
    }
    let mut v: Vec<(u64, usize)> = by.into_iter().collect();
    v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    v.iter()
        .take(3)
        .map(|&(pid, n)| {
            let comm = proc.get(&(pid as u32)).map_or("?", |f| f.comm.as_str());
            format!("{pid} ({comm}) ×{n}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `zombies -o json` answer against /proc: the workload's zombies, each with the
/// parent /proc names.
pub fn zombies_diff(zombies: &Value, proc: &BTreeMap<u32, Facts>) -> Vec<String> {
    let listed: BTreeMap<u32, u64> = zombies
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|z| Some((z["pid"].as_u64()? as u32, z["parent_pid"].as_u64()?)))
        .collect();
    let mut out = Vec::new();
    for (pid, p) in proc.iter().filter(|(_, p)| p.zombie) {
        match listed.get(pid) {
            None => out.push(format!(
                "{pid}: a zombie in /proc, not in `zombies`\n    /proc: {p}"
            )),
            Some(&parent) if parent != p.ppid => out.push(format!(
                "{pid}: `zombies` names parent {parent}, /proc {}\n    /proc: {p}",
                p.ppid
            )),
            Some(_) => {}
        }
    }
    for (pid, _) in listed.iter().filter(|(pid, _)| proc.contains_key(pid)) {
        if !proc[pid].zombie {
            out.push(format!(
                "{pid}: in `zombies`, not a zombie in /proc\n    /proc: {}",
                proc[pid]
            ));
        }
    }
    out
}
