//! What a hostile or careless world does to observer: readers that close the pipe, HTTP
//! clients that never finish, idle forever, stop reading, or come by the thousand (names with
//! terminal escape sequences: tests/it/escapes.rs). Run as root with a real agent.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{agent::*, *};

/// A bare container (a new pid namespace) holding `n` sleeping processes under a shell.
struct Crowd {
    unshare: Child,
    pidns: u64,
}

impl Crowd {
    fn start(n: usize, exe: &str) -> Crowd {
        let script = format!(
            "i=0; while [ $i -lt {n} ]; do '{exe}' 600 & i=$((i+1)); done; echo ready; wait"
        );
        let mut unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(unshare.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        let sh = eventually(Duration::from_secs(10), "the namespace's shell", || {
            let kids =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
                    .ok()?;
            kids.split_whitespace().next()?.parse::<u32>().ok()
        });
        let pidns = ns_inode(sh, "pid");
        eventually(Duration::from_secs(10), "every process to start", || {
            (pids_in_pidns(pidns).len() > n).then_some(())
        });
        Crowd { unshare, pidns }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        // --kill-child: the namespace's init dies with unshare, and with it every member.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Runs observer with `args`, reads its first line (at most 4 KiB: a JSON answer is one
/// long line) and closes the pipe, as `| head -1` or `| head -c 4096` do. Returns the exit
/// status and stderr.
fn first_line_then_close(args: &[String]) -> (std::process::ExitStatus, String) {
    let mut child = observer()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).take(4096);
    let mut line = Vec::new();
    let _ = out.read_until(b'\n', &mut line);
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (status, err)
}

#[test]
fn every_view_piped_into_head_ends_like_a_unix_filter() {
    // 1,500 processes: every view below prints far more than a pipe holds (64 KiB).
    let crowd = Crowd::start(1500, "sleep");
    let pidns = crowd.pidns.to_string();
    let agent = Agent::start(&[]);
    let sock = agent.socket.to_string_lossy().to_string();
    let no_agent = "/nonexistent/observer.sock".to_string();
    let mut runs: Vec<Vec<String>> = Vec::new();
    for socket in [&sock, &no_agent] {
        for (cmd, big) in [
            (vec!["tree", pidns.as_str()], true),
            (vec!["ps"], true),
            (vec!["ps", "-c", pidns.as_str()], true),
            (vec!["containers"], false),
            (vec!["zombies"], false),
        ] {
            for fmt in ["text", "json"] {
                let mut a: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
                a.extend(["-o".into(), fmt.into(), "--socket".into(), socket.clone()]);
                if big {
                    runs.push(a);
                } else {
                    // Small answers fit in the pipe: they must simply succeed.
                    let (st, err) = first_line_then_close(&a);
                    assert!(!err.contains("panicked"), "{a:?}: {err}");
                    assert!(
                        st.success() || st.signal() == Some(libc::SIGPIPE),
                        "{a:?}: {st:?} {err}"
                    );
                }
            }
        }
    }
    for a in &runs {
        let (st, err) = first_line_then_close(a);
        assert!(!err.contains("panicked"), "observer {a:?} panicked: {err}");
        assert_eq!(
            st.signal(),
            Some(libc::SIGPIPE),
            "observer {a:?} should end by SIGPIPE (shell status 141) like ps or cat: {st:?}, stderr: {err}"
        );
        assert!(
            !err.contains("Broken pipe") && !err.contains("error"),
            "observer {a:?} complained about the closed pipe: {err}"
        );
    }
    // The event stream: the first write after the reader left ends it, programs detached.
    let mut events = observer()
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(events.stdout.take().unwrap());
    // Processes for it to report until it has ended: it loads its programs for as long as
    // a loaded machine makes it, and needs one more line after the reader left.
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawner = std::thread::spawn({
        let ended = ended.clone();
        move || {
            let t = Instant::now();
            while !ended.load(std::sync::atomic::Ordering::Relaxed)
                && t.elapsed() < Duration::from_secs(120)
            {
                let _ = Command::new("/bin/true").status();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with('{'), "{line}");
    drop(out);
    let st = events.wait().unwrap();
    ended.store(true, std::sync::atomic::Ordering::Relaxed);
    spawner.join().unwrap();
    let mut err = String::new();
    events
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(st.signal(), Some(libc::SIGPIPE), "events: {st:?} {err}");
    assert!(!err.contains("panicked"), "{err}");
    // Clap's own output (help) and the launcher's list too.
    for a in [vec!["--help".to_string()], vec!["ls".to_string()]] {
        let (st, err) = first_line_then_close(&a);
        assert!(!err.contains("panicked"), "{a:?}: {err}");
        assert!(
            st.success() || st.signal() == Some(libc::SIGPIPE),
            "{a:?}: {st:?}"
        );
    }
}

fn connect(agent: &Agent) -> TcpStream {
    TcpStream::connect(&agent.http).unwrap()
}

/// Whether the agent has closed `s` (EOF or reset), waiting up to `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + within;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in /metrics")) as u64
}

fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("")
}

#[test]
fn http_clients_that_stall_idle_or_stop_reading_are_cut_off() {
    // With a token, so the event stream answers on TCP.
    let agent = Agent::start_with_token(&["--header-timeout", "1s", "--idle-timeout", "2s"]);
    let events =
        format!("GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TEST_TOKEN}\r\n\r\n");
    // Sends nothing.
    let mut silent = connect(&agent);
    // Half a request header.
    let mut half = connect(&agent);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A complete keep-alive exchange, then nothing.
    let mut idle = connect(&agent);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // An event subscriber that reads: a quiet stream is not idle.
    let mut reader = connect(&agent);
    reader.write_all(events.as_bytes()).unwrap();
    let n = reader.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // An event subscriber that never reads, with a small receive buffer.
    let stalled = socket_with_small_rcvbuf(&agent.http);
    let mut stalled = stalled;
    stalled.write_all(events.as_bytes()).unwrap();
    for (what, s) in [
        ("a client that sends nothing", &mut silent),
        ("half a header", &mut half),
        ("an idle keep-alive connection", &mut idle),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(6)),
            "{what} was still open after 6 s"
        );
    }
    // Fill the stalled subscriber's socket with events until the agent gives up on it.
    let t = Instant::now();
    let mut cut = false;
    while t.elapsed() < Duration::from_secs(30) {
        for _ in 0..50 {
            let _ = Command::new("/bin/true").status();
        }
        let m = agent.http_get_with_token("/metrics");
        if metric(
            &m,
            "observer_api_connections_timed_out_total{listener=\"http\"}",
        ) >= 4
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "the subscriber that stopped reading was never cut off");
    // The reading subscriber got events all along and is still connected.
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = Command::new("/bin/true").status();
    let n = reader
        .read(&mut buf)
        .expect("the reading subscriber is still served");
    assert!(n > 0);
    // The cut connection is counted as timed out a moment before it stops counting as open.
    let open = |m: &String| metric(m, "observer_api_connections_open{listener=\"http\"}");
    let m = last_until(
        Duration::from_secs(10),
        || agent.http_get_with_token("/metrics"),
        |m| open(m) == 2,
    );
    assert_eq!(
        open(&m),
        2,
        "the reader and this scrape are the only open connections:\n{m}"
    );
}

fn socket_with_small_rcvbuf(addr: &str) -> TcpStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    let sa: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_ref(&size).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: sa.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*sa.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            std::ptr::from_ref(&sin).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        assert_eq!(s.as_raw_fd(), fd);
        s
    }
}

