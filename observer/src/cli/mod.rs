//! Command line: argument parsing and dispatch. Errors end here as one line on stderr and
//! exit status 1 (never a panic).

mod agent;
mod events;
mod launcher;
mod views;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "observer",
    version,
    about = "What is really running in your containers: an eBPF process observer"
)]
pub struct Cli {
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
    Agent(agent::AgentArgs),
    /// Show a container's processes as a tree: shim above PID 1, ns PIDs, zombies, orphans.
    Tree {
        /// Container name, full or unique-prefix id, pod name, pid-namespace inode, or the
        /// host PID of any member.
        container: String,
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List processes (all, or one container's) with host and namespace PIDs.
    Ps {
        /// Only this container (same forms as `tree`).
        #[arg(short, long)]
        container: Option<String>,
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List containers with their runtime, pid namespace, processes, zombies, CPU, memory.
    Containers {
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// List zombies node-wide with their age, container and the parent not reaping them.
    Zombies {
        #[command(flatten)]
        opts: views::ViewOpts,
    },
    /// Stream process lifecycle events from the kernel as they happen.
    Events(events::EventsArgs),
    #[command(flatten)]
    Launcher(launcher::LauncherCmd),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
    let result = match cli.command {
        Command::Agent(args) => agent::run(args),
        Command::Tree { container, opts } => views::run(opts, views::View::Tree(container)),
        Command::Ps { container, opts } => views::run(opts, views::View::Ps(container)),
        Command::Containers { opts } => views::run(opts, views::View::Containers),
        Command::Zombies { opts } => views::run(opts, views::View::Zombies),
        Command::Events(args) => events::run(args),
        Command::Launcher(cmd) => return launcher::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) if crate::stdout::is_broken_pipe(&e) => crate::stdout::die_of_sigpipe(),
        Err(e) => {
            eprintln!("observer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
