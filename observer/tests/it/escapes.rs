//! Names others choose, carrying terminal escapes, through every text view of a real agent:
//! a launcher container whose PID 1, a parent, its child (an executable with a hostile file
//! name), a zombie and a killer name themselves with OSC, BEL, CSI, CR, LF, C1 and invalid
//! UTF-8 in comm and argv; the killer signals PID 1 (ignored) and the child (killed), so
//! `why` and `history` name it. No control character but the views' own line breaks may
//! reach stdout or stderr, and each hostile name must show, escaped. Run as root.
//! (Container and pod names cannot carry escapes here — the launcher, docker and podman
//! refuse them; src/views/tests.rs renders every view with hostile ones.)

use std::{io::Read, path::Path, process::Stdio, time::Duration};

use crate::common::{agent::*, *};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const NAME: &str = "obs-t-escapes";

/// PID 1, first: hostile names as links to busybox (and one copy, so an executable has
/// the name too), then `exec` through one of them — comm is the name of the file a
/// process executes, so the agent learns these names from exec events, as it would from
/// any program named so.
const PID1: &str = r#"cd /tmp && mkfifo never
export P="$(printf 'P\033]0;PWNED\007\033[2J')" Q="$(printf 'Q\033[31m\r\n\302\233X')"
export Z="$(printf 'Z\033[2J\007')" K="$(printf 'K\033]0;KILL\007\033[2J')"
export E="$(printf 'E\033[2J\007x')"
for n in "$P" "$Q" "$Z" "$K"; do ln -s /bin/busybox "$n"; done
cp /bin/busybox "$E"
exec -a sh "/tmp/$P" -c "$INIT""#;

/// PID 1, named `P…`: starts a parent (hostile comm and argv), a zombie and a killer, then
/// waits in a builtin `read` on a FIFO, never reaping (so the zombie stays).
const INIT: &str = r#"A0="$(printf 'a0\033]0;ARGV\007\377\r\nz')"
A1="$(printf 'b\302\2331m\033[2J')"
exec -a sh "/tmp/$Q" -c "$PARENT" "$A0" "$A1" &
exec -a sh "/tmp/$Z" -c 'exit 3' &
exec -a sh "/tmp/$K" -c "$KILLER" &
read x <> /tmp/never"#;

/// The parent, `Q…`: its child is the hostile executable run as `sleep`; it reaps it.
const PARENT: &str =
    r#"exec -a sleep "/tmp/$E" 1000 & echo $! > /tmp/victim; wait; read x <> /tmp/never"#;

/// The killer, `K…`: SIGTERM to PID 1 (no handler: ignored), SIGKILL to the child.
const KILLER: &str = r#"while [ ! -s /tmp/victim ]; do sleep 0.2; done
sleep 2
kill -TERM 1
kill -KILL "$(cat /tmp/victim)"
read x <> /tmp/never"#;

/// How each hostile name shows once escaped.
const PID1_SHOWN: &str = "P\\x1b]0;PWNED\\x07\\x1b[2J";
const PARENT_SHOWN: &str = "Q\\x1b[31m\\x0d\\n\\x9bX";
const ARGV_SHOWN: &str = "a0\\x1b]0;ARGV\\x07\u{fffd}\\x0d\\nz b\\x9b1m\\x1b[2J";
const EXE_SHOWN: &str = "E\\x1b[2J\\x07x";
const ZOMBIE_SHOWN: &str = "Z\\x1b[2J\\x07";
const KILLER_SHOWN: &str = "K\\x1b]0;KILL\\x07\\x1b[2J";

/// The container, removed (forcibly) on drop.
struct Ctr;

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = observer().args(["rm", "-f", NAME]).output();
    }
}

/// (exit code, stdout, stderr) of `observer args`.
fn run(args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    let out = observer().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, out.stderr)
}

