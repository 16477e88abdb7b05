//! `mock-upstream --listen 127.0.0.1:0 [--gap-ms N]`: run the mock upstream until SIGINT or
//! SIGTERM. The first stdout line is `mock-upstream listening on http://ADDR`; nothing else is
//! written to stdout.
#![forbid(unsafe_code)]

use airlock_e2e::mock::{self, Options, State};
use anyhow::{bail, Context};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs an address")?,
            "--gap-ms" => {
                let ms: u64 = args.next().context("--gap-ms needs a number")?.parse()?;
                options.default_gap = Duration::from_millis(ms);
            }
            "-h" | "--help" => {
                println!("usage: mock-upstream [--listen ADDR] [--gap-ms N]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "mock-upstream listening on http://{addr}")?;
        out.flush()?;
        drop(out);
        let state = Arc::new(State {
            store: Arc::default(),
            options,
        });
        mock::serve(listener, state, shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            eprintln!("mock-upstream: no SIGTERM handler: {e}");
            if let Err(e) = tokio::signal::ctrl_c().await {
                eprintln!("mock-upstream: no SIGINT handler: {e}");
            }
        }
    }
}
