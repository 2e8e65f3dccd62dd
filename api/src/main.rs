//! `crewkit-api`: serves the API; `crewkit-api admin …` bootstraps orgs and keys;
//! `crewkit-api openapi` prints the OpenAPI document.

use clap::{Parser, Subcommand};
use crewkit_api::{admin, startup};
use crewkit_jobs::{Config, telemetry};

#[derive(Parser)]
#[command(name = "crewkit-api", version, about = "crewkit sessions API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Organisation and key administration.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Print the OpenAPI document.
    Openapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    match cli.command {
        None => {
            let app = startup::Application::build(config, true).await?;
            tracing::info!(port = app.port(), "crewkit-api listening");
            app.run_until_stopped(telemetry::shutdown_signal()).await?;
        }
        Some(Command::Admin(cmd)) => println!("{}", admin::run(&config, cmd).await?),
        Some(Command::Openapi) => println!("{}", startup::openapi_json()),
    }
    Ok(())
}
