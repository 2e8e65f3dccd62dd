//! Builds the application from its configuration: the state, the routes, the OpenAPI service.
//! `main` and the tests both use `Application::build`, which binds the listener first (port 0 in
//! tests) so the real port is known before serving starts.

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::{RequestId, ReuseId, Tracing};
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;

use crate::error::catch_all;
use crate::routes::{AllApis, apis};
use crate::state::AppState;
use crewkit_jobs::Config;
use crewkit_jobs::queue::Queues;
use crewkit_jobs::search_index::SearchBackend;
use crewkit_jobs::store;

pub const TITLE: &str = "crewkit sessions API";

/// The OpenAPI service, without any live connection (the spec can be printed offline).
pub fn openapi_service() -> OpenApiService<AllApis, ()> {
    OpenApiService::new(apis(), TITLE, env!("CARGO_PKG_VERSION"))
        .description("Coding sessions of AI agents (Run > Conversation > Tasks), event ingestion, jobs.")
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi_service().spec()
}

pub fn app(state: AppState) -> impl Endpoint {
    let service = openapi_service();
    let docs = service.swagger_ui();
    let spec = service.spec_endpoint();
    crate::bench_noop::mount(Route::new())
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/metrics", poem::get(crate::telemetry_http::metrics_endpoint))
        .nest("/", service)
        .around(refuse_nul)
        .catch_all_error(catch_all)
        .around(crate::ratelimit::headers)
        .around(crate::telemetry_http::measure)
        .with(Tracing)
        .with(RequestId::default().reuse_id(ReuseId::Use))
        .data(state)
}

/// PostgreSQL text cannot hold U+0000, so a NUL in the path or query string (`%00`) would fail
/// deep in a query. Bodies are repaired; parameters are refused up front with a 400.
async fn refuse_nul<E: Endpoint>(next: E, req: poem::Request) -> poem::Result<poem::Response> {
    let uri = req.uri();
    let has_nul = |s: &str| s.to_ascii_lowercase().contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return Err(crate::error::ApiError::invalid(
            "query",
            "invalid_parameter",
            "parameters must not contain NUL characters",
        )
        .into());
    }
    next.call(req).await.map(poem::IntoResponse::into_response)
}

pub struct Application {
    acceptor: TcpAcceptor,
    state: AppState,
    port: u16,
}

impl Application {
    /// Connects (lazily), runs migrations when asked, and binds the listener.
    pub async fn build(config: Config, run_migrations: bool) -> anyhow::Result<Self> {
        let db = store::lazy_pool(&config.database_url, config.db_max_connections)?;
        if run_migrations {
            store::migrate(&db).await?;
        }
        let queues = Queues::new(
            &config.redis_url,
            &config.queue_prefix,
            config.redis_response_timeout,
            config.worker_heartbeat,
        )?;
        let search = SearchBackend::from_config(&config)?;
        // The index's settings are applied and awaited before serving. If Meilisearch is down,
        // the API still serves everything else: search answers 503, /readyz says why, and the
        // set-up is retried in the background until it succeeds.
        if let Err(e) = search.set_up().await {
            tracing::error!(error = %e, "search index set-up failed; retrying in the background");
            let retry = search.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    match retry.set_up().await {
                        Ok(()) => break tracing::info!("search index set up"),
                        Err(e) => tracing::warn!(error = %e, "search index set-up failed again"),
                    }
                }
            });
        }
        let acceptor = TcpListener::bind(config.bind).into_acceptor().await?;
        let port = acceptor.local_addr()[0].as_socket_addr().map_or(0, |a| a.port());
        Ok(Self { acceptor, state: AppState::new(config, db, queues, search), port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let listener = tokio::spawn(crate::revocation::listen(self.state.clone()));
        let sampler = tokio::spawn(crate::backpressure::sample(self.state.clone()));
        let flusher = tokio::spawn(crate::ratelimit::flush_loop(self.state.clone()));
        let result = poem::Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app(self.state), shutdown, Some(std::time::Duration::from_secs(10)))
            .await;
        listener.abort();
        sampler.abort();
        flusher.abort();
        result
    }
}
