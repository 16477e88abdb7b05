//! Keys: real provider keys in the OS keyring ([`vault`]) and local Airlock keys ([`store`]).
//!
//! A provider key lives only in the keyring and, while the server runs, in memory as a
//! [`secrecy::SecretString`]. An Airlock key (`alk_…`) is shown once when issued; only its
//! SHA-256 is stored. The server checks keys against an in-memory [`snapshot`] that follows the
//! database, so issuing or revoking from the CLI takes effect without a restart.

pub mod snapshot;
pub mod store;
pub mod token;
pub mod vault;

pub use snapshot::{KeySnapshot, Verdict};
pub use store::{IssueRequest, IssuedKey, KeyStore, StoreError};
pub use vault::{Vault, VaultError};
