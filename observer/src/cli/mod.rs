//! Command line: argument parsing and dispatch. Errors end here as one line on stderr and
//! exit status 1 (never a panic).

mod events;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "observer", version, about = "What is really running in your containers: an eBPF process observer")]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream process lifecycle events from the kernel as they happen.
    Events(events::EventsArgs),
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
        Command::Events(args) => events::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("observer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