#[test]
fn thousands_of_connections_and_bad_requests_leave_the_agent_serving() {
    // With a token, so the JSON routes' parsing is reached on TCP.
    let agent = Agent::start_with_token(&["--max-connections", "100"]);
    let agent_pid = agent.pid();
    let fds_before = fd_count(agent_pid);
    let flood: Vec<TcpStream> = (0..2000).map(|_| connect(&agent)).collect();
    // The agent accepts and closes those over its caps while it holds the rest (asked on
    // the unix socket, which has a limit of its own).
    let rejected = || {
        metric(
            &http_body(&agent.socket_get("/metrics")),
            "observer_api_connections_rejected_total{listener=\"http\"}",
        )
    };
    eventually(
        Duration::from_secs(30),
        "1,800 connections rejected",
        || (rejected() >= 1800).then_some(()),
    );
    // The CLI uses the unix socket, which has its own limit: it still answers.
    let (code, _, err) = agent.cli(&["containers"]);
    assert_eq!(code, 0, "the CLI was locked out by a TCP flood: {err}");
    let fds = fd_count(agent_pid);
    assert!(
        fds <= fds_before + 100 + 10,
        "the agent holds {fds} descriptors with 2,000 clients (before: {fds_before}, cap 100)"
    );
    drop(flood);
    // Until the agent has seen those it held close (their slots are for the requests below).
    eventually(
        Duration::from_secs(30),
        "the flood's connections closed",
        || {
            let m = http_body(&agent.socket_get("/metrics"));
            (metric(&m, "observer_api_connections_open{listener=\"http\"}") == 0).then_some(())
        },
    );
    // Bad requests: clear 4xx answers, and the agent goes on.
    let raw = |req: &str| {
        let mut s = connect(&agent);
        // The token goes after the request line (a request with none stays that way).
        let req = match req.split_once("\r\n") {
            Some((line, rest)) => {
                format!("{line}\r\nAuthorization: Bearer {TEST_TOKEN}\r\n{rest}")
            }
            None => req.to_string(),
        };
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let status = |resp: &str| -> u16 {
        resp.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    let cases = [
        ("GET /nope HTTP/1.0\r\n\r\n".to_string(), 404),
        ("POST /v1/containers HTTP/1.0\r\n\r\n".to_string(), 405),
        ("DELETE /metrics HTTP/1.0\r\n\r\n".to_string(), 405),
        // Not valid percent-encoding: taken literally, so no such container.
        (
            "GET /v1/containers/%ZZ/tree HTTP/1.0\r\n\r\n".to_string(),
            404,
        ),
        // Percent-encoded bytes that are not UTF-8.
        (
            "GET /v1/containers/%C3%28/tree HTTP/1.0\r\n\r\n".to_string(),
            400,
        ),
        (
            "GET /v1/events?type=bogus HTTP/1.0\r\n\r\n".to_string(),
            400,
        ),
        (
            format!(
                "GET /healthz HTTP/1.0\r\nX-Big: {}\r\n\r\n",
                "a".repeat(200_000)
            ),
            431,
        ),
        (
            format!(
                "GET /v1/processes?container={} HTTP/1.0\r\n\r\n",
                "a".repeat(200_000)
            ),
            414,
        ),
        ("GARBAGE\r\n\r\n".to_string(), 400),
    ];
    for (req, want) in &cases {
        let resp = raw(req);
        let got = status(&resp);
        let shown: String = req.chars().take(60).collect();
        assert!(
            got == *want || (*want == 414 && got == 431),
            "{shown:?} answered {got}, want {want}: {}",
            resp.chars().take(200).collect::<String>()
        );
    }
    let health = agent.http_get("/healthz");
    assert_eq!(body_of(&health), "ok\n");
    let m = agent.http_get_with_token("/metrics");
    assert!(
        metric(
            &m,
            "observer_api_connections_rejected_total{listener=\"http\"}"
        ) >= 1800
    );
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A child in its own process group, killed with the whole group on drop.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[test]
fn redacted_arguments_are_never_stored_or_served() {
    let secret = format!("hunter{}", std::process::id());
    let script = |tag: &str| {
        format!("exec -a observer-redact-{tag} sh -c 'sleep 600; :' --password={secret} keep")
    };
    // One process from before the agent (its start-up scan), one after (an exec event);
    // each in its own process group, killed whole (the sleep under it too).
    let spawn = |tag: &str| {
        Group(
            Command::new("bash")
                .args(["-c", &script(tag)])
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    };
    let before = spawn("before");
    let agent = Agent::start(&["--redact-args", "password=[^ ]*"]);
    // Subscribed once the header has come: the `after` exec is in the stream.
    let (mut stream, mut seen) = subscribe(&agent.socket, "/v1/events?type=exec");
    let after = spawn("after");
    let ps = eventually(
        Duration::from_secs(10),
        "both processes with their argv",
        || {
            let ps = agent.json(&["ps"]);
            let n = ps
                .as_array()?
                .iter()
                .filter(|p| {
                    p["cmdline"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("observer-redact-") && c.ends_with("keep"))
                })
                .count();
            (n == 2).then_some(ps)
        },
    );
    // The bash's own exec event carries the tag inside its script: wait for the exec whose
    // argv[0] is the tag (the `exec -a` one), which may come in a later read — each exec
    // line may wait up to 2 s for its executable's hash, so no read has a short limit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 65536];
    while !seen.contains("\"argv\":[\"observer-redact-after\"") && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(n @ 1..) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    drop((before, after));
    let text = agent.cli(&["ps"]).1;
    for (what, out) in [
        ("ps -o json", ps.to_string()),
        ("ps", text),
        ("/v1/events", seen.clone()),
    ] {
        assert!(!out.contains(&secret), "{what} shows the secret");
    }
    assert!(ps.to_string().contains("--*** keep"), "{ps}");
    assert!(
        seen.contains("\"--***\""),
        "the exec event is masked: {seen}"
    );
}
