//! The workload, run inside the torture cgroup. Its first process (`root`) is a child
//! subreaper, so double-forked daemons and orphans stay in the workload and are reaped by
//! it; it starts stress-ng's process stressors and, for what stress-ng does not do, shell
//! loops (busybox) and small Rust workers (this same binary, `xtask torture --worker K`).

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

/// stress-ng's process stressors, one worker each, bounded so the workload stays a few
/// hundred processes (the defaults of some, e.g. --exec-max 4096, would fill a small
/// pid_max). Not its `unshare` and `clone` stressors: they leave children unreaped without
/// bound (~1,800 in 10 s; ~40 a second), which fills any pids limit.
const STRESS_NG: &str = "--fork 1 --fork-max 4 --vfork 1 --vfork-max 4 --exec 1 --exec-max 4 \
    --spawn 1 --zombie 1 --zombie-max 64 --daemon 1 --pthread 1 --pthread-max 8 --quiet";

/// Zombies whose parents do not reap them for up to 3 s, then orphaned; and daemons that
/// double-fork (a subshell's background child, util-linux `setsid -f`).
const ZOMBIES_AND_DAEMONS: &str = "\
while :; do busybox sh -c '/bin/sleep 0.0$((RANDOM % 9 + 1)) & /bin/sleep 0.$((RANDOM % 9)) & exec /bin/sleep $((RANDOM % 3 + 1))'; done &
while :; do ( /bin/sleep 0.$((RANDOM % 9 + 1)) & ); /usr/bin/setsid -f /bin/sleep 0.$((RANDOM % 9)); /bin/sleep 0.05; done &
wait";

/// An exec storm: a fork and an exec per iteration; every fourth process first unshares
/// namespaces itself (a leader's unshare, then exec).
const EXEC_STORM: &str = "\
while :; do /bin/true; /bin/true; /bin/true
  /usr/bin/unshare --net --uts --ipc --mount --cgroup --pid /bin/true
done";

/// Moves a few processes at a time between the workload's cgroups ($CG and its SUBDIRS).
const MOVER: &str = "\
cd \"$CG\" || exit 1
while :; do
  for d in . a b c; do
    for p in $(/usr/bin/shuf -n 3 $d/cgroup.procs 2>/dev/null); do
      case $((RANDOM % 4)) in 0) t=. ;; 1) t=a ;; 2) t=b ;; *) t=c ;; esac
      echo $p > $t/cgroup.procs 2>/dev/null
    done
  done
  sleep 0.1
done";

/// Inside a container (own pid, net and UTS namespaces): zombies, daemons, an exec loop
/// and a nested pid namespace (three-level ns PID chains).
const CONTAINER: &str = "\
while :; do busybox sh -c '/bin/sleep 0.0$((RANDOM % 9 + 1)) & exec /bin/sleep $((RANDOM % 2 + 1))'; done &
while :; do ( /bin/sleep 0.$((RANDOM % 9 + 1)) & ); /bin/sleep 0.1; done &
/usr/bin/unshare --pid --fork busybox sh -c 'while :; do /bin/sleep 0.$((RANDOM % 5 + 1)) & /bin/true; /bin/sleep 0.1; done' &
while :; do /bin/sleep 1; done";

/// `xtask torture --worker <kind> [args]`.
pub fn worker(kind: &str, args: &[String]) -> Result<()> {
    match kind {
        "root" => root(args),
        "ns-threads" => ns_threads(args.first().context("ns-threads PID")?.parse()?),
        "chain" => chain(args.first().map_or(Ok(0), |d| d.parse())?),
        "thread-exec" => thread_exec(),
        _ => bail!("unknown torture worker `{kind}`"),
    }
}

fn busybox(script: &str) -> Command {
    let mut c = Command::new("busybox");
    c.args(["sh", "-c", script]);
    c
}

