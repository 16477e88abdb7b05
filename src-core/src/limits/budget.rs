//! Budget counters: spend per UTC day and month for the whole instance, each provider and each
//! account, plus the lifetime spend of keys that carry their own budget (`airlock exec --budget`).
//!
//! Requests in flight count too. Admission ([`SpendBook::reserve`]) checks and, in the same lock,
//! holds the request's worst-case cost against every budget it is subject to; the returned
//! [`Reservation`] gives it back when dropped, after `record` has added the real cost. A request
//! is admitted while `spent + held` is below each budget, so however many run at once, the
//! spend can pass a budget by at most one request's cost, as in a sequential run.

use super::calendar::{periods, Periods};
use super::{fmt_usd, LimitError};
use crate::config::{Budget, Limits};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Output tokens held for a request that sets no output cap (`max_tokens` and its spellings).
/// Providers then allow up to the model's own maximum, which the price table does not carry;
/// this is gpt-4o's, and more than most answers use.
pub const UNCAPPED_OUTPUT_TOKENS: u64 = 16_384;

/// Request body bytes per input token held: prose runs 4 or more bytes a token in every
/// provider's tokenizer (Claude's included), code and JSON about 3, so this errs high without
/// running a tokenizer on the hot path.
pub const BODY_BYTES_PER_INPUT_TOKEN: u64 = 3;

/// The most tokens a request can use, (input, output), held against its limits while it runs:
/// input from the size of its body, output at the cap it asks for (or
/// [`UNCAPPED_OUTPUT_TOKENS`]).
pub fn worst_case_tokens(body_len: usize, max_tokens: Option<u64>) -> (u64, u64) {
    (
        (body_len as u64).div_ceil(BODY_BYTES_PER_INPUT_TOKEN),
        max_tokens.unwrap_or(UNCAPPED_OUTPUT_TOKENS),
    )
}

/// The most a request can cost, held against its budgets while it runs: its
/// [`worst_case_tokens`] at list price.
pub fn worst_case_micros(
    price: &crate::meter::ModelPrice,
    body_len: usize,
    max_tokens: Option<u64>,
) -> i64 {
    let (input_tokens, output_tokens) = worst_case_tokens(body_len, max_tokens);
    let usage = crate::meter::Usage {
        input_tokens,
        output_tokens,
        ..Default::default()
    };
    i64::try_from(crate::meter::cost(&usage, price).0).unwrap_or(i64::MAX)
}

/// `Retry-After` for a refusal caused by requests still in flight: they usually end within
/// seconds, and then the budget is either free again or used up (and says so).
pub const HELD_RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "scope", content = "name", rename_all = "lowercase")]
pub enum Scope {
    Global,
    Provider(String),
    Key(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Provider(p) => write!(f, "provider {p}"),
            Scope::Key(k) => write!(f, "key {k}"),
        }
    }
}

/// A budget crossing its soft-alert share, or used up, by the spend just added.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetAlert {
    pub scope: Scope,
    pub period: &'static str,
    pub limit_micros: i64,
    pub spent_micros: i64,
    /// `soft` at the alert share, `exhausted` at 100%.
    pub level: &'static str,
}

#[derive(Default)]
struct Book {
    day: String,
    month: String,
    day_sums: HashMap<Scope, i64>,
    month_sums: HashMap<Scope, i64>,
    /// By key id: a name can be issued again after a revoke, and the new key starts at nothing.
    key_lifetime: HashMap<i64, i64>,
    /// (scope, period, level) already alerted in the current period.
    alerted: HashSet<(Scope, &'static str, &'static str)>,
    /// Worst-case cost of the requests in flight, per scope (against its daily and monthly
    /// budgets alike) and per key id (against lifetime budgets).
    held: HashMap<Scope, i64>,
    held_lifetime: HashMap<i64, i64>,
}

/// The book, even if a thread panicked holding it: it is only counters, each update whole, so
/// the data is sound, and refusing to count (as a failed lock used to) would admit every
/// request unchecked.
fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
pub struct SpendBook {
    inner: Arc<Mutex<Book>>,
}

