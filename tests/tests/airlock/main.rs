//! Black-box tests of the real `airlock` binary against the mock upstream.
//!
//! Every test starts its own mock, config, data dir, keyring service and `airlock serve`, so
//! tests run in parallel and never share state. They need a working Secret Service: run them
//! through `scripts/with-keyring.sh` (as `make test` does).

mod admin;
mod errors;
mod forwarding;
mod keyring;
mod keys_and_scopes;
mod ledger;
mod lifecycle;
mod limits;
mod metering;
mod protect;
mod security;
mod streaming;

use airlock_e2e::support::TestEnv;

/// The usual fixture; panics with Airlock's stderr if it cannot start.
fn env() -> TestEnv {
    match TestEnv::start() {
        Ok(env) => env,
        Err(e) => panic!("starting airlock: {e:#}"),
    }
}

fn env_with(config: impl FnOnce(&mut airlock_e2e::support::Config)) -> TestEnv {
    match TestEnv::start_with(config, |_| Ok(())) {
        Ok(env) => env,
        Err(e) => panic!("starting airlock: {e:#}"),
    }
}

/// A free port, so the CLI finds the server by the configured `listen` (port 0 cannot be found).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A prompt of `n` distinct words, so streamed answers have several deltas.
fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}
