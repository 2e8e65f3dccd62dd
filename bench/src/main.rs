//! `crewkit-bench`: the benchmarks of `script/bench`. Every figure is a ratio to a raw baseline
//! measured in the same run, interleaved (baseline, ours, baseline, ours, …), because absolute
//! numbers on a shared 2-core machine swing several times within minutes. See the README's
//! "Performance" section.
//!
//! `crewkit-bench run` drives the scenarios against release binaries it starts itself (the API,
//! workers) on the PostgreSQL and Redis that `script/bench` started privately; `crewkit-bench
//! consume` is the no-op apalis-redis worker process of scenario S3.

use clap::{Parser, Subcommand};

mod consume;
mod ctx;
mod http;
mod payload;
mod report;
mod s1_accept;
mod s2_latency;
mod s3_queue;
mod s4_end_to_end;
mod s5_search;
mod s6_reads;
mod stack;
mod stats;

#[derive(Parser)]
#[command(name = "crewkit-bench", about = "crewkit benchmarks (see script/bench)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios and write bench/results/latest.{json,md}.
    Run(ctx::RunArgs),
    /// A no-op apalis-redis worker on the ingestion queue of a prefix (S3's consumer process).
    Consume(consume::ConsumeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => ctx::run(args).await,
        Command::Consume(args) => consume::run(args).await,
    }
}
