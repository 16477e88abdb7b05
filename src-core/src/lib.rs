//! Airlock: a local sidecar between a developer's code and the AI APIs it calls.
//!
//! Every request passes the same named stages, whichever way it came in. They live in
//! [`proxy::stages`]; each has a single job and a module that owns the logic:
//!
//! | stage            | job                                                            | module          |
//! |------------------|----------------------------------------------------------------|-----------------|
//! | `accept`         | loopback listener, TCP_NODELAY, graceful shutdown              | [`proxy`]       |
//! | `guard`          | Host (DNS rebinding) and browser Origin checks                 | [`proxy`]       |
//! | `route`          | `/<provider>/...` prefix to a configured provider              | [`providers`]   |
//! | `authenticate`   | local `alk_` key to a scoped identity; client keys refused     | [`keys`]        |
//! | `admit`          | body within the limit, decoded, JSON-valid, model in scope     | [`proxy`]       |
//! | `inspect_filter` | find secrets, PII and injection; redact, pseudonymize, block   | [`protect`], [`inspect`] |
//! | `admit_limits`   | pause switches, budgets, rates, output caps, anomalies         | [`limits`]      |
//! | `forward`        | real key from the OS keyring, rustls client, timeouts          | [`proxy`]       |
//! | `respond`        | stream back; restore pseudonyms, guard output, meter usage     | [`protect`], [`meter`] |
//! | `record`         | one ledger row and one live event per request, also on errors  | [`ledger`], [`admin`] |
//! | `fail`           | the one place an error becomes a provider-format response      | [`proxy`]       |
//!
//! The detection engine in [`inspect`], like [`protect`], [`meter`] and [`sse`], is pure (no
//! I/O, no async), so the proxy, `airlock scan`, the benchmarks and the fuzzers share it. The
//! admin API in [`admin`] serves the tray and the dashboard from the same listener.
// Two measured exceptions: `proxy::trim` calls `malloc_trim` (BENCHMARKS.md, memory), and the
// keyword prefilter has an AVX2 pass (`inspect/engine/prefilter/avx2.rs`, BENCHMARKS.md, engine).
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod inspect;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod meter;
pub mod protect;
pub mod providers;
pub mod proxy;
pub mod sse;
