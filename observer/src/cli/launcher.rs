//! `observer run | exec | ls | stop | rm | logs` (and the hidden `__shim`).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};

use crate::{
    launcher::{
        self,
        security::{parse_cap, parse_security_opt, CapArg, SecurityOpt},
        state::Limits,
        LauncherError, RunOptions,
    },
    views::text::{duration, table},
};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Container name (default: c-<first 8 hex of its id>).
    #[arg(long)]
    name: Option<String>,
    /// Root file system directory (default: a busybox rootfs built from the host's
    /// busybox-static under /var/lib/observer/rootfs/busybox).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Hostname inside (default: the name).
    #[arg(long)]
    hostname: Option<String>,
    /// Memory limit (e.g. 64M); the OOM killer enforces it.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    memory: Option<u64>,
    /// Maximum number of tasks (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4_194_304))]
    pids_max: Option<u64>,
    /// CPU quota in CPUs (e.g. 0.5).
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    cpus: Option<f64>,
    /// Network: `none` (own namespace with loopback) or `host`.
    #[arg(long, value_name = "none|host", default_value = "none", value_parser = ["none", "host"])]
    net: String,
    /// Run a tiny init as PID 1 that reaps every orphan (like `docker run --init`).
    #[arg(long)]
    init: bool,
    /// Run in the background and print the name.
    #[arg(short, long)]
    detach: bool,
    /// Environment variables (KEY=VALUE), repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run without the limits whose cgroup controller this host lacks (reported).
    #[arg(long)]
    ignore_missing_limits: bool,
    /// Every capability, no seccomp profile, no masked or read-only /proc paths, /sys
    /// writable (like `docker run --privileged`): root inside is root on the host.
    #[arg(long)]
    privileged: bool,
    /// Add a capability to Docker's default set (e.g. SYS_PTRACE, NET_ADMIN, ALL);
    /// repeatable.
    #[arg(long, value_name = "CAP", value_parser = parse_cap)]
    cap_add: Vec<CapArg>,
    /// Drop a capability from the default set (e.g. NET_RAW, ALL); repeatable.
    #[arg(long, value_name = "CAP", value_parser = parse_cap)]
    cap_drop: Vec<CapArg>,
    /// `seccomp=unconfined` (no seccomp profile) or `no-new-privileges=false`; repeatable.
    #[arg(long, value_name = "OPT", value_parser = parse_security_opt)]
    security_opt: Vec<SecurityOpt>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum LauncherCmd {
    /// Run a command in a new container (namespaces, rootfs, cgroup limits, a shim).
    Run(RunArgs),
    /// Run a command inside a running container (every namespace and its cgroup).
    Exec {
        name: String,
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// List launcher containers.
    Ls {
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: super::views::Format,
        #[arg(long)]
        no_headers: bool,
    },
    /// Stop a container: SIGTERM to PID 1, then SIGKILL after the timeout.
    Stop {
        name: String,
        /// Seconds to wait after SIGTERM.
        #[arg(short = 't', long, default_value_t = 10)]
        time: u64,
    },
    /// Remove a container's cgroups and state.
    Rm {
        name: String,
        /// Stop it first if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// Print a container's output.
    Logs {
        name: String,
        /// Keep printing until the container exits.
        #[arg(short, long)]
        follow: bool,
    },
    #[command(name = "__shim", hide = true)]
    Shim { name: String },
}

/// A memory limit: a byte size of at least 4 KiB.
fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let b = crate::probes::parse_bytes(s)?;
    if b >= 4096 {
        Ok(b)
    } else {
        Err(anyhow::anyhow!("`{s}` is too small (at least 4K)"))
    }
}

fn parse_cpus(s: &str) -> anyhow::Result<f64> {
    let v: f64 = s
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a number of CPUs (e.g. 0.5)"))?;
    if v > 0.0 && v <= 1024.0 {
        Ok(v)
    } else {
        Err(anyhow::anyhow!(
            "--cpus must be between 0 and 1024, got {s}"
        ))
    }
}

/// Prints to stdout (a closed pipe ends the process by SIGPIPE).
fn out(s: &str) -> Result<(), LauncherError> {
    crate::stdout::print(s).map_err(|e| LauncherError::Io("writing to stdout".into(), e))
}

fn code(r: Result<u8, LauncherError>) -> ExitCode {
    match r {
        Ok(c) => ExitCode::from(c),
        Err(e) => {
            super::print_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

pub(crate) fn run(cmd: LauncherCmd) -> ExitCode {
    match cmd {
        LauncherCmd::Run(a) => code(launcher::run(RunOptions {
            name: a.name,
            rootfs: a.rootfs,
            hostname: a.hostname,
            limits: Limits {
                memory_bytes: a.memory,
                pids_max: a.pids_max,
                cpus: a.cpus,
            },
            net_host: a.net == "host",
            init: a.init,
            detach: a.detach,
            env: a.env,
            ignore_missing_limits: a.ignore_missing_limits,
            privileged: a.privileged,
            cap_add: a.cap_add,
            cap_drop: a.cap_drop,
            security_opt: a.security_opt,
            cmd: a.cmd,
        })),
        LauncherCmd::Exec { name, env, cmd } => code(launcher::exec::exec(&name, &env, &cmd)),
        LauncherCmd::Ls { output, no_headers } => code(launcher::ls().and_then(|list| {
            if output == super::views::Format::Json {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&list).expect("serialisable")
                ))?;
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            crate::views::model::short_id(&c.id),
                            c.state.clone(),
                            c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            format!("{} ago", duration(now.saturating_sub(c.created) as f64)),
                            c.command.join(" "),
                        ]
                    })
                    .collect();
                out(&table(
                    &["NAME", "ID", "STATE", "PID", "CREATED", "COMMAND"],
                    &rows,
                    no_headers,
                ))?;
            }
            Ok(0)
        })),
        LauncherCmd::Stop { name, time } => code(
            launcher::stop(&name, Duration::from_secs(time)).and_then(|st| {
                out(&format!("{name}: {}\n", launcher::state::effective(&st)))?;
                Ok(0)
            }),
        ),
        LauncherCmd::Rm { name, force } => code(launcher::rm(&name, force).and_then(|_| {
            out(&format!("{name}\n"))?;
            Ok(0)
        })),
        LauncherCmd::Logs { name, follow } => code(launcher::logs(&name, follow)),
        LauncherCmd::Shim { name } => launcher::shim::main(&name),
    }
}