/// A request's worst-case cost, held against its budgets until this is dropped.
#[must_use = "dropping the reservation gives the held amount back at once"]
pub struct Reservation {
    book: Arc<Mutex<Book>>,
    scopes: Vec<Scope>,
    key_ids: Vec<i64>,
    micros: i64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.micros == 0 {
            return;
        }
        let mut b = lock(&self.book);
        for s in self.scopes.drain(..) {
            if let std::collections::hash_map::Entry::Occupied(mut e) = b.held.entry(s) {
                *e.get_mut() -= self.micros;
                if *e.get() <= 0 {
                    e.remove();
                }
            }
        }
        for id in self.key_ids.drain(..) {
            if let std::collections::hash_map::Entry::Occupied(mut e) = b.held_lifetime.entry(id) {
                *e.get_mut() -= self.micros;
                if *e.get() <= 0 {
                    e.remove();
                }
            }
        }
    }
}

impl Reservation {
    /// What this reservation holds, in micro-dollars.
    #[cfg(test)]
    pub fn micros(&self) -> i64 {
        self.micros
    }
}

/// What one request is charged to.
pub struct Charge<'a> {
    pub account: Option<&'a str>,
    pub provider: Option<&'a str>,
    /// The key's own name (not its parent's), for per-key lifetime budgets.
    pub key_name: Option<&'a str>,
    /// The key's id, which its lifetime spend is counted under.
    pub key_id: Option<i64>,
    /// A child key's parent: its lifetime spend includes the child's, and its own lifetime
    /// budget binds the child too.
    pub parent: Option<ParentCharge<'a>>,
}

/// The parent key a child key's spend also counts under.
#[derive(Clone, Copy)]
pub struct ParentCharge<'a> {
    pub name: &'a str,
    pub id: i64,
    pub budget: Option<i64>,
}

impl<'a> Charge<'a> {
    /// The keys whose lifetime spend this request counts under: (name, id, own lifetime budget).
    fn lifetimes(
        &self,
        key_budget: Option<i64>,
    ) -> impl Iterator<Item = (&'a str, i64, Option<i64>)> {
        let own = match (self.key_name, self.key_id) {
            (Some(n), Some(id)) => Some((n, id, key_budget)),
            _ => None,
        };
        own.into_iter()
            .chain(self.parent.map(|p| (p.name, p.id, p.budget)))
    }
}

impl Book {
    /// Starts new periods at UTC midnight and on the 1st.
    fn roll(&mut self, p: &Periods) {
        if self.day != p.day {
            self.day = p.day.clone();
            self.day_sums.clear();
            self.alerted.retain(|(_, period, _)| *period != "daily");
        }
        if self.month != p.month {
            self.month = p.month.clone();
            self.month_sums.clear();
            self.alerted.retain(|(_, period, _)| *period != "monthly");
        }
    }
}

fn scopes(c: &Charge<'_>) -> Vec<Scope> {
    let mut s = vec![Scope::Global];
    if let Some(p) = c.provider {
        s.push(Scope::Provider(p.to_owned()));
    }
    if let Some(a) = c.account {
        s.push(Scope::Key(a.to_owned()));
    }
    s
}

fn budget_for(limits: &Limits, scope: &Scope) -> Budget {
    match scope {
        Scope::Global => limits.global,
        Scope::Provider(p) => limits.providers.get(p).copied().unwrap_or_default(),
        Scope::Key(k) => limits.for_key(k).budget,
    }
}

/// The first USD budget `c` is subject to, named for a message (`key app lifetime`,
/// `global daily`), if there is any.
pub fn first_budget(limits: &Limits, c: &Charge<'_>, key_budget: Option<i64>) -> Option<String> {
    if let Some((key, _, _)) = c.lifetimes(key_budget).find(|(_, _, b)| b.is_some()) {
        return Some(format!("{} lifetime", Scope::Key(key.to_owned())));
    }
    scopes(c).into_iter().find_map(|s| {
        let b = budget_for(limits, &s);
        let period = if b.daily_micros.is_some() {
            "daily"
        } else {
            "monthly"
        };
        b.is_set().then(|| format!("{s} {period}"))
    })
}

impl SpendBook {
    /// Seeds the counters from the ledger: `rows` are (account, provider, micros) since the
    /// start of the month, `today` the same since the start of the day.
    pub fn seed(
        &self,
        now_ms: i64,
        month: &[(Option<String>, Option<String>, i64)],
        today: &[(Option<String>, Option<String>, i64)],
        key_lifetimes: &[(i64, i64)],
    ) {
        let mut b = lock(&self.inner);
        b.roll(&periods(now_ms));
        for (rows, day) in [(month, false), (today, true)] {
            for (account, provider, micros) in rows {
                let c = Charge {
                    account: account.as_deref(),
                    provider: provider.as_deref(),
                    key_name: None,
                    key_id: None,
                    parent: None,
                };
                for s in scopes(&c) {
                    let sums = if day {
                        &mut b.day_sums
                    } else {
                        &mut b.month_sums
                    };
                    *sums.entry(s).or_default() += micros;
                }
            }
        }
        for &(id, m) in key_lifetimes {
            b.key_lifetime.insert(id, m);
        }
    }

