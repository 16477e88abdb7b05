//! `accept`: the listener, per-connection setup, config hot reload and graceful shutdown.

use super::state::{State, POLL_INTERVAL};
use crate::admin::events::Event;
use crate::config::{self, Config};
use crate::keys::store::now_ms;
use crate::keys::KeyStore;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;

pub struct ServeOptions {
    pub config: Config,
    /// Watched for changes when set.
    pub config_path: Option<PathBuf>,
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("refusing to listen on non-loopback address {0} without --allow-remote")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {error}{hint}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error(transparent)]
    State(#[from] super::state::StateError),
    #[error(transparent)]
    Store(#[from] crate::keys::StoreError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::DbError),
    #[error("cannot watch the config file: {0}")]
    Watch(#[from] notify::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests for up to
/// `timeouts.shutdown_grace`.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let config = opts.config;
    if !config.listen.ip().is_loopback() {
        if !config.allow_remote {
            return Err(ServeError::NotLoopback(config.listen));
        }
        tracing::warn!(
            "LISTENING BEYOND LOOPBACK on {}: anyone who can reach this address and holds an Airlock key \
             can spend your provider keys",
            config.listen
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| ServeError::Bind {
            addr: config.listen,
            hint: if error.kind() == std::io::ErrorKind::AddrInUse {
                " (is another `airlock serve` running? `airlock doctor` checks)"
            } else {
                ""
            },
            error,
        })?;
    let local = listener.local_addr()?;
    let store = KeyStore::open(&opts.data_dir)?;
    let grace = config.timeouts.shutdown_grace;
    let (ledger, ledger_thread) = if config.ledger.enabled {
        let (w, t) = crate::ledger::LedgerWriter::spawn(&opts.data_dir, config.ledger.retention)?;
        (w, Some(t))
    } else {
        tracing::warn!("the ledger is off ([ledger] enabled = false): no request is recorded");
        (crate::ledger::LedgerWriter::disabled(), None)
    };
    let state = State::new(config, store, local, ledger, &opts.data_dir)?;
    // Create the admin token now, so `airlock admin-token` and the UI agree from the start.
    if let Err(e) = state.admin_token().await {
        tracing::warn!("admin API token unavailable until the keyring is: {e}");
    }

    announce(&state, local)?;
    let st = state.clone();
    super::trim::spawn(move || {
        st.metrics
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    });

    let _watch = match &opts.config_path {
        Some(path) => {
            let st = state.clone();
            Some(config::watch::watch(path, move |loaded| {
                // A config error can quote the file (a rule's regex, a value in the wrong place),
                // which may hold a secret: masked by the running engine before it is logged or
                // published.
                let shown = |e: String| st.runtime().engine.mask_findings(&e).into_owned();
                let result = loaded
                    .map_err(|e| shown(e.to_string()))
                    .and_then(|new| st.apply_config(new).map_err(|e| shown(e.to_string())));
                match &result {
                    Ok(()) => tracing::info!("config reloaded"),
                    Err(e) => {
                        tracing::error!("config reload failed, keeping the running config: {e}")
                    }
                }
                st.publish(Event::ConfigReloaded {
                    ts: now_ms(),
                    ok: result.is_ok(),
                    message: result.err().unwrap_or_else(|| "config reloaded".into()),
                });
            })?)
        }
        None => None,
    };

    let poller = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = st.poll_changes().await {
                    tracing::warn!("cannot poll the key database: {e}");
                }
            }
        })
    };

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("set_nodelay failed: {e}");
                }
                let st = state.clone();
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(super::stages::handle(st, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended with error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        "shutting down: no new connections; letting in-flight requests finish (up to {grace:?})"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    poller.abort();
    let ledger = state.ledger.clone();
    drop(state);
    if !tokio::task::spawn_blocking(move || ledger.flush(std::time::Duration::from_secs(5)))
        .await
        .unwrap_or(false)
    {
        tracing::warn!("the ledger did not confirm its last rows before exit");
    }
    drop(ledger_thread);
    Ok(())
}

/// Prints where to point each SDK. The first line is stable for scripts.
fn announce(state: &State, local: SocketAddr) -> std::io::Result<()> {
    let rt = state.runtime();
    let mut out = std::io::stdout().lock();
    writeln!(out, "airlock listening on http://{local}")?;
    for p in rt.config.providers.values() {
        writeln!(
            out,
            "  {:<12} http://{local}/{}{}",
            p.name, p.name, p.sdk_suffix
        )?;
    }
    out.flush()
}
