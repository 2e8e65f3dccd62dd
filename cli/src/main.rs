//! `crewkit`: the command line. `crewkit hook` forwards one agent hook event to the API.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crewkit", version, about = "crewkit command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forward one hook payload (read on stdin) to the API. Always exits 0, within a second.
    Hook(crewkit_cli::hook::HookArgs),
    /// Backfill sessions from Claude Code transcripts (a .jsonl file, a JSON array, or a directory
    /// such as ~/.claude/projects). Safe to run twice.
    Import(crewkit_cli::import::ImportArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Hook(args) => crewkit_cli::hook::main(args),
        Command::Import(args) => std::process::exit(crewkit_cli::import::main(args)),
    }
}
