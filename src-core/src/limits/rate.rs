//! Requests per minute (GCRA via `governor`, so bursts are smoothed rather than cut at minute
//! boundaries) and tokens per minute (a sliding window, since tokens are known only afterwards).

use super::LimitError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct RateBook {
    rpm: Mutex<HashMap<String, (u32, DefaultDirectRateLimiter)>>,
    tpm: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
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

    /// Refuses while the key's tokens in the last minute are at or over `tpm`.
    pub fn check_tpm(&self, account: &str, tpm: u64, now: Instant) -> Result<(), LimitError> {
        let Ok(mut map) = self.tpm.lock() else {
            return Ok(());
        };
        let Some(window) = map.get_mut(account) else {
            return Ok(());
        };
        expire(window, now);
        let used: u64 = window.iter().map(|(_, n)| n).sum();
        if used < tpm {
            return Ok(());
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
            let w = map.entry(account.to_owned()).or_default();
            expire(w, now);
            w.push_back((now, tokens));
        }
    }

    /// Tokens used by the key in the last minute.
    pub fn tokens_last_minute(&self, account: &str, now: Instant) -> u64 {
        let Ok(mut map) = self.tpm.lock() else {
            return 0;
        };
        map.get_mut(account).map_or(0, |w| {
            expire(w, now);
            w.iter().map(|(_, n)| n).sum()
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
            .check_tpm("k", 1000, t0 + Duration::from_secs(31))
            .expect_err("over");
        // Dropping the first 600 is enough: wait until it is a minute old.
        assert_eq!(err.retry_after(), Some(Duration::from_secs(29)));
        b.check_tpm("k", 1000, t0 + Duration::from_secs(61))
            .expect("first charge expired");
    }
}
