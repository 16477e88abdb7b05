//! `airlock serve`

use super::Ctx;
use crate::proxy::{serve, ServeOptions};
use anyhow::Context;
use std::net::SocketAddr;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default from config, else 127.0.0.1:8787).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback listen address. Anyone who can reach it and holds an Airlock key can
    /// spend your provider keys.
    #[arg(long)]
    pub allow_remote: bool,
}

pub fn run(ctx: &Ctx, args: ServeArgs) -> anyhow::Result<()> {
    let (path, explicit) = ctx.config_path();
    let mut config = ctx.load_config()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.allow_remote |= args.allow_remote;
    let config_path = path.filter(|p| explicit || p.exists());
    let data_dir = ctx.data_dir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("airlock")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(
        ServeOptions {
            config,
            config_path,
            data_dir,
        },
        shutdown_signal(),
    ))?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if let Err(e) = r { tracing::warn!("SIGINT handler: {e}") },
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                if let Err(e) = tokio::signal::ctrl_c().await {
                    tracing::warn!("SIGINT handler: {e}");
                }
            }
        }
    }
    #[cfg(not(unix))]
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!("Ctrl-C handler: {e}");
    }
}
