//! A real `observer agent` driven from outside, as the integration tests
//! (observer/tests/it) and `cargo xtask bench` drive it: started on a socket of the
//! caller's and an ephemeral TCP port, ready when it says where its API listens, asked with
//! plain HTTP/1.0 GETs on that port or its unix socket, stopped with SIGTERM (or killed).
//!
//! The caller builds the command (binary, environment, wrappers such as setpriv) and
//! decides what to do with each line the agent prints on stderr.

use std::{
    fmt,
    io::{self, BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        mpsc::{channel, Receiver},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// A running agent; SIGTERM and a wait when dropped (unless it was killed on purpose).
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
    /// host:port of the HTTP listener.
    pub http: String,
    /// host:port of the metrics listener (`--metrics-listen`).
    pub metrics: Option<String>,
    /// What it printed on stderr before it was ready (warnings about its environment).
    pub startup_log: Vec<String>,
    /// What it prints on stderr after that, line by line.
    log: Mutex<Receiver<String>>,
    /// Stopped or killed already: nothing left for Drop.
    stopped: bool,
    /// The history store's directory the harness chose (beside the socket), removed when
    /// the agent is stopped (a crash leaves it for the next agent on the socket).
    state_dir: Option<PathBuf>,
}

/// The agent exited, or said nothing about its API, before `ready_within`.
#[derive(Debug)]
pub struct StartError {
    /// Its exit status, when it ended (it is killed after the time limit).
    pub status: io::Result<ExitStatus>,
    /// Everything it printed on stderr.
    pub said: Vec<String>,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "observer agent did not start ({:?}): {}",
            self.status,
            self.said.join("\n")
        )
    }
}

impl std::error::Error for StartError {}

/// How to start an agent: `cmd` ends in `observer agent` (perhaps behind a wrapper, with
/// its own environment); the harness adds `--socket`, `--listen 127.0.0.1:0`, a
/// `--state-dir` beside the socket (unless `extra` has one: never the node's
/// /var/lib/observer; or `state_dir` is false: a build older than the store) and `extra`.
pub struct Start<'a> {
    pub cmd: Command,
    pub socket: &'a Path,
    pub extra: &'a [&'a str],
    /// Whether the agent takes `--state-dir` (false for a build older than the history
    /// store, as `bench --baseline` may run).
    pub state_dir: bool,
    /// How long it may take to say where its API listens.
    pub ready_within: Duration,
    /// Called with each line it prints on stderr, from a thread of its own.
    pub on_line: Box<dyn FnMut(&str) + Send>,
}