    /// Refuses the request if any budget that applies to it is used up, or taken by what is
    /// spent plus what requests in flight hold; otherwise holds `estimate` micro-dollars (the
    /// request's worst-case cost) against each of those budgets until the reservation drops.
    pub fn reserve(
        &self,
        limits: &Limits,
        now_ms: i64,
        c: &Charge<'_>,
        key_budget: Option<i64>,
        estimate: i64,
    ) -> Result<Reservation, LimitError> {
        let p = periods(now_ms);
        // A billion dollars is past any budget, and many of them cannot overflow the sums.
        let estimate = estimate.clamp(0, 1_000_000_000_000_000);
        let mut r = Reservation {
            book: self.inner.clone(),
            scopes: Vec::new(),
            key_ids: Vec::new(),
            micros: 0,
        };
        let mut b = lock(&self.inner);
        b.roll(&p);
        for (key, id, limit) in c.lifetimes(key_budget) {
            let Some(limit) = limit else { continue };
            let spent = b.key_lifetime.get(&id).copied().unwrap_or(0);
            let held = b.held_lifetime.get(&id).copied().unwrap_or(0);
            if spent >= limit {
                return Err(LimitError::KeyBudget {
                    key: key.to_owned(),
                    limit: fmt_usd(limit),
                    spent: fmt_usd(spent),
                });
            }
            if spent.saturating_add(held) >= limit {
                return Err(LimitError::BudgetHeld {
                    scope: Scope::Key(key.to_owned()).to_string(),
                    period: "lifetime",
                    limit: fmt_usd(limit),
                    spent: fmt_usd(spent),
                    held: fmt_usd(held),
                });
            }
            r.key_ids.push(id);
        }
        for scope in scopes(c) {
            let budget = budget_for(limits, &scope);
            if !budget.is_set() {
                continue;
            }
            let held = b.held.get(&scope).copied().unwrap_or(0);
            for (period, limit, sums, end) in [
                ("daily", budget.daily_micros, &b.day_sums, p.day_end_ms),
                (
                    "monthly",
                    budget.monthly_micros,
                    &b.month_sums,
                    p.month_end_ms,
                ),
            ] {
                let Some(limit) = limit else { continue };
                let spent = sums.get(&scope).copied().unwrap_or(0);
                if spent >= limit {
                    return Err(LimitError::Budget {
                        scope: scope.to_string(),
                        period,
                        limit: fmt_usd(limit),
                        spent: fmt_usd(spent),
                        retry_after: Duration::from_millis((end - now_ms).max(1000) as u64),
                    });
                }
                if spent.saturating_add(held) >= limit {
                    return Err(LimitError::BudgetHeld {
                        scope: scope.to_string(),
                        period,
                        limit: fmt_usd(limit),
                        spent: fmt_usd(spent),
                        held: fmt_usd(held),
                    });
                }
            }
            r.scopes.push(scope);
        }
        if estimate > 0 {
            for s in &r.scopes {
                *b.held.entry(s.clone()).or_default() += estimate;
            }
            for id in &r.key_ids {
                *b.held_lifetime.entry(*id).or_default() += estimate;
            }
            r.micros = estimate;
        }
        Ok(r)
    }

    /// What requests in flight hold against a scope's budgets.
    #[cfg(test)]
    pub fn held(&self, scope: &Scope) -> i64 {
        lock(&self.inner).held.get(scope).copied().unwrap_or(0)
    }

