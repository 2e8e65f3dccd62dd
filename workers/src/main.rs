//! `crewkit-worker`: runs the job workers. With no arguments it works every queue;
//! `--queues ingest,analysis` serves only those, so ops can scale each queue on its own.

use clap::Parser;
use crewkit_jobs::queue::JobKind;
use crewkit_jobs::{Config, telemetry};

#[derive(Parser)]
#[command(name = "crewkit-worker", version, about = "crewkit job workers")]
struct Cli {
    /// Comma-separated queues to work (default: all): ingest, analysis, compaction, search.
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    telemetry::init(config.log_format);
    let kinds = cli
        .queues
        .iter()
        .map(|q| {
            JobKind::from_queue(q)
                .ok_or_else(|| anyhow::anyhow!("unknown queue `{q}`; the queues are {}", JobKind::queue_names()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    crewkit_workers::run(config, &kinds, crewkit_jobs::telemetry::shutdown_signal()).await
}
