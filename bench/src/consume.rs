//! S3's consumer: one OS process running a no-op worker on the ingestion queue, built exactly as
//! `crewkit-workers` builds its workers (the same `Queues` configuration, the same prefetch
//! (`prefetch_for`), the same re-arming poll strategy), so what is measured is our queue setup over
//! apalis-redis with the handler's own cost taken out.

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::{BackendExt, BoxDynError, Monitor, WorkerBuilder};
use apalis_redis::RedisStorage;
use clap::Args;

use crewkit_jobs::Config;
use crewkit_jobs::persist_events::PersistEvents;
use crewkit_jobs::queue::{JobKind, Queues};
use crewkit_workers::poll::RearmingInterval;
use crewkit_workers::worker_name;

#[derive(Args)]
pub struct ConsumeArgs {
    /// The Redis key prefix whose ingestion queue to drain.
    #[arg(long)]
    pub prefix: String,
}

/// Decodes the real job type, then does nothing with it.
async fn noop(job: PersistEvents) -> Result<(), BoxDynError> {
    std::hint::black_box(job.events.len());
    Ok(())
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let queues = Queues::new(&config.redis_url, &args.prefix, config.redis_response_timeout, config.worker_heartbeat)?;
    let kind = JobKind::PersistEvents;
    let concurrency = config.concurrency_for(kind.queue());
    let poll = config.worker_poll_interval;
    let monitor = Monitor::new().register(move |_restarts| {
        let config = queues.config(kind).batch_size(crewkit_workers::prefetch_for(kind, concurrency));
        let storage = RedisStorage::<PersistEvents>::new(queues.connection())
            .with_config(config)
            .poll_with_strategy(RearmingInterval::new(poll));
        WorkerBuilder::new(worker_name(kind)).backend(storage).concurrency(concurrency).build(noop)
    });
    tokio::select! {
        res = monitor.run() => res?,
        () = crewkit_jobs::telemetry::shutdown_signal() => {}
    }
    Ok(())
}
