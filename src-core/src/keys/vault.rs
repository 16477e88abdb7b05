//! Provider keys in the OS keyring (Secret Service, Keychain, Credential Manager).
//!
//! Every keyring error becomes a [`VaultError`] whose message says what to do. Errors from the
//! keyring crate can carry the stored bytes (`BadEncoding`), so they are never formatted with
//! `Debug` and their payloads are dropped here.
//!
//! A Secret Service that stops answering (its daemon stopped or hung) would block a D-Bus call
//! forever, so every call here runs on its own thread and is given up after [`KEYRING_TIMEOUT`]
//! with [`VaultError::Timeout`]. The thread is left to finish on its own: a blocked call cannot
//! be cancelled, and it ends once the keyring answers or goes away.

use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// How long one keyring call (with its retries) may take before Airlock gives up on it. A
/// healthy Secret Service answers in milliseconds, and one that is absent is reported after
/// about 1.1 s ([`RETRY_AFTER`]); one that takes longer than this is stuck.
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
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
    #[error(
        "the OS keyring (Secret Service) did not answer within {secs} s. Its daemon may be stopped \
         or hung: run `airlock doctor` to check it, and restart your keyring (gnome-keyring-daemon \
         or KWallet) if it stays silent; Airlock uses it again as soon as it answers"
    )]
    Timeout { secs: u64 },
    #[error("the OS keyring failed: {detail}")]
    Failed { detail: String },
}

impl VaultError {
    /// Whether retrying after the user acts (unlocking, starting a keyring) can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VaultError::Unreachable { .. } | VaultError::Locked { .. } | VaultError::Timeout { .. }
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

    /// Blocking, for at most [`KEYRING_TIMEOUT`]: talks to the keyring over D-Bus. Call from
    /// `spawn_blocking` in async code.
    pub fn get(&self, entry: &str) -> Result<SecretString, VaultError> {
        let (vault, entry) = (self.clone(), entry.to_owned());
        within(KEYRING_TIMEOUT, move || vault.get_unbounded(&entry))
    }

    /// Like [`get`](Self::get), but waits for the keyring however long it takes. For callers
    /// that bound the wait themselves and share one pending call between waiters (the server's
    /// provider-key cache), so a stuck keyring holds one thread, not one per request.
    pub fn get_unbounded(&self, entry: &str) -> Result<SecretString, VaultError> {
        retry_unreachable(RETRY_AFTER, reconnect, || {
            let e = self.entry(entry)?;
            match e.get_password() {
                Ok(p) => Ok(SecretString::from(p)),
                Err(err) => Err(map_err(err, entry)),
            }
        })
    }

    /// Blocking, for at most [`KEYRING_TIMEOUT`].
    pub fn set(&self, entry: &str, secret: &str) -> Result<(), VaultError> {
        let (vault, entry) = (self.clone(), entry.to_owned());
        let secret = SecretString::from(secret);
        within(KEYRING_TIMEOUT, move || {
            retry_unreachable(RETRY_AFTER, reconnect, || {
                vault
                    .entry(&entry)?
                    .set_password(secret.expose_secret())
                    .map_err(|e| map_err(e, &entry))
            })
        })
    }

    /// Returns whether an entry was there to delete. Blocking, for at most [`KEYRING_TIMEOUT`].
    pub fn delete(&self, entry: &str) -> Result<bool, VaultError> {
        let (vault, entry) = (self.clone(), entry.to_owned());
        within(KEYRING_TIMEOUT, move || {
            retry_unreachable(RETRY_AFTER, reconnect, || {
                match vault.entry(&entry)?.delete_credential() {
                    Ok(()) => Ok(true),
                    Err(keyring::Error::NoEntry) => Ok(false),
                    Err(e) => Err(map_err(e, &entry)),
                }
            })
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

/// Runs a blocking keyring call on its own thread and waits at most `limit` for it. On expiry
/// the thread is left behind (a D-Bus call cannot be cancelled); it ends when the keyring answers.
fn within<T: Send + 'static>(
    limit: Duration,
    call: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, VaultError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("airlock-keyring".into())
        .spawn(move || {
            // The waiter is gone only after it gave up; the late answer has nowhere to go.
            if tx.send(call()).is_err() {
                tracing::debug!("a keyring call answered after its caller gave up");
            }
        });
    if let Err(e) = spawned {
        return Err(VaultError::Failed {
            detail: format!("cannot start a thread for the keyring call: {e}"),
        });
    }
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(VaultError::Timeout {
            secs: limit.as_secs().max(1),
        }),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(VaultError::Failed {
            detail: "the keyring call panicked".into(),
        }),
    }
}

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
    fn a_keyring_call_that_does_not_answer_is_given_up_after_the_limit() {
        let started = std::time::Instant::now();
        let (_release, hold) = std::sync::mpsc::channel::<()>();
        let got: Result<(), VaultError> = within(Duration::from_millis(200), move || {
            // Blocks until the test ends, like a call to a stopped keyring daemon.
            hold.recv().ok();
            Ok(())
        });
        assert!(
            matches!(got, Err(VaultError::Timeout { secs: 1 })),
            "{got:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let fast = within(Duration::from_secs(5), || Ok::<_, VaultError>(7));
        assert_eq!(fast.ok(), Some(7));
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