    /// Adds a finished request's cost; returns the alerts it triggers (each once per period).
    pub fn add(
        &self,
        limits: &Limits,
        now_ms: i64,
        c: &Charge<'_>,
        micros: i64,
        key_budget: Option<i64>,
    ) -> Vec<BudgetAlert> {
        let p = periods(now_ms);
        let mut b = lock(&self.inner);
        b.roll(&p);
        let mut alerts = Vec::new();
        for (key, id, limit) in c.lifetimes(key_budget) {
            if !b.key_lifetime.contains_key(&id) {
                // A key's first charge: if its name belonged to a revoked key, the alerts sent
                // for that one are not this key's.
                let scope = Scope::Key(key.to_owned());
                b.alerted
                    .retain(|(s, period, _)| !(*period == "lifetime" && *s == scope));
            }
            let total = {
                let e = b.key_lifetime.entry(id).or_default();
                *e += micros;
                *e
            };
            if let Some(limit) = limit {
                let scope = Scope::Key(key.to_owned());
                push_alert(
                    &mut b.alerted,
                    &mut alerts,
                    limits.soft_alert,
                    scope,
                    "lifetime",
                    limit,
                    total,
                    micros,
                );
            }
        }
        for scope in scopes(c) {
            let budget = budget_for(limits, &scope);
            let day = {
                let e = b.day_sums.entry(scope.clone()).or_default();
                *e += micros;
                *e
            };
            let month = {
                let e = b.month_sums.entry(scope.clone()).or_default();
                *e += micros;
                *e
            };
            if let Some(limit) = budget.daily_micros {
                push_alert(
                    &mut b.alerted,
                    &mut alerts,
                    limits.soft_alert,
                    scope.clone(),
                    "daily",
                    limit,
                    day,
                    micros,
                );
            }
            if let Some(limit) = budget.monthly_micros {
                push_alert(
                    &mut b.alerted,
                    &mut alerts,
                    limits.soft_alert,
                    scope.clone(),
                    "monthly",
                    limit,
                    month,
                    micros,
                );
            }
        }
        alerts
    }

    /// Current spend for a scope: (today, this month).
    pub fn spent(&self, now_ms: i64, scope: &Scope) -> (i64, i64) {
        let mut b = lock(&self.inner);
        b.roll(&periods(now_ms));
        (
            b.day_sums.get(scope).copied().unwrap_or(0),
            b.month_sums.get(scope).copied().unwrap_or(0),
        )
    }

    /// What the key with this id has spent over its life.
    pub fn key_lifetime(&self, key_id: i64) -> i64 {
        lock(&self.inner)
            .key_lifetime
            .get(&key_id)
            .copied()
            .unwrap_or(0)
    }
}

