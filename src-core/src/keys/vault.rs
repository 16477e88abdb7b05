//! Provider keys in the OS keyring (Secret Service, Keychain, Credential Manager).
//!
//! Every keyring error becomes a [`VaultError`] whose message says what to do. Errors from the
//! keyring crate can carry the stored bytes (`BadEncoding`), so they are never formatted with
//! `Debug` and their payloads are dropped here.

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("no key for {entry} in the OS keyring: run `airlock keys set {entry}`")]
    NotSet { entry: String },
    #[error(
        "the OS keyring is not reachable ({detail}). Airlock keeps provider keys only in the OS keyring \
         and never falls back to a file. On a desktop, log in to a session with GNOME Keyring or KWallet \
         running; headless, start one: dbus-run-session -- sh -c 'gnome-keyring-daemon --unlock \
         --components=secrets < passwordfile; exec airlock serve'"
    )]
    Unreachable { detail: String },
    #[error(
        "the OS keyring is locked or refused access ({detail}). Unlock it (log in again, or unlock the \
         'login' keyring in your keyring manager) and retry"
    )]
    Locked { detail: String },
    #[error("the OS keyring failed: {detail}")]
    Failed { detail: String },
}

impl VaultError {
    /// Whether retrying after the user acts (unlocking, starting a keyring) can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VaultError::Unreachable { .. } | VaultError::Locked { .. }
        )
    }
}

/// One keyring service (default `airlock`); each provider key is an entry under it.
#[derive(Debug, Clone)]
pub struct Vault {
    service: String,
}

impl Vault {
    pub fn new(service: impl Into<String>) -> Vault {
        Vault {
            service: service.into(),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Blocking: talks to the keyring over D-Bus. Call from `spawn_blocking` in async code.
    pub fn get(&self, entry: &str) -> Result<SecretString, VaultError> {
        let e = self.entry(entry)?;
        match e.get_password() {
            Ok(p) => Ok(SecretString::from(p)),
            Err(err) => Err(map_err(err, entry)),
        }
    }

    pub fn set(&self, entry: &str, secret: &str) -> Result<(), VaultError> {
        self.entry(entry)?
            .set_password(secret)
            .map_err(|e| map_err(e, entry))
    }

    /// Returns whether an entry was there to delete.
    pub fn delete(&self, entry: &str) -> Result<bool, VaultError> {
        match self.entry(entry)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(map_err(e, entry)),
        }
    }

    /// Checks that the keyring is reachable and unlocked by reading an entry that need not exist.
    pub fn probe(&self) -> Result<(), VaultError> {
        match self.get("__airlock_probe__") {
            Ok(_) | Err(VaultError::NotSet { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn entry(&self, entry: &str) -> Result<keyring::Entry, VaultError> {
        keyring::Entry::new(&self.service, entry).map_err(|e| map_err(e, entry))
    }
}

fn map_err(err: keyring::Error, entry: &str) -> VaultError {
    use keyring::Error as E;
    match err {
        E::NoEntry => VaultError::NotSet { entry: entry.to_owned() },
        E::NoDefaultStore => VaultError::Unreachable {
            detail: "no Secret Service on the session bus".into(),
        },
        E::NoStorageAccess(inner) => {
            let detail = inner.to_string();
            if looks_unreachable(&detail) {
                VaultError::Unreachable { detail }
            } else {
                VaultError::Locked { detail }
            }
        }
        E::PlatformFailure(inner) => {
            let detail = inner.to_string();
            if looks_unreachable(&detail) {
                VaultError::Unreachable { detail }
            } else {
                VaultError::Failed { detail }
            }
        }
        E::BadEncoding(_) | E::BadDataFormat(..) => VaultError::Failed {
            detail: format!("the stored value for {entry} is not valid text; set it again with `airlock keys set {entry}`"),
        },
        E::Ambiguous(found) => VaultError::Failed {
            detail: format!("{} keyring items match {entry}; remove the extras in your keyring manager", found.len()),
        },
        other => VaultError::Failed { detail: describe_other(&other) },
    }
}

/// Only variants without secret payloads reach here; still, format them by hand.
fn describe_other(err: &keyring::Error) -> String {
    use keyring::Error as E;
    match err {
        E::TooLong(attr, limit) => format!("{attr} is longer than the keyring allows ({limit})"),
        E::Invalid(attr, why) => format!("{attr} is invalid: {why}"),
        E::BadStoreFormat(why) => format!("keyring store format: {why}"),
        E::NotSupportedByStore(why) => format!("not supported by this keyring: {why}"),
        _ => "unexpected keyring error".into(),
    }
}

fn looks_unreachable(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "no such file",
        "connection refused",
        "serviceunknown",
        "service unknown",
        "/bus",
        "dbus_session_bus_address",
    ]
    .iter()
    .any(|m| d.contains(m))
}
