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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Hook(args) => crewkit_cli::hook::main(args),
    }
}
