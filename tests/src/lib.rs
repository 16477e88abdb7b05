//! End-to-end support for Airlock.
//!
//! - [`mock`]: a mock upstream speaking the OpenAI, Anthropic and Gemini wire formats, with
//!   request recording and per-request failure scenarios (also the `mock-upstream` binary);
//! - [`sse`]: SSE framing shared by the mock (encoder) and the tests (incremental parser);
//! - [`support`]: starting the real `airlock` binary with a temporary config, data dir and
//!   keyring service, fake provider keys, and a small HTTP client.
#![forbid(unsafe_code)]

pub mod mock;
pub mod sse;
pub mod support;