/// Panics if `out` is not UTF-8 or holds a control character other than a line break.
fn assert_clean(what: &str, out: &[u8]) -> String {
    let text = std::str::from_utf8(out)
        .unwrap_or_else(|e| panic!("`observer {what}` printed invalid UTF-8 ({e}): {out:?}"));
    if let Some((at, c)) = text
        .char_indices()
        .find(|&(_, c)| c != '\n' && c.is_control())
    {
        panic!("`observer {what}` printed {c:?} at byte {at}:\n{text}");
    }
    text.to_string()
}

/// Runs a text view (stdout and stderr checked); its stdout.
fn view(agent: &Agent, args: &[&str]) -> String {
    let sock = agent.socket.to_string_lossy().to_string();
    let mut a = args.to_vec();
    a.extend(["--socket", &sock]);
    let (code, out, err) = run(&a);
    let what = args.join(" ");
    let err = assert_clean(&format!("{what} (stderr)"), &err);
    assert_eq!(code, 0, "observer {what}: {err}");
    assert_clean(&what, &out)
}

fn start_container() -> Ctr {
    let _ = run(&["rm", "-f", NAME]);
    let env = |k: &str, v: &str| format!("{k}={v}");
    let (i, p, k) = (
        env("INIT", INIT),
        env("PARENT", PARENT),
        env("KILLER", KILLER),
    );
    let (code, _, err) = run(&[
        "run", "-d", "--name", NAME, "-e", &i, "-e", &p, "-e", &k, "--", "sh", "-c", PID1,
    ]);
    assert_eq!(code, 0, "observer run: {}", String::from_utf8_lossy(&err));
    Ctr
}

/// `observer events` (text) from before the container starts until stopped; its stdout and
/// stderr are read all along (a full pipe would stall it; stderr is checked too).
struct TextEvents(
    std::process::Child,
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
);

impl TextEvents {
    fn start() -> TextEvents {
        let mut child = observer()
            .args(["events", "--type", "exec,signal"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut b = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut b) {
                all.extend_from_slice(&b[..n]);
                if String::from_utf8_lossy(&all).contains("streaming events") {
                    let _ = tx.send(());
                }
            }
            all
        });
        let mut out = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = out.read_to_end(&mut all);
            all
        });
        let ready = rx.recv_timeout(T).is_ok();
        let events = TextEvents(child, reader, lines);
        assert!(ready, "observer events did not start streaming");
        events
    }

    fn stop(mut self) -> String {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let status = self.0.wait().unwrap();
        let out = std::mem::replace(&mut self.2, std::thread::spawn(Vec::new))
            .join()
            .unwrap();
        let handle = std::mem::replace(&mut self.1, std::thread::spawn(Vec::new));
        let err = handle.join().unwrap();
        let err = assert_clean("events (stderr)", &err);
        assert!(status.success(), "observer events: {status:?}\n{err}");
        assert_clean("events", &out)
    }
}

