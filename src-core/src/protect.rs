//! Prompt protection: the detection engine ([`crate::inspect`]) applied to requests and
//! responses. Pure like the engine: no I/O, no async.
//!
//! - [`json_text`]: every string of a JSON body with its path and byte span, and splicing new
//!   strings into those spans without touching anything else.
//! - [`paths`]: where each provider's request keeps user text, system text, tool results and
//!   documents, which fields are media (never scanned as text) and which are base64 text
//!   documents (decoded and scanned).
//! - [`multipart`]: where each part of an upload lies, and which content is binary.
//! - [`policy`]: the action per finding (block, redact, pseudonymize, warn, allow) in layers.
//! - [`pseudonym`]: the per-conversation placeholder vault, in memory only.
//! - [`restore`]: putting pseudonyms back and guarding output, in whole bodies and streams.
//! - [`injection`]: prompt-injection heuristics with reasons.
//! - [`request`]: one request's inspection, from body to rewritten body and findings.
//! - [`mask`]: masking what the engine finds in text that is recorded (model, path, messages).

pub mod injection;
pub mod json_text;
pub mod mask;
pub mod multipart;
pub mod paths;
pub mod policy;
pub mod pseudonym;
pub mod request;
pub mod restore;
