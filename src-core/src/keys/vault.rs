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
        retry_unreachable(RETRY_AFTER, reconnect, || {
            let e = self.entry(entry)?;
            match e.get_password() {
                Ok(p) => Ok(SecretString::from(p)),
                Err(err) => Err(map_err(err, entry)),
            }
        })
    }

    pub fn set(&self, entry: &str, secret: &str) -> Result<(), VaultError> {
        retry_unreachable(RETRY_AFTER, reconnect, || {
            self.entry(entry)?
                .set_password(secret)
                .map_err(|e| map_err(e, entry))
        })
    }

    /// Returns whether an entry was there to delete.
    pub fn delete(&self, entry: &str) -> Result<bool, VaultError> {
        retry_unreachable(RETRY_AFTER, reconnect, || {
            match self.entry(entry)?.delete_credential() {
                Ok(()) => Ok(true),
                Err(keyring::Error::NoEntry) => Ok(false),
                Err(e) => Err(map_err(e, entry)),
            }
        })
    }

    /// Checks that the keyring is reachable and unlocked by reading an entry that need not exist.
    pub fn probe(&self) -> Result<(), VaultError> {
        match self.get("__airlock_probe__") {
            Ok(_) | Err(VaultError::NotSet { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn entry(&self, entry: &str) -> Result<keyring_core::Entry, VaultError> {
        new_entry(&self.service, entry).map_err(|e| map_err(e, entry))
    }
}

use store::{new_entry, reconnect};

/// Where the Secret Service is the store: one connection (with its encrypted session) shared
/// by every entry, made on first use and made again after [`reconnect`]. `keyring::Entry`
/// connects once per process, so after the keyring daemon restarted every call of a running
/// `airlock serve` failed ("the session does not exist") until Airlock restarted too.
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
mod store {
    pub fn new_entry(service: &str, user: &str) -> keyring_core::Result<keyring_core::Entry> {
        if keyring_core::get_default_store().is_none() {
            keyring_core::set_default_store(zbus_secret_service_keyring_store::Store::new()?);
        }
        keyring_core::Entry::new(service, user)
    }

    /// Drops the Secret Service connection, so the next call makes a new one.
    pub fn reconnect() {
        keyring_core::unset_default_store();
    }
}

/// Elsewhere (Keychain, Credential Manager) `keyring` picks and keeps the store.
#[cfg(not(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
)))]
mod store {
    pub fn new_entry(service: &str, user: &str) -> keyring_core::Result<keyring_core::Entry> {
        keyring::Entry::new(service, user).map(|e| e.inner)
    }

    pub fn reconnect() {}
}

/// Pauses before each retry of a keyring call that found no keyring on the bus (about 1.1 s in
/// all). gnome-keyring-daemon can abort under a burst of short-lived clients (an upstream race;
/// systemd or the session starts it again within moments): a request or `airlock serve`
/// arriving in that gap waits for it instead of failing. A keyring that is really absent
/// reports so after the last try.
const RETRY_AFTER: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(300),
    std::time::Duration::from_millis(700),
];

fn retry_unreachable<T>(
    pauses: impl IntoIterator<Item = std::time::Duration>,
    reconnect: impl Fn(),
    mut call: impl FnMut() -> Result<T, VaultError>,
) -> Result<T, VaultError> {
    for pause in pauses {
        match call() {
            Err(VaultError::Unreachable { detail }) => {
                tracing::debug!("OS keyring not reachable ({detail}); trying again in {pause:?}");
                std::thread::sleep(pause);
                reconnect();
            }
            done => return done,
        }
    }
    call()
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
        // The keyring daemon went away while answering, or a new one does not know the
        // session this process opened with the old one: it crashed and was started again.
        "noreply",
        "disconnected",
        "nosession",
    ]
    .iter()
    .any(|m| d.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn unreachable() -> VaultError {
        VaultError::Unreachable {
            detail: "org.freedesktop.DBus.Error.ServiceUnknown".into(),
        }
    }

    #[test]
    fn a_keyring_back_within_the_retries_answers_the_call() {
        let mut calls = 0;
        let reconnects = std::cell::Cell::new(0);
        let got = retry_unreachable(
            [Duration::ZERO; 3],
            || reconnects.set(reconnects.get() + 1),
            || {
                calls += 1;
                if calls < 3 {
                    Err(unreachable())
                } else {
                    Ok(calls)
                }
            },
        );
        assert_eq!(got.ok(), Some(3));
        assert_eq!(reconnects.get(), 2, "a new connection before each retry");
    }

    #[test]
    fn an_absent_keyring_is_reported_after_the_last_try_and_a_locked_one_at_once() {
        /// Retries a call that always fails with `err()`: what it ends with, after how many calls.
        fn always(err: fn() -> VaultError) -> (Result<(), VaultError>, usize) {
            let mut calls = 0;
            let got = retry_unreachable(
                [Duration::ZERO; 3],
                || {},
                || {
                    calls += 1;
                    Err(err())
                },
            );
            (got, calls)
        }
        let (got, calls) = always(unreachable);
        assert!(matches!(got, Err(VaultError::Unreachable { .. })));
        assert_eq!(calls, 4);
        let (got, calls) = always(|| VaultError::Locked {
            detail: "locked".into(),
        });
        assert!(matches!(got, Err(VaultError::Locked { .. })));
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_keyring_that_vanished_mid_call_counts_as_unreachable() {
        for detail in [
            "org.freedesktop.DBus.Error.NoReply: Message recipient disconnected from message bus without replying",
            "org.freedesktop.DBus.Error.ServiceUnknown: The name org.freedesktop.secrets was not provided by any .service files",
            "zbus error: org.freedesktop.Secret.Error.NoSession: The session does not exist",
        ] {
            assert!(looks_unreachable(detail), "{detail}");
        }
        assert!(!looks_unreachable(
            "Cannot create an item in a locked collection"
        ));
    }
}