impl Agent {
    /// Starts the agent and waits until it is ready.
    ///
    /// # Errors
    /// [`StartError`] when it cannot be spawned, exits, or is not ready in time.
    pub fn start(s: Start<'_>) -> Result<Agent, StartError> {
        let Start {
            mut cmd,
            socket,
            extra,
            state_dir,
            ready_within,
            mut on_line,
        } = s;
        let state_dir = (state_dir && !extra.contains(&"--state-dir"))
            .then(|| socket.with_extension("history"));
        if let Some(d) = &state_dir {
            cmd.arg("--state-dir").arg(d);
        }
        let mut child = cmd
            .arg("--socket")
            .arg(socket)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartError {
                status: Err(e),
                said: Vec::new(),
            })?;
        let (tx, rx) = channel();
        let err = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                on_line(&l);
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + ready_within;
        let mut said = Vec::new();
        let (http, metrics) = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    if let Some(http) = address_after(&l, "API on http") {
                        break (http, address_after(&l, "metrics on http"));
                    }
                    said.push(l);
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(StartError { status, said });
                }
            }
        };
        Ok(Agent {
            child,
            socket: socket.to_path_buf(),
            http,
            metrics,
            startup_log: said,
            log: Mutex::new(rx),
            stopped: false,
            state_dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it printed on stderr since it was ready (or since the last call).
    pub fn log_lines(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_iter()
            .collect()
    }

    /// GET on the HTTP listener: the whole response (status line and headers included).
    ///
    /// # Errors
    /// When the connection fails.
    pub fn http_get(&self, path: &str) -> io::Result<String> {
        http_get(&self.http, path)
    }

    /// GET on the unix socket, where every route answers (the CLI's way in).
    ///
    /// # Errors
    /// When the connection fails.
    pub fn socket_get(&self, path: &str) -> io::Result<String> {
        unix_get(&self.socket, path)
    }

    /// `/v1/status`, read on the unix socket (whatever credentials TCP wants).
    ///
    /// # Errors
    /// When the connection fails or the answer is not JSON.
    pub fn status(&self) -> io::Result<Value> {
        let body = http_body(&self.socket_get("/v1/status")?);
        serde_json::from_str(&body).map_err(io::Error::other)
    }

    /// Events the agent took from the ring buffer, and those the kernel dropped.
    ///
    /// # Errors
    /// As [`Agent::status`].
    pub fn event_totals(&self) -> io::Result<(u64, u64)> {
        let st = self.status()?;
        let sum = |k: &str| {
            st["events"]
                .as_array()
                .map_or(0, |a| a.iter().map(|e| e[k].as_u64().unwrap_or(0)).sum())
        };
        Ok((sum("received"), sum("dropped")))
    }

    /// Its resident set (VmRSS) in KiB; 0 when it cannot be read.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends `sig` and waits for the agent to exit: its status and how long it took. The
    /// restart record beside the socket is removed (a stop on purpose).
    pub fn stop_with(mut self, sig: i32) -> (ExitStatus, Duration) {
        let t = Instant::now();
        self.signal(sig);
        let status = self.child.wait().expect("wait for the agent");
        self.stopped = true;
        let _ = std::fs::remove_file(self.socket.with_extension("state"));
        self.remove_state_dir();
        (status, t.elapsed())
    }

    /// SIGKILL, as the OOM killer or an operator would: no chance to clean up. The socket
    /// and the restart record stay for a next agent (`Crashed::socket`) until the returned
    /// guard drops, which removes them: the killed agent's leftovers are the test's.
    #[must_use = "the killed agent's socket and restart record are removed when this drops"]
    pub fn crash(mut self) -> Crashed {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        self.stopped = true;
        Crashed {
            socket: self.socket.clone(),
        }
    }

    /// Removes the history store's directory the harness chose.
    fn remove_state_dir(&self) {
        if let Some(d) = &self.state_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(pid, sig) };
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
        // A clean stop removes the socket; the restart record beside it is the caller's.
        let _ = std::fs::remove_file(self.socket.with_extension("state"));
        self.remove_state_dir();
    }
}

/// What an agent killed by [`Agent::crash`] left: its socket file and restart record,
/// removed when this drops (a next agent on the same socket removes them itself when it
/// stops cleanly; drop this after it).
pub struct Crashed {
    pub socket: PathBuf,
}

impl Drop for Crashed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(self.socket.with_extension("state"));
    }
}

/// "… API on http[s]://ADDR and SOCKET[; metrics on http[s]://ADDR/metrics]": the ADDR after
/// `what`.
fn address_after(line: &str, what: &str) -> Option<String> {
    let rest = line.split(what).nth(1)?;
    let rest = rest.split_once("://")?.1;
    Some(rest.split(['/', ' ']).next()?.to_string())
}

/// A plain HTTP/1.0 GET on `addr` (host:port): the whole response, status line and headers
/// included; an error for a refused connection.
///
/// # Errors
/// When the connection fails.
pub fn http_get(addr: &str, path: &str) -> io::Result<String> {
    http_get_with(addr, path, &[])
}

/// `http_get` with extra header lines (`Name: value`).
///
/// # Errors
/// When the connection fails.
pub fn http_get_with(addr: &str, path: &str, headers: &[&str]) -> io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n")?;
    for h in headers {
        write!(s, "{h}\r\n")?;
    }
    write!(s, "\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// `http_get` over a unix socket (the agent's root-only one, where every route answers).
///
/// # Errors
/// When the connection fails.
pub fn unix_get(socket: &Path, path: &str) -> io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// The body of a response `http_get` returned.
pub fn http_body(response: &str) -> String {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
