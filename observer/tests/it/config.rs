//! The agent as an operator configures and runs it: settings from the config file, OBSERVER_*
//! variables and flags (in that order of strength), `--print-config`, a bad file refused with
//! its file, line and key, JSON logs, /healthz and /readyz, and SIGTERM/SIGINT ending it
//! cleanly within 2 s. Run as root.

use std::{path::PathBuf, process::Output, time::Duration};

use crate::common::{agent::*, *};

/// A config file removed on drop.
struct Conf(PathBuf);

impl Conf {
    fn new(tag: &str, text: &[u8]) -> Conf {
        let p = std::env::temp_dir().join(format!(
            "observer-test-config-{}-{tag}.toml",
            std::process::id()
        ));
        std::fs::write(&p, text).unwrap();
        Conf(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Conf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = observer();
    c.arg("agent").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The `key = value  # origin` line of a --print-config output.
fn setting<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{out}"))
}

#[test]
fn settings_come_from_flags_then_environment_then_the_file() {
    let conf = Conf::new(
        "layers",
        b"# a node's settings\nlisten = \"127.0.0.1:19555\"\nringbuf_size = \"8M\"\n\
          max_containers = 7\ncontainerd_state = [\"/run/a\", \"/run/b\"]\n",
    );
    let out = agent(
        &[
            "--config",
            conf.path(),
            "--listen",
            "127.0.0.1:19556",
            "--print-config",
        ],
        &[("OBSERVER_RINGBUF_SIZE", "16M")],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for (key, want) in [
        ("listen", "listen = \"127.0.0.1:19556\""),
        ("ringbuf_size", "ringbuf_size = \"16M\""),
        ("max_containers", "max_containers = \"7\""),
        (
            "containerd_state",
            "containerd_state = [\"/run/a\", \"/run/b\"]",
        ),
        ("idle_timeout", "idle_timeout = \"30s\""),
    ] {
        assert!(setting(&text, key).starts_with(want), "{key}:\n{text}");
    }
    assert!(setting(&text, "listen").ends_with("# flag --listen"));
    assert!(setting(&text, "ringbuf_size").ends_with("# environment OBSERVER_RINGBUF_SIZE"));
    assert!(setting(&text, "max_containers").ends_with("# config file"));
    assert!(setting(&text, "idle_timeout").ends_with("# default"));
    // What it prints is itself a config file that gives the same settings.
    let again = Conf::new("printed", text.as_bytes());
    let out = agent(&["--config", again.path(), "--print-config"], &[]);
    assert!(out.status.success(), "{out:?}");
    let text2 = String::from_utf8(out.stdout).unwrap();
    for key in [
        "listen",
        "ringbuf_size",
        "max_containers",
        "containerd_state",
        "socket",
    ] {
        assert_eq!(
            setting(&text2, key).split('#').next(),
            setting(&text, key).split('#').next(),
            "{key}"
        );
    }
}

#[test]
fn a_bad_config_names_the_file_line_and_key_and_the_agent_does_not_start() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "unknown",
            b"ringbuf_size = \"8M\"\nbogus = 1\n",
            &[":2: unknown key `bogus`", "known: listen"],
        ),
        (
            "size",
            b"\n\nringbuf_size = \"3M\"\n",
            &[":3: key `ringbuf_size`", "power of two"],
        ),
        (
            "zero",
            b"max_containers = 0\n",
            &[":1: key `max_containers`"],
        ),
        (
            "duration",
            b"reconcile_interval = \"10ms\"\n",
            &[":1: key `reconcile_interval`", "at least 1s"],
        ),
        (
            "labels",
            b"metrics_labels = \"pid\"\n",
            &[":1: key `metrics_labels`", "unknown metrics label"],
        ),
        (
            "two",
            b"listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n",
            &[":1: key `listen`", "expects one value"],
        ),
        (
            "table",
            b"[agent]\nlisten = \"127.0.0.1:1\"\n",
            &[":1: unknown key `agent`"],
        ),
        ("syntax", b"listen =\n", &[":1:"]),
        ("binary", b"listen = \"\xff\xfe\"\n", &["not UTF-8"]),
    ];
    let socket =
        std::env::temp_dir().join(format!("observer-test-badconf-{}.sock", std::process::id()));
    for (tag, text, want) in cases {
        let conf = Conf::new(tag, text);
        let out = agent(
            &[
                "--config",
                conf.path(),
                "--socket",
                socket.to_str().unwrap(),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
        assert!(
            err.starts_with(&format!("observer: config {}", conf.path())),
            "{tag}: {err}"
        );
        for w in *want {
            assert!(err.contains(w), "{tag}: `{w}` not in: {err}");
        }
        assert_eq!(err.lines().count(), 1, "{tag}: one line: {err}");
        assert!(!socket.exists(), "{tag}: the agent started");
    }
    let out = agent(&["--config", "/nonexistent/observer.toml"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("config /nonexistent/observer.toml: No such file"),
        "{err}"
    );
    // A bad environment value is clap's clear error, before anything starts.
    let out = agent(&["--print-config"], &[("OBSERVER_MAX_CONNECTIONS", "0")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--max-connections"),
        "{err}"
    );
}

#[test]
fn sigterm_and_sigint_stop_the_agent_within_2s_with_status_0() {
    let conf = Conf::new("json", b"log_format = \"json\"\n");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let agent = Agent::start(&["--config", conf.path()]);
        let ready = agent.http_get("/readyz");
        assert!(
            ready.starts_with("HTTP/1.0 200") && ready.ends_with("ready\n"),
            "{ready}"
        );
        assert!(agent.http_get("/healthz").ends_with("ok\n"));
        let socket = agent.socket.clone();
        let (status, took) = agent.stop_with(sig);
        assert_eq!(status.code(), Some(0), "signal {sig}");
        assert!(took < Duration::from_secs(2), "signal {sig}: {took:?}");
        assert!(!socket.exists(), "signal {sig}: socket left");
    }
}

#[test]
fn a_stop_during_start_up_is_clean_too() {
    // SIGTERM as soon as the socket exists, while the programs load and the table is
    // seeded: the agent finishes starting, then stops with status 0 and removes its socket
    // (it used to die of the signal's default action, leaving the socket behind).
    let socket = std::env::temp_dir().join(format!(
        "observer-test-earlystop-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&socket);
    let mut child = observer()
        // The history store is not what this is about: not the node's /var/lib/observer.
        .args(["agent", "--history-disk-max", "0", "--listen", "127.0.0.1:0", "--socket"])
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent made no socket"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let _ = std::fs::remove_file(socket.with_extension("state"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!socket.exists(), "socket left");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let socket =
        std::env::temp_dir().join(format!("observer-test-jsonlog-{}.sock", std::process::id()));
    let mut child = observer()
        .args([
            "agent",
            "--log-format",
            "json",
            "-v",
            "--history-disk-max",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--socket",
        ])
        .arg(&socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    eventually(Duration::from_secs(30), "the agent to be ready", || {
        std::os::unix::net::UnixStream::connect(&socket)
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                write!(s, "GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
                let mut b = String::new();
                s.read_to_string(&mut b).ok()?;
                b.starts_with("HTTP/1.0 200").then_some(())
            })
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(socket.with_extension("state"));
    let lines = lines.join().unwrap();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for k in ["ts", "level", "target", "msg"] {
            assert!(v[k].is_string(), "{k} in {l}");
        }
    }
    assert!(lines.iter().any(|l| l.contains("API on http://")));
    assert!(lines.iter().any(|l| l.contains("observer agent: stopped")));
}

#[test]
fn the_shipped_config_documents_every_setting_and_is_accepted_uncommented() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config.toml"
    ))
    .unwrap();
    let out = agent(&["--print-config", "--config", "/dev/null"], &[]);
    let printed = String::from_utf8(out.stdout).unwrap();
    let mut uncommented = String::new();
    for l in printed.lines().skip(1) {
        let key = l.trim_start_matches("# ").split(' ').next().unwrap();
        let want = format!("# {key} = ");
        let line = shipped
            .lines()
            .find(|s| s.starts_with(&want))
            .unwrap_or_else(|| panic!("deploy/config.toml does not document `{key}`"));
        assert!(
            shipped.contains(&format!("OBSERVER_{}", key.to_uppercase())),
            "{key}: environment variable not documented"
        );
        if !line.contains("\"...\"") {
            uncommented.push_str(&line[2..]);
            uncommented.push('\n');
        }
    }
    let conf = Conf::new("shipped", uncommented.as_bytes());
    let out = agent(&["--config", conf.path(), "--print-config"], &[]);
    assert!(out.status.success(), "{out:?}\n{uncommented}");
}

#[test]
fn the_metrics_listener_serves_metrics_and_health_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&["--metrics-listen", &addr]);
    let get = |path: &str| http_get(&addr, path).unwrap();
    let m = get("/metrics");
    assert!(
        m.starts_with("HTTP/1.0 200") && m.contains("observer_processes "),
        "{m}"
    );
    assert!(get("/healthz").ends_with("ok\n"));
    assert!(get("/readyz").ends_with("ready\n"));
    for path in [
        "/v1/processes",
        "/v1/status",
        "/v1/containers",
        "/v1/events",
    ] {
        let r = get(path);
        assert!(r.starts_with("HTTP/1.0 404"), "{path} served: {r}");
    }
    // The JSON API is still on its own listener; connections are counted per listener.
    assert!(agent.http_get("/v1/status").starts_with("HTTP/1.0 200"));
    let m = get("/metrics");
    assert!(
        m.contains("observer_api_connections_total{listener=\"metrics\"}"),
        "{m}"
    );
}
