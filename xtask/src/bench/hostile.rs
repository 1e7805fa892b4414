//! What hostile clients cost the events: a spawn storm into an agent with a small ring
//! buffer (256 KiB) and credentials on its TCP listener, alone and again while 8 clients
//! send a wrong password and 8 scrape `/metrics` with the right one, as fast as they can.
//! Every failed check costs a bcrypt; they run off the thread that applies events, one at a
//! time, and a client past its failures is refused without one. Goal: the clients cost no
//! events (lost with them ≤ lost alone).

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::{Agent, Report};

/// Spawns per storm worker, and workers at once.
const SPAWNS: u32 = 10_000;
const WORKERS: usize = 2;
const BAD: &str = "Basic cHJvbTp3cm9uZw=="; // prom:wrong
const GOOD: &str = "Basic cHJvbTpzZWNyZXQ="; // prom:secret

/// One storm: (events lost, wall seconds, refused with a bcrypt, refused without one,
/// scrapes answered).
struct Outcome {
    lost: u64,
    secs: f64,
    refused: u64,
    throttled: u64,
    scraped: u64,
}

/// A web config with `prom:secret` hashed as exporter-toolkit's docs do (htpasswd -B).
fn web_config(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let out = Command::new("htpasswd")
        .args(["-nbBC", "10", "prom", "secret"])
        .output()
        .context("htpasswd (apache2-utils) makes the bcrypt hash: apt-get install apache2-utils")?;
    if !out.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = String::from_utf8(out.stdout)?;
    let hash = line.trim().split_once(':').context("htpasswd's output")?.1;
    std::fs::create_dir_all(dir)?;
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prom: {hash}\n"))?;
    Ok(web)
}

fn get(addr: &str, auth: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    let _ = std::io::copy(&mut s, &mut std::io::sink());
    Some(String::from_utf8_lossy(&head[9..12]).into_owned())
}

fn storm_with(web: &std::path::Path, clients: bool) -> Result<Outcome> {
    let web = web.to_str().context("a UTF-8 temp dir")?;
    let agent = Agent::start_with(&[
        "--ringbuf-size",
        "256K",
        "--reconcile-interval",
        "1h",
        "--web-config",
        web,
    ])?;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::default();
    let threads: Vec<_> = (0..if clients { 16 } else { 0 })
        .map(|i| {
            let (addr, stop, counts) = (agent.http.clone(), stop.clone(), counts.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let slot = match get(&addr, if i < 8 { BAD } else { GOOD }).as_deref() {
                        Some("401") => 0,
                        Some("429") => 1,
                        Some("200") => 2,
                        _ => continue,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (_, lost0) = agent.event_totals()?;
    let script = format!("i=0; while [ $i -lt {SPAWNS} ]; do /bin/true; i=$((i+1)); done");
    let t = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| Command::new("sh").args(["-c", &script]).spawn())
        .collect::<Result<_, _>>()?;
    for mut w in workers {
        w.wait()?;
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    thread::sleep(std::time::Duration::from_millis(300));
    let (_, lost) = agent.event_totals()?;
    let c = |i: usize| counts[i].load(Ordering::Relaxed);
    Ok(Outcome {
        lost: lost - lost0,
        secs,
        refused: c(0),
        throttled: c(1),
        scraped: c(2),
    })
}

pub fn hostile(r: &mut Report) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("observer-bench-hostile-{}", std::process::id()));
    let web = web_config(&dir);
    let res = web.and_then(|web| Ok((storm_with(&web, false)?, storm_with(&web, true)?)));
    let _ = std::fs::remove_dir_all(&dir);
    let (alone, with) = res?;
    r.add(
        &format!(
            "hostile clients: {} spawns into a 256 KiB ring, alone / with 8 wrong-password and 8 scraping clients",
            SPAWNS as usize * WORKERS
        ),
        format!(
            "{} / {} events lost, {:.1} / {:.1} s ({} refused with a bcrypt, {} throttled, {} scrapes)",
            alone.lost, with.lost, alone.secs, with.secs, with.refused, with.throttled, with.scraped
        ),
        "lost with clients ≤ alone",
        with.lost <= alone.lost,
    );
    Ok(())
}