impl Drop for TextEvents {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the killer has done its work and the zombie is there; the killed child's
/// host pid.
fn wait_for_the_story(agent: &Agent) -> String {
    // The child is killed and reaped: its history entry names the killer.
    let history = eventually(T, "the killed child in the history", || {
        let h = agent.json(&["history", NAME]);
        h["entries"]
            .as_array()?
            .iter()
            .find(|e| {
                e["signal"] == "SIGKILL" && e["parents"].as_array().is_some_and(|p| p.len() == 2)
            })
            .map(|e| e["pid"].to_string())
    });
    eventually(T, "the zombie", || {
        let z = agent.json(&["zombies"]);
        z.as_array()?
            .iter()
            .any(|z| z["exit_code"] == 3 && z["comm"].as_str().is_some_and(|c| c.starts_with('Z')))
            .then_some(())
    });
    eventually(T, "PID 1's ignored SIGTERM", || {
        let w: Value = agent.json(&["why", NAME]);
        w["paragraph"].as_str()?.contains("ignored").then_some(())
    });
    history
}

/// Every text view of the agent, and what each must show of the hostile names.
fn check_views(agent: &Agent, victim: &str) {
    let checks: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["tree", NAME],
            vec![
                PID1_SHOWN,
                PARENT_SHOWN,
                ARGV_SHOWN,
                ZOMBIE_SHOWN,
                KILLER_SHOWN,
            ],
        ),
        (vec!["ps"], vec![ARGV_SHOWN, KILLER_SHOWN]),
        (vec!["ps", "-c", NAME], vec![ARGV_SHOWN, KILLER_SHOWN]),
        (vec!["zombies"], vec![ZOMBIE_SHOWN, PID1_SHOWN]),
        (
            vec!["history", NAME],
            vec![EXE_SHOWN, PARENT_SHOWN, PID1_SHOWN, KILLER_SHOWN],
        ),
        (vec!["why", NAME], vec![PID1_SHOWN, KILLER_SHOWN]),
        (vec!["why", victim], vec![EXE_SHOWN, KILLER_SHOWN]),
        (vec!["containers"], vec![NAME]),
        (vec!["pods"], vec![]),
    ];
    for (args, shows) in &checks {
        // The killed child's pid may have been given to a new process meanwhile (pids wrap
        // at 32,768 here, and the suite spawns hundreds of thousands): `why <pid>` then
        // rightly answers for that one. Checked only while the pid is free before and after.
        let reused = || Path::new(&format!("/proc/{victim}")).exists();
        if args[1..] == [victim] && reused() {
            eprintln!("pid {victim} was reused: `why {victim}` not checked");
            continue;
        }
        let out = view(agent, args);
        if args[1..] == [victim] && reused() {
            eprintln!("pid {victim} was reused: `why {victim}` not checked");
            continue;
        }
        for s in shows {
            assert!(
                out.contains(s),
                "`observer {}` does not show {s}:\n{out}",
                args.join(" ")
            );
        }
    }
}

/// Without an agent: the same views from a one-shot /proc scan; and the launcher's list.
fn check_views_without_agent() {
    for (args, shows) in [
        (vec!["ps"], ARGV_SHOWN),
        (vec!["tree", NAME], PID1_SHOWN),
        (vec!["zombies"], ZOMBIE_SHOWN),
    ] {
        let what = format!("{} (no agent)", args.join(" "));
        let mut a = args.clone();
        a.extend(["--socket", "/nonexistent/observer.sock"]);
        let (code, out, err) = run(&a);
        assert_clean(&format!("{what}, stderr"), &err);
        assert_eq!(code, 0, "{what}");
        let out = assert_clean(&what, &out);
        assert!(out.contains(shows), "{what} does not show {shows}:\n{out}");
    }
    let (code, out, _) = run(&["ls"]);
    assert_eq!(code, 0);
    assert!(assert_clean("ls", &out).contains(NAME));
}

/// Error messages that quote a name: unknown containers, and an unknown launcher one.
fn check_errors(agent: &Agent) {
    let hostile = "no\x1b]0;PWNED\x07\x1b[2J\r\nsuch";
    let sock = agent.socket.to_string_lossy().to_string();
    for args in [
        vec!["tree", hostile, "--socket", &sock],
        vec!["why", hostile, "--socket", &sock],
        vec!["history", hostile, "--socket", &sock],
        vec!["stop", hostile],
    ] {
        let (code, out, err) = run(&args);
        assert_ne!(code, 0, "{args:?}");
        assert_clean(&format!("{} (stdout)", args[0]), &out);
        let err = assert_clean(&format!("{} (stderr)", args[0]), &err);
        assert!(err.contains("no\\x1b]0;PWNED"), "{args:?}: {err}");
    }
}

#[test]
fn no_view_prints_a_control_character_from_a_name_others_chose() {
    let agent = Agent::start(&[]);
    let events = TextEvents::start();
    let _ctr = start_container();
    let victim = wait_for_the_story(&agent);
    check_views(&agent, &victim);
    check_views_without_agent();
    check_errors(&agent);
    // The event stream saw the hostile executable and the killer's signals.
    let ev = events.stop();
    assert!(ev.contains(EXE_SHOWN), "events:\n{ev}");
    assert!(ev.contains(KILLER_SHOWN), "events:\n{ev}");
}
