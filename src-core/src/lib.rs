//! Airlock: a local sidecar between a developer's code and the AI APIs it calls.
//!
//! Every request passes the same named stages, whichever way it came in. The stages live in
//! [`proxy::stages`]; each one has a single job and the module that owns it:
//!
//! | stage          | job                                                         | module        |
//! |----------------|-------------------------------------------------------------|---------------|
//! | `accept`       | loopback listener, TCP_NODELAY, Host/Origin guard            | [`proxy`]     |
//! | `route`        | `/<provider>/...` prefix to a configured provider            | [`providers`] |
//! | `authenticate` | local `alk_` key to a scoped identity; client keys refused   | [`keys`]      |
//! | `admit`        | content type, body limit, JSON validity, scope by model      | [`proxy`]     |
//! | `inspect`      | detection engine over the prompt text                        | [`inspect`]   |
//! | `forward`      | real key from the OS keyring, rustls client, timeouts        | [`proxy`]     |
//! | `respond`      | stream the upstream body back as it arrives                  | [`proxy`]     |
//! | `record`       | one record per request, also on errors                       | [`ledger`]    |
//! | `fail`         | the one place an error becomes a provider-format response    | [`proxy`]     |
//!
//! The detection engine in [`inspect`] is pure (no I/O, no async) so the proxy, `airlock scan`,
//! the benchmarks and the fuzzers all share it.
#![forbid(unsafe_code)]

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
