//! Requests per minute (GCRA via `governor`, so bursts are smoothed rather than cut at minute
//! boundaries) and tokens per minute (a sliding window, since tokens are known only afterwards).
//!
//! A request's tokens are known only when it ends, so each admitted request also holds what it
//! may use (its prompt, from the body's size, and its `max_tokens`) against the key's tokens
//! per minute until then, as requests hold their worst-case cost against USD budgets. A key is
//! admitted only while used plus held is below its limit: requests sent at once cannot all
//! pass a limit that none of them has reached yet.

use super::LimitError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RateBook {
    rpm: Mutex<HashMap<String, (u32, DefaultDirectRateLimiter)>>,
    tpm: Arc<Mutex<HashMap<String, Tokens>>>,
}

/// One key's tokens: those used in the last minute, and those held by requests in flight.
#[derive(Debug, Default)]
struct Tokens {
    recent: VecDeque<(Instant, u64)>,
    held: u64,
}

/// Tokens a request in flight holds against its key's tokens per minute; given back on drop
/// (after the request's real tokens were charged).
#[derive(Debug)]
pub struct TokenHold {
    book: Arc<Mutex<HashMap<String, Tokens>>>,
    account: String,
    tokens: u64,
}

impl Drop for TokenHold {
    fn drop(&mut self) {
        if let Ok(mut map) = self.book.lock() {
            if let Some(t) = map.get_mut(&self.account) {
                t.held = t.held.saturating_sub(self.tokens);
            }
        }
    }
}

impl RateBook {
    /// Takes one request from the key's allowance, or says how long to wait.
    pub fn check_rpm(&self, account: &str, rpm: u32) -> Result<(), LimitError> {
        let Some(n) = NonZeroU32::new(rpm) else {
            return Ok(());
        };
        let Ok(mut map) = self.rpm.lock() else {
            return Ok(());
        };
        let entry = map
            .entry(account.to_owned())
            .or_insert_with(|| (rpm, RateLimiter::direct(Quota::per_minute(n))));
        if entry.0 != rpm {
            // The limit changed (config reload): start a limiter with the new quota.
            *entry = (rpm, RateLimiter::direct(Quota::per_minute(n)));
        }
        entry.1.check().map_err(|not_until| LimitError::Rpm {
            key: account.to_owned(),
            rpm,
            retry_after: not_until
                .wait_time_from(DefaultClock::default().now())
                .max(Duration::from_secs(1)),
        })
    }

    /// Refuses while the key's tokens in the last minute plus those held by its requests in
    /// flight are at or over `tpm`; otherwise holds `want` tokens for this request until the
    /// returned hold is dropped.
    pub fn reserve_tpm(
        &self,
        account: &str,
        tpm: u64,
        want: u64,
        now: Instant,
    ) -> Result<Option<TokenHold>, LimitError> {
        let Ok(mut map) = self.tpm.lock() else {
            return Ok(None);
        };
        // The key's name is copied only the first time it is seen.
        if !map.contains_key(account) {
            map.insert(account.to_owned(), Tokens::default());
        }
        let Some(entry) = map.get_mut(account) else {
            return Ok(None);
        };
        let window = &mut entry.recent;
        expire(window, now);
        let used: u64 = window.iter().map(|(_, n)| n).sum();
        if used < tpm {
            if used.saturating_add(entry.held) >= tpm {
                return Err(LimitError::TpmHeld {
                    key: account.to_owned(),
                    tpm,
                    used,
                    held: entry.held,
                });
            }
            entry.held = entry.held.saturating_add(want);
            return Ok(Some(TokenHold {
                book: Arc::clone(&self.tpm),
                account: account.to_owned(),
                tokens: want,
            }));
        }
        // Wait until enough old entries leave the window to get back under the limit.
        let mut excess = used - tpm + 1;
        let mut wait = MINUTE;
        for (t, n) in window.iter() {
            wait = (*t + MINUTE).saturating_duration_since(now);
            if *n >= excess {
                break;
            }
            excess -= n;
        }
        Err(LimitError::Tpm {
            key: account.to_owned(),
            tpm,
            retry_after: wait.max(Duration::from_secs(1)),
        })
    }

    pub fn charge_tokens(&self, account: &str, tokens: u64, now: Instant) {
        if tokens == 0 {
            return;
        }
        if let Ok(mut map) = self.tpm.lock() {
            let w = &mut map.entry(account.to_owned()).or_default().recent;
            expire(w, now);
            w.push_back((now, tokens));
        }
    }

    /// Tokens used by the key in the last minute.
    pub fn tokens_last_minute(&self, account: &str, now: Instant) -> u64 {
        let Ok(mut map) = self.tpm.lock() else {
            return 0;
        };
        map.get_mut(account).map_or(0, |t| {
            expire(&mut t.recent, now);
            t.recent.iter().map(|(_, n)| n).sum()
        })
    }
}

fn expire(w: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while w
        .front()
        .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= MINUTE)
    {
        w.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_allows_the_quota_then_refuses_with_a_wait() {
        let b = RateBook::default();
        for _ in 0..3 {
            b.check_rpm("k", 3).expect("within quota");
        }
        let err = b.check_rpm("k", 3).expect_err("over quota");
        assert!(err
            .retry_after()
            .is_some_and(|d| d >= Duration::from_secs(1) && d <= MINUTE));
        b.check_rpm("other", 3).expect("keys are separate");
    }

    #[test]
    fn tpm_window_slides() {
        let b = RateBook::default();
        let t0 = Instant::now();
        b.charge_tokens("k", 600, t0);
        b.charge_tokens("k", 500, t0 + Duration::from_secs(30));
        let err = b
            .reserve_tpm("k", 1000, 1, t0 + Duration::from_secs(31))
            .expect_err("over");
        // Dropping the first 600 is enough: wait until it is a minute old.
        assert_eq!(err.retry_after(), Some(Duration::from_secs(29)));
        b.reserve_tpm("k", 1000, 1, t0 + Duration::from_secs(61))
            .expect("first charge expired");
    }

    /// QA: eight requests sent at once all passed a limit of 60 tokens a minute, because
    /// tokens were counted only when each ended. What requests in flight may use is held.
    #[test]
    fn requests_in_flight_hold_tokens_until_they_end() {
        let b = RateBook::default();
        let t0 = Instant::now();
        let first = b.reserve_tpm("k", 60, 510, t0).expect("room left");
        let err = b.reserve_tpm("k", 60, 510, t0).expect_err("held");
        assert!(
            matches!(
                err,
                LimitError::TpmHeld {
                    used: 0,
                    held: 510,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.retry_after(),
            Some(super::super::budget::HELD_RETRY_AFTER)
        );
        b.reserve_tpm("other", 60, 510, t0)
            .expect("keys are separate");
        // It ends having used 40: charged, then its hold given back; 20 are left.
        b.charge_tokens("k", 40, t0);
        drop(first);
        let second = b.reserve_tpm("k", 60, 20, t0).expect("20 left");
        let err = b
            .reserve_tpm("k", 60, 1, t0)
            .expect_err("40 used and 20 held");
        assert!(
            matches!(
                err,
                LimitError::TpmHeld {
                    used: 40,
                    held: 20,
                    ..
                }
            ),
            "{err:?}"
        );
        drop(second);
        let _third = b.reserve_tpm("k", 60, 1, t0).expect("given back");
    }
}
