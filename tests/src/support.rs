//! What the black-box tests share: the real `airlock` binary started with a temporary config,
//! data dir and keyring service ([`airlock`]), fake provider keys ([`keys`]), a small HTTP
//! client ([`client`]) and per-provider request and error-shape knowledge ([`provider`]).

pub mod airlock;
pub mod client;
pub mod keys;
pub mod provider;

pub use airlock::{airlock_bin, Airlock, AirlockSetup, Config, ProviderConfig, TestEnv};
pub use client::{HttpResponse, RequestBuilder, StreamingResponse};
pub use provider::Provider;