/// The workload's first process: args are the cgroup directory and the seconds to run.
fn root(args: &[String]) -> Result<()> {
    let [cg, secs] = args else {
        bail!("root needs the cgroup directory and the seconds")
    };
    // SAFETY: plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    }
    let me = std::env::current_exe()?;
    let w = |k: &str| {
        let mut c = Command::new(&me);
        c.args(["torture", "--worker", k]);
        c
    };
    let timeout = format!("{}s", secs.parse::<u64>()? + 60);
    let mut kids = vec![
        Command::new("stress-ng")
            .args(STRESS_NG.split_whitespace())
            .args(["--timeout", &timeout])
            .stdout(Stdio::null())
            .spawn()?,
        busybox(ZOMBIES_AND_DAEMONS).spawn()?,
        busybox(EXEC_STORM).spawn()?,
        busybox(MOVER).env("CG", cg).spawn()?,
        w("chain").arg("0").spawn()?,
        busybox("while :; do \"$0\" torture --worker thread-exec; done")
            .arg(&me)
            .spawn()?,
    ];
    let ctr = Command::new("unshare")
        .args([
            "--pid", "--net", "--uts", "--fork", "busybox", "sh", "-c", CONTAINER,
        ])
        .spawn()?;
    let init = loop {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", ctr.id()))?;
        if let Some(p) = kids.split_whitespace().next() {
            break p.to_string();
        }
        thread::sleep(Duration::from_millis(10));
    };
    kids.push(ctr);
    kids.push(w("ns-threads").arg(&init).spawn()?);
    // Reap everything: the children above, and the orphans this subreaper adopts.
    loop {
        let mut st = 0;
        // SAFETY: plain waitpid.
        if unsafe { libc::waitpid(-1, &mut st, 0) } < 0 {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A Go-style process: rounds of 12 threads, of which four unshare a network namespace
/// and four setns into `target`'s network and UTS namespaces (a locked OS thread entering
/// a container, as CNI plugins, containerd and dockerd do), all ending within 0.3 s.
fn ns_threads(target: u32) -> Result<()> {
    loop {
        let round: Vec<_> = (0..12)
            .map(|i| {
                thread::spawn(move || {
                    use std::os::fd::AsRawFd;
                    let enter = |ns: &str, flag: i32| {
                        if let Ok(f) = std::fs::File::open(format!("/proc/{target}/ns/{ns}")) {
                            // SAFETY: a valid namespace fd.
                            unsafe { libc::setns(f.as_raw_fd(), flag) };
                        }
                    };
                    match i % 3 {
                        // SAFETY: plain syscall on this thread.
                        0 => unsafe {
                            libc::unshare(libc::CLONE_NEWNET);
                        },
                        1 => {
                            enter("net", libc::CLONE_NEWNET);
                            enter("uts", libc::CLONE_NEWUTS);
                        }
                        _ => {}
                    }
                    thread::sleep(Duration::from_millis(20 + 20 * i as u64));
                })
            })
            .collect();
        for t in round {
            let _ = t.join();
        }
    }
}

/// Fork chains: a process that starts one child (posix_spawn, a vfork), which starts one,
/// ... `depth` deep, each waiting for the next; depth 0 repeats chains of 2 to 17 forever.
fn chain(depth: u32) -> Result<()> {
    let me = std::env::current_exe()?;
    let spawn = |d: u32| {
        Command::new(&me)
            .args(["torture", "--worker", "chain", &d.to_string()])
            .status()
    };
    if depth == 0 {
        let mut n: u32 = std::process::id();
        loop {
            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            spawn(2 + (n >> 16) % 16)?;
        }
    }
    if depth > 1 {
        spawn(depth - 1)?;
    } else {
        thread::sleep(Duration::from_millis(u64::from(std::process::id() % 50)));
    }
    Ok(())
}

/// A process whose non-leader thread execs while other threads run: the kernel kills the
/// others and the exec'ing thread takes over the leader's PID (de_thread).
fn thread_exec() -> Result<()> {
    for _ in 0..3 {
        // Under the workload's pids limit a thread may not start: fine, the others do.
        let _ = thread::Builder::new().spawn(|| thread::sleep(Duration::from_secs(10)));
    }
    let t = thread::Builder::new().spawn(|| {
        use std::os::unix::process::CommandExt;
        thread::sleep(Duration::from_millis(30));
        Command::new("/bin/sleep").arg("0.2").exec()
    })?;
    let err = t
        .join()
        .map_err(|_| anyhow::anyhow!("exec thread panicked"))?;
    bail!("exec from a thread: {err}")
}
