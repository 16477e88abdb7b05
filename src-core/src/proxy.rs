//! The proxy: a loopback HTTP server whose every request passes the stages in [`stages`].
//!
//! Response bodies stream through frame by frame ([`body::UpstreamBody`]); request bodies are
//! read whole, up to `max_body`, because they must be checked before anything goes upstream.

pub mod body;
pub mod decode;
pub mod error;
pub mod forward;
pub mod key_mask;
pub mod record;
pub mod server;
pub mod stages;
pub mod state;
pub mod trim;

pub use error::{ErrorSource, ProxyError};
pub use server::{serve, ServeOptions};
