//! Command line: argument parsing and dispatch. Errors end here as one line on stderr and
//! exit status 1 (never a panic); the launcher's commands exit with Docker's codes (125,
//! 126, 127), usage errors with clap's 2, and a closed stdout ends the process by SIGPIPE.

mod agent;
pub(crate) mod config;
mod event_sessions;
mod event_stream;
mod launcher;
mod views;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "observer",
    version,
    about = "What is really running in your containers: an eBPF process observer"
)]
pub(crate) struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: live process table, container attribution, API on a unix socket
    /// and on HTTP.
    Agent(Box<agent::AgentArgs>),
    /// Show a container's processes as a tree: shim above PID 1, ns PIDs, zombies, orphans;
    /// for a pod, its sandbox and containers (one tree when they share a pid namespace).
    Tree {
        /// Container name, full or unique-prefix id, pid-namespace inode, host PID of any
        /// member, or a pod: name, namespace/name, id or UID.
        container: String,
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List processes (all, or one container's) with host and namespace PIDs.
    Ps {
        /// Only this container (same forms as `tree`).
        #[arg(short, long)]
        container: Option<String>,
        /// Also the real uid, and the effective uid and capabilities from the exec of each
        /// process's image (`-` where the agent saw no exec of it).
        #[arg(short, long)]
        long: bool,
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List containers with their runtime, pid namespace, processes, zombies, CPU, memory.
    Containers {
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List pods: sandbox, containers, shared namespaces, processes, zombies, CPU, memory.
    Pods {
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// Processes of a container that already ended: command, parents, duration, exit code
    /// or signal and who sent it, OOM kills, deaths with the pid namespace (needs the agent;
    /// kept after the container is removed, and across agent restarts and reboots in the
    /// agent's history store).
    History {
        /// Container name, id or unique id prefix (also of a removed container).
        container: String,
        /// Only processes that ended within this time (e.g. 10m).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only processes that ended with a signal or a non-zero code.
        #[arg(long)]
        failed: bool,
        /// Only processes with this command name.
        #[arg(long, value_name = "COMM")]
        comm: Option<String>,
        /// Only processes that ended in this boot of the node: 0 the current one, -1 the
        /// one before, ... (entries of earlier boots come from the history store).
        #[arg(
            long,
            value_name = "N",
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(i32).range(..=0)
        )]
        boot: Option<i32>,
        /// Only exec sessions: processes that came into the container from outside
        /// (`docker exec`, `kubectl exec`, `podman exec`, `ctr task exec`, `nsenter`,
        /// `observer exec`), with how and by which host processes.
        #[arg(long)]
        exec: bool,
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// Say how a container's PID 1 (or a process) ended, or which signals it is ignoring,
    /// with the evidence: sender, the kernel's verdict, OOM facts, exit code; for a pod,
    /// which of its containers ignored a signal and what ended it.
    Why {
        /// A container (as for `history`), a pod (`namespace/name`, name, UID or sandbox
        /// id, as for `tree`; also once all its containers ended) or a host pid.
        target: String,
        /// Answer from this boot of the node: 0 the current one, -1 the one before, ...
        /// (default: the current one when the container ran in it, else the latest it has
        /// records of; a host pid is of the current one). Exits 1 when it has no record in
        /// that boot.
        #[arg(
            long,
            value_name = "N",
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(i32).range(..=0)
        )]
        boot: Option<i32>,
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List zombies node-wide with their age, container and the parent not reaping them.
    Zombies {
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// What the agent does and what it costs this node: uptime, events by type, losses,
    /// in-kernel time per program run (with `agent --bpf-stats on`), its CPU and memory.
    Status {
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// Stream process lifecycle events from the kernel as they happen.
    Events(event_stream::EventsArgs),
    #[command(flatten)]
    Launcher(launcher::LauncherCmd),
    /// Print a shell completion script (e.g. `observer completions bash >
    /// /etc/bash_completion.d/observer`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (observer.1 and one per subcommand) into a directory.
    Man {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: std::path::PathBuf,
    },
}

pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let m = match parse_args(&argv) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let json_logs =
        matches!(&cli.command, Command::Agent(a) if a.log_format == agent::LogFormat::Json);
    init_logging(level, json_logs);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) if crate::stdout::is_broken_pipe(&e) => crate::stdout::die_of_sigpipe(),
        Err(e) => {
            print_error(format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the agent's config file's settings joined as flags (cli/config.rs);
/// Err with the exit code when the process ends here (`--print-config`, a bad file).
fn parse_args(argv: &[std::ffi::OsString]) -> Result<clap::ArgMatches, ExitCode> {
    let mut cmd = Cli::command();
    let mut m = cmd
        .try_get_matches_from_mut(argv)
        .unwrap_or_else(|e| e.exit());
    let Some(("agent", am)) = m.subcommand() else {
        return Ok(m);
    };
    let agent = cmd.find_subcommand("agent").expect("defined");
    let file = match config::read(agent, am) {
        Ok(f) => f,
        Err(e) => {
            print_error(e);
            return Err(ExitCode::FAILURE);
        }
    };
    if !file.flags.is_empty() {
        let mut all = argv.to_vec();
        all.extend(file.flags.iter().cloned());
        m = cmd
            .try_get_matches_from_mut(all)
            .unwrap_or_else(|e| e.exit());
    }
    if let Some(("agent", am)) = m.subcommand() {
        if am.get_flag("print_config") {
            let agent = cmd.find_subcommand("agent").expect("defined");
            return Err(
                match crate::stdout::print(&config::render(agent, am, &file)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        print_error(e);
                        ExitCode::FAILURE
                    }
                },
            );
        }
    }
    Ok(m)
}

/// Runs the command.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Agent(args) => agent::run(*args),
        Command::Tree { container, opts } => views::run(opts, views::View::Tree(container)),
        Command::Ps {
            container,
            long,
            opts,
        } => views::run(opts, views::View::Ps(container, long)),
        Command::Containers { opts } => views::run(opts, views::View::Containers),
        Command::Zombies { opts } => views::run(opts, views::View::Zombies),
        Command::Pods { opts } => views::run(opts, views::View::Pods),
        Command::History {
            container,
            since,
            failed,
            comm,
            boot,
            exec,
            opts,
        } => views::run(
            opts,
            views::View::History(
                container,
                crate::views::endings::HistoryFilter {
                    since_s: since.map(|d| d.as_secs_f64()),
                    failed,
                    comm,
                    boot,
                    exec,
                },
            ),
        ),
        Command::Why { target, boot, opts } => views::run(opts, views::View::Why(target, boot)),
        Command::Status { opts } => views::run(opts, views::View::Status),
        Command::Events(args) => event_stream::run(args),
        Command::Launcher(cmd) => Ok(launcher::run(cmd)),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "observer", &mut out);
            crate::stdout::write(&out)
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from)
        }
        Command::Man { dir } => man(&dir),
    }
}

/// An error for the operator, on one line with every control character escaped: messages
/// quote what others named (cgroup paths, comm, argv, container names).
pub(crate) fn print_error(e: impl std::fmt::Display) {
    eprintln!("observer: {}", crate::views::text::one_line(&e.to_string()));
}

/// env_logger with the text format, or one JSON object per line (`--log-format json`).
fn init_logging(level: &str, json: bool) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if json {
        b.format(|buf, r| {
            use std::io::Write;
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": r.level().as_str().to_ascii_lowercase(),
                "target": r.target(),
                "msg": r.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    } else {
        // env_logger's own layout without the target; messages quote names others chose
        // (cgroup paths, runtime state files), so they are escaped like every text view.
        b.format(|buf, r| {
            use std::io::Write;
            let level = buf.default_level_style(r.level());
            writeln!(
                buf,
                "[{} {level}{:<5}{level:#}] {}",
                buf.timestamp(),
                r.level(),
                crate::views::text::one_line(&r.args().to_string())
            )
        });
    }
    b.init();
}

/// observer.1 and observer-<subcommand>.1 from the clap definitions.
fn man(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("observer".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("observer-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
