//! The local database: one SQLite file in the data dir (WAL, versioned migrations).
//!
//! It holds issued Airlock keys (hashes only) and, later, the per-request audit ledger. It never
//! holds a raw secret, a provider key or prompt text.

pub mod db;

pub use db::{open, DbError, DB_FILE};