#[allow(clippy::too_many_arguments)]
fn push_alert(
    alerted: &mut HashSet<(Scope, &'static str, &'static str)>,
    out: &mut Vec<BudgetAlert>,
    share: f64,
    scope: Scope,
    period: &'static str,
    limit: i64,
    spent: i64,
    just_added: i64,
) {
    let before = spent - just_added;
    let soft = (limit as f64 * share).round() as i64;
    for (level, threshold) in [("soft", soft), ("exhausted", limit)] {
        if spent >= threshold
            && (before < threshold || just_added == 0)
            && alerted.insert((scope.clone(), period, level))
        {
            out.push(BudgetAlert {
                scope: scope.clone(),
                period,
                limit_micros: limit,
                spent_micros: spent,
                level,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn limits(toml: &str) -> Limits {
        Config::from_toml(toml, None).expect("config").limits
    }

    /// A charge by key `key_name` (id `key_id`) of `account`, without a parent.
    fn charge(
        account: &'static str,
        key_name: &'static str,
        provider: &'static str,
        key_id: i64,
    ) -> Charge<'static> {
        Charge {
            account: Some(account),
            provider: Some(provider),
            key_name: Some(key_name),
            key_id: Some(key_id),
            parent: None,
        }
    }

    const NOW: i64 = 1_790_000_000_000;

    impl SpendBook {
        fn check(
            &self,
            limits: &Limits,
            now_ms: i64,
            c: &Charge<'_>,
            key_budget: Option<i64>,
        ) -> Result<(), LimitError> {
            self.reserve(limits, now_ms, c, key_budget, 0).map(drop)
        }
    }

    #[test]
    fn key_budget_blocks_once_used_and_alerts_once_at_the_soft_share() {
        let l = limits("[limits.keys.app]\ndaily_usd = 0.01\n");
        let book = SpendBook::default();
        let c = charge("app", "app", "openai", 1);
        assert!(book.check(&l, NOW, &c, None).is_ok());
        let a = book.add(&l, NOW, &c, 8_500, None);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].level, "soft");
        assert!(
            book.add(&l, NOW, &c, 100, None).is_empty(),
            "soft alert fires once"
        );
        assert!(
            book.check(&l, NOW, &c, None).is_ok(),
            "under budget still passes"
        );
        let a = book.add(&l, NOW, &c, 1_400, None);
        assert_eq!(
            a.iter().map(|x| x.level).collect::<Vec<_>>(),
            vec!["exhausted"]
        );
        let err = book.check(&l, NOW, &c, None).expect_err("over budget");
        assert!(
            matches!(
                err,
                LimitError::Budget {
                    period: "daily",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err
            .retry_after()
            .is_some_and(|d| d <= Duration::from_secs(86_400)));
        // Other keys are not affected; the next UTC day starts fresh.
        let other = charge("other", "other", "openai", 2);
        assert!(book.check(&l, NOW, &other, None).is_ok());
        assert!(book.check(&l, NOW + 86_400_000, &c, None).is_ok());
    }

    #[test]
    fn global_and_provider_budgets_and_seeding() {
        let l =
            limits("[limits]\nmonthly_usd = 1.0\n[limits.providers.anthropic]\ndaily_usd = 0.5\n");
        let book = SpendBook::default();
        book.seed(
            NOW,
            &[(Some("a".into()), Some("anthropic".into()), 500_000)],
            &[(Some("a".into()), Some("anthropic".into()), 500_000)],
            &[],
        );
        let ant = charge("b", "b", "anthropic", 3);
        assert!(matches!(
            book.check(&l, NOW, &ant, None),
            Err(LimitError::Budget { .. })
        ));
        let oai = charge("b", "b", "openai", 3);
        assert!(book.check(&l, NOW, &oai, None).is_ok());
        book.add(&l, NOW, &oai, 500_000, None);
        assert!(
            book.check(&l, NOW, &oai, None).is_err(),
            "global monthly budget reached"
        );
    }

    #[test]
    fn requests_in_flight_hold_their_worst_case_until_dropped() {
        let l = limits("[limits.keys.app]\ndaily_usd = 0.0001\n");
        let book = SpendBook::default();
        let c = charge("app", "app", "anthropic", 1);
        // The first request on an empty budget goes, whatever its worst case.
        let first = book.reserve(&l, NOW, &c, None, 7_500).expect("first");
        assert_eq!(book.held(&Scope::Key("app".into())), 7_500);
        let err = book
            .reserve(&l, NOW, &c, None, 7_500)
            .err()
            .expect("held by the first");
        assert!(
            matches!(
                err,
                LimitError::BudgetHeld {
                    period: "daily",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), "airlock_budget_exceeded");
        assert_eq!(err.retry_after(), Some(HELD_RETRY_AFTER));
        // Other keys are not held up by it.
        let other = Charge {
            account: Some("other"),
            key_name: Some("other"),
            key_id: Some(2),
            parent: None,
            ..c
        };
        assert!(book.reserve(&l, NOW, &other, None, 7_500).is_ok());
        // It ends cheaper than feared: its cost is added, then the hold goes.
        book.add(&l, NOW, &c, 50, None);
        drop(first);
        assert_eq!(book.held(&Scope::Key("app".into())), 0);
        assert!(
            book.reserve(&l, NOW, &c, None, 7_500).is_ok(),
            "50 of 100 spent"
        );
        book.add(&l, NOW, &c, 50, None);
        assert!(matches!(
            book.check(&l, NOW, &c, None),
            Err(LimitError::Budget { .. })
        ));
    }

    #[test]
    fn a_lifetime_budget_is_held_too() {
        let l = limits("");
        let book = SpendBook::default();
        let c = charge("parent", "exec-1", "openai", 4);
        let small = book.reserve(&l, NOW, &c, Some(100), 60).expect("first");
        let big = book
            .reserve(&l, NOW, &c, Some(100), 500)
            .expect("60 of 100 held");
        let err = book.reserve(&l, NOW, &c, Some(100), 1).err().expect("held");
        assert_eq!(err.code(), "airlock_key_budget_exceeded", "{err}");
        drop(big);
        let again = book
            .reserve(&l, NOW, &c, Some(100), 1)
            .expect("60 of 100 held");
        drop((small, again));
        assert_eq!(book.inner.lock().expect("lock").held_lifetime.len(), 0);
    }

    #[test]
    fn worst_case_is_input_by_size_and_output_at_the_cap() {
        let price = crate::meter::PriceTable::bundled()
            .lookup(Some("anthropic"), "claude-opus-4-1")
            .cloned()
            .expect("priced");
        // 300 bytes: 100 input tokens at $15/M, plus 100 output tokens at $75/M.
        assert_eq!(worst_case_micros(&price, 300, Some(100)), 1_500 + 7_500);
        assert_eq!(
            worst_case_micros(&price, 0, None),
            UNCAPPED_OUTPUT_TOKENS as i64 * 75
        );
        assert_eq!(worst_case_micros(&price, 0, Some(u64::MAX)), i64::MAX);
    }

    #[test]
    fn a_child_key_counts_against_its_parents_own_budget() {
        let l = limits("");
        let book = SpendBook::default();
        let parent = charge("qa9", "qa9", "anthropic", 9);
        let child = Charge {
            key_name: Some("exec-1"),
            key_id: Some(10),
            parent: Some(ParentCharge {
                name: "qa9",
                id: 9,
                budget: Some(500),
            }),
            ..parent
        };
        // The child has no budget of its own; its spend is the parent's too.
        assert!(book.check(&l, NOW, &child, None).is_ok());
        let alerts = book.add(&l, NOW, &child, 500, None);
        assert_eq!(book.key_lifetime(9), 500);
        assert!(
            alerts
                .iter()
                .any(|a| a.level == "exhausted" && a.scope == Scope::Key("qa9".into())),
            "{alerts:?}"
        );
        let err = book.check(&l, NOW, &child, None).expect_err("parent spent");
        assert_eq!(err.code(), "airlock_key_budget_exceeded", "{err}");
        assert!(err.to_string().contains("\"qa9\""), "{err}");
        assert!(book.check(&l, NOW, &parent, Some(500)).is_err());
        // And a child's in-flight hold holds the parent's budget.
        let other = SpendBook::default();
        let held = other.reserve(&l, NOW, &child, None, 600).expect("first");
        assert!(other.check(&l, NOW, &parent, Some(500)).is_err());
        drop(held);
        assert!(other.check(&l, NOW, &parent, Some(500)).is_ok());
    }

    #[test]
    fn first_budget_names_any_usd_budget_a_request_is_under() {
        let c = charge("app", "app", "openai", 1);
        assert_eq!(first_budget(&limits(""), &c, None), None);
        assert_eq!(
            first_budget(&limits(""), &c, Some(5)).as_deref(),
            Some("key app lifetime")
        );
        let child = Charge {
            parent: Some(ParentCharge {
                name: "app",
                id: 1,
                budget: Some(5),
            }),
            key_name: Some("exec-1"),
            ..c
        };
        assert_eq!(
            first_budget(&limits(""), &child, None).as_deref(),
            Some("key app lifetime")
        );
        for (toml, want) in [
            ("[limits]\nmonthly_usd = 1.0\n", "global monthly"),
            (
                "[limits.providers.openai]\ndaily_usd = 1.0\n",
                "provider openai daily",
            ),
            ("[limits.keys.app]\ndaily_usd = 1.0\n", "key app daily"),
        ] {
            assert_eq!(first_budget(&limits(toml), &c, None).as_deref(), Some(want));
        }
        assert_eq!(
            first_budget(&limits("[limits.keys.other]\ndaily_usd = 1.0\n"), &c, None),
            None
        );
    }

    #[test]
    fn exec_key_lifetime_budget() {
        let l = limits("");
        let book = SpendBook::default();
        let c = charge("parent", "exec-1", "openai", 4);
        book.add(&l, NOW, &c, 2_000_000, Some(2_000_000));
        assert!(matches!(
            book.check(&l, NOW, &c, Some(2_000_000)),
            Err(LimitError::KeyBudget { .. })
        ));
        // The name revoked and issued again: another key, which has spent nothing, and whose
        // own budget alerts again.
        let again = Charge {
            key_id: Some(5),
            parent: None,
            ..c
        };
        assert!(book.check(&l, NOW, &again, Some(2_000_000)).is_ok());
        assert_eq!((book.key_lifetime(4), book.key_lifetime(5)), (2_000_000, 0));
        let alerts = book.add(&l, NOW, &again, 1_800_000, Some(2_000_000));
        let levels: Vec<_> = alerts
            .iter()
            .filter(|a| a.period == "lifetime")
            .map(|a| a.level)
            .collect();
        assert_eq!(levels, ["soft"], "{alerts:?}");
    }
}
