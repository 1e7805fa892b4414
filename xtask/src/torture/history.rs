//! What the agent was told, per process: the run follows the agent's own event stream
//! (`/v1/events` on its socket: the events in the order the table applied them) and keeps
//! the last few of each PID, so that a mismatch prints the events behind the agent's side —
//! the cause of a wrong fact is in their order or content, long gone by the next round.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
};

use anyhow::{Context, Result};
use serde_json::Value;

/// Events kept per PID (the newest).
const PER_PID: usize = 8;
/// The events that move a process between cgroups and namespaces: few, so following them
/// costs the agent nothing (with fork, exec, exit and free too — some 20,000 a second here —
/// this reader and the agent's serialisation took enough CPU that the ring buffer overflowed
/// and 2,973 events were lost in a 600 s run that loses none without it).
const TYPES: &str = "cgroup_attach,setns,unshare";

#[derive(Default)]
struct Kept {
    by_pid: HashMap<u32, VecDeque<String>>,
}

pub struct History {
    kept: Arc<Mutex<Kept>>,
    /// Events the stream dropped because this reader lagged (its history has gaps then).
    lagged: Arc<AtomicU64>,
}

impl History {
    /// Subscribes to the agent's event stream on `socket` and keeps it in a thread.
    pub fn follow(socket: &Path) -> Result<History> {
        let mut s = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        write!(
            s,
            "GET /v1/events?types={TYPES} HTTP/1.0\r\nHost: observer\r\n\r\n"
        )?;
        let h = History {
            kept: Arc::default(),
            lagged: Arc::default(),
        };
        let (kept, lagged) = (h.kept.clone(), h.lagged.clone());
        thread::spawn(move || {
            let mut lines = BufReader::new(s).lines().map_while(Result::ok);
            // The response head, up to its blank line.
            for l in lines.by_ref() {
                if l.is_empty() {
                    break;
                }
            }
            for l in lines {
                keep(&kept, &lagged, &l);
            }
        });
        Ok(h)
    }

    /// The kept events of `pid`, oldest first, one indented line each.
    pub fn of(&self, pid: u32) -> String {
        let k = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let Some(evs) = k.by_pid.get(&pid) else {
            return format!("      (no event of {pid} kept)\n");
        };
        evs.iter().map(|e| format!("      {e}\n")).collect()
    }

    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

fn keep(kept: &Mutex<Kept>, lagged: &AtomicU64, line: &str) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if v["type"] == "lost" {
        lagged.fetch_add(v["count"].as_u64().unwrap_or(1), Ordering::Relaxed);
        return;
    }
    let Some(pid) = v["pid"].as_u64() else {
        return;
    };
    let line = short(&v);
    let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
    let evs = k.by_pid.entry(pid as u32).or_default();
    if evs.len() == PER_PID {
        evs.pop_front();
    }
    evs.push_back(line);
}

/// One event as a line: the fields the comparison looks at, then what the event adds.
fn short(v: &Value) -> String {
    let mut rest = v.clone();
    if let Some(o) = rest.as_object_mut() {
        for k in [
            "type",
            "time_ns",
            "cpu",
            "pid",
            "tid",
            "ppid",
            "ns",
            "ns_pids",
            "cgroup_id",
            "start_time_ns",
            "comm",
            "uid",
            "gid",
        ] {
            o.remove(k);
        }
    }
    format!(
        "{} {} tid {} ppid {} comm {} start {} cgroup_id {} ns_pids {} at {} {}",
        v["type"].as_str().unwrap_or("?"),
        v["pid"],
        v["tid"],
        v["ppid"],
        v["comm"],
        v["start_time_ns"],
        v["cgroup_id"],
        v["ns_pids"],
        v["time_ns"],
        rest
    )
}
