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
    // Estimates of cut streams count tokens in a short-lived child, keeping ~45 MB of tokenizer
    // tables out of this long-running process.
    match std::env::current_exe() {
        Ok(exe) => crate::meter::counter::use_helper_process(exe),
        Err(e) => tracing::warn!("token counts stay in this process: {e}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("airlock")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // Register the handlers before the listen line is printed: a SIGTERM that arrives right
        // after start must still shut down gracefully, not kill the process.
        let signals = Signals::install()?;
        serve(
            ServeOptions {
                config,
                config_path,
                data_dir,
            },
            signals.recv(),
        )
        .await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals)
    }

    async fn recv(self) {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("Ctrl-C handler: {e}");
        }
    }
}
