//! Starting and stopping the API server, shared by the binary and the tests.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbErr};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use worker::Config;
use worker::pool::WorkerPool;
use workflows::clock::{SharedClock, SystemClock};

use crate::state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] DbErr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("worker pool: {0}")]
    Workers(#[from] worker::pool::PoolError),
    #[error("admin token file {path}: {source}")]
    AdminToken {
        path: String,
        source: std::io::Error,
    },
}

/// A server that is accepting requests.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    /// The schema the server executes (in-process callers such as the demo use it).
    pub schema: crate::graphql::ValoraSchema,
    /// Where the bootstrap token was written when Valora generated it itself.
    pub admin_token_file: Option<String>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    /// The in-process workers (embedded mode).
    workers: Option<WorkerPool>,
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, then
    /// drains the in-process workers (in-flight jobs finish).
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(());
        let served = match self.task.await {
            Ok(result) => result,
            Err(join) => Err(std::io::Error::other(join)),
        };
        if let Some(workers) = self.workers
            && let Err(e) = workers.shutdown().await
        {
            tracing::warn!(error = %e, "worker pool did not shut down cleanly");
        }
        served
    }
}

/// Connects to the database, applies migrations, and serves on `config.bind`
/// (port 0 picks a free port; see [`RunningServer::addr`]).
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// [`start`] with a chosen process clock (tests pin it).
pub async fn start_with_clock(
    mut config: Config,
    clock: SharedClock,
) -> Result<RunningServer, StartError> {
    let db = worker::database::connect(&config).await?;
    worker::database::migrate(&db).await?;
    let admin_token_file = if config.admin_token.is_none() && config.is_sqlite() {
        let path = config.data_dir.join("admin-token");
        config.admin_token = Some(load_or_create_admin_token(&path)?);
        Some(path.display().to_string())
    } else {
        None
    };

    let state = AppState {
        db: db.clone(),
        config: Arc::new(config.clone()),
        metrics: worker::telemetry::init_metrics(),
        clock: clock.clone(),
    };
    let schema = crate::graphql::build(state.clone());
    let app = crate::http::router(state, schema.clone());

    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let workers = if config.embedded_workers {
        Some(worker::pool::start(&config, db.clone(), clock.clone()).await?)
    } else {
        None
    };
    tracing::info!(%addr, database = %worker::config::redact(&config.database_url), workers = workers.is_some(), "valora api listening");
    Ok(RunningServer {
        addr,
        db,
        schema,
        admin_token_file,
        shutdown,
        task,
        workers,
    })
}

/// Zero-setup mode has no operator to pass `VALORA_ADMIN_TOKEN`, so Valora makes
/// one and keeps it in a file only the owner can read (never in the logs).
fn load_or_create_admin_token(path: &Path) -> Result<String, StartError> {
    let err = |source| StartError::AdminToken {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(existing) if !existing.trim().is_empty() => return Ok(existing.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let token = crate::secret::random_token();
    write_private(path, &token).map_err(err)?;
    Ok(token)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
