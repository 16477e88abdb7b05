//! What the black-box tests share: the real `airlock` binary started with a temporary config,
//! data dir and keyring service ([`airlock`]), a keyring daemon of a test's own ([`keyring`]), fake provider keys ([`keys`]), a small HTTP
//! client ([`client`]), per-provider request and error-shape knowledge ([`provider`]), expected
//! costs from the shipped price table ([`prices`]), the ledger and admin API ([`admin`]), and
//! fake secrets and personal data for the prompt-protection tests ([`fakes`]).

pub mod admin;
pub mod airlock;
pub mod client;
pub mod fakes;
pub mod keyring;
pub mod keys;
pub mod prices;
pub mod provider;

pub use admin::{poll, Admin, EventStream};
pub use airlock::{airlock_bin, Airlock, AirlockSetup, Config, ProviderConfig, TestEnv};
pub use client::{HttpResponse, RequestBuilder, StreamingResponse};
pub use provider::Provider;
