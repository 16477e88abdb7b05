//! Budget counters: spend per UTC day and month for the whole instance, each provider and each
//! account, plus the lifetime spend of keys that carry their own budget (`airlock exec --budget`).

use super::calendar::{periods, Periods};
use super::{fmt_usd, LimitError};
use crate::config::{Budget, Limits};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

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
}

#[derive(Default)]
pub struct SpendBook {
    inner: Mutex<Book>,
}

/// What one request is charged to.
pub struct Charge<'a> {
    pub account: Option<&'a str>,
    pub provider: Option<&'a str>,
    /// The key's own name (not its parent's), for per-key lifetime budgets.
    pub key_name: Option<&'a str>,
    /// The key's id, which its lifetime spend is counted under.
    pub key_id: Option<i64>,
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
        let Ok(mut b) = self.inner.lock() else { return };
        b.roll(&periods(now_ms));
        for (rows, day) in [(month, false), (today, true)] {
            for (account, provider, micros) in rows {
                let c = Charge {
                    account: account.as_deref(),
                    provider: provider.as_deref(),
                    key_name: None,
                    key_id: None,
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

    /// Refuses the request if any budget that applies to it is used up.
    pub fn check(
        &self,
        limits: &Limits,
        now_ms: i64,
        c: &Charge<'_>,
        key_budget: Option<i64>,
    ) -> Result<(), LimitError> {
        let p = periods(now_ms);
        let Ok(mut b) = self.inner.lock() else {
            return Ok(());
        };
        b.roll(&p);
        if let (Some(limit), Some(key), Some(id)) = (key_budget, c.key_name, c.key_id) {
            let spent = b.key_lifetime.get(&id).copied().unwrap_or(0);
            if spent >= limit {
                return Err(LimitError::KeyBudget {
                    key: key.to_owned(),
                    limit: fmt_usd(limit),
                    spent: fmt_usd(spent),
                });
            }
        }
        for scope in scopes(c) {
            let budget = budget_for(limits, &scope);
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
            }
        }
        Ok(())
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
        let Ok(mut b) = self.inner.lock() else {
            return Vec::new();
        };
        b.roll(&p);
        let mut alerts = Vec::new();
        if let (Some(key), Some(id)) = (c.key_name, c.key_id) {
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
            if let Some(limit) = key_budget {
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
        let Ok(mut b) = self.inner.lock() else {
            return (0, 0);
        };
        b.roll(&periods(now_ms));
        (
            b.day_sums.get(scope).copied().unwrap_or(0),
            b.month_sums.get(scope).copied().unwrap_or(0),
        )
    }

    /// What the key with this id has spent over its life.
    pub fn key_lifetime(&self, key_id: i64) -> i64 {
        self.inner
            .lock()
            .ok()
            .and_then(|b| b.key_lifetime.get(&key_id).copied())
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

    const NOW: i64 = 1_790_000_000_000;

    #[test]
    fn key_budget_blocks_once_used_and_alerts_once_at_the_soft_share() {
        let l = limits("[limits.keys.app]\ndaily_usd = 0.01\n");
        let book = SpendBook::default();
        let c = Charge {
            account: Some("app"),
            provider: Some("openai"),
            key_name: Some("app"),
            key_id: Some(1),
        };
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
        let other = Charge {
            account: Some("other"),
            provider: Some("openai"),
            key_name: Some("other"),
            key_id: Some(2),
        };
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
        let ant = Charge {
            account: Some("b"),
            provider: Some("anthropic"),
            key_name: Some("b"),
            key_id: Some(3),
        };
        assert!(matches!(
            book.check(&l, NOW, &ant, None),
            Err(LimitError::Budget { .. })
        ));
        let oai = Charge {
            account: Some("b"),
            provider: Some("openai"),
            key_name: Some("b"),
            key_id: Some(3),
        };
        assert!(book.check(&l, NOW, &oai, None).is_ok());
        book.add(&l, NOW, &oai, 500_000, None);
        assert!(
            book.check(&l, NOW, &oai, None).is_err(),
            "global monthly budget reached"
        );
    }

    #[test]
    fn exec_key_lifetime_budget() {
        let l = limits("");
        let book = SpendBook::default();
        let c = Charge {
            account: Some("parent"),
            provider: Some("openai"),
            key_name: Some("exec-1"),
            key_id: Some(4),
        };
        book.add(&l, NOW, &c, 2_000_000, Some(2_000_000));
        assert!(matches!(
            book.check(&l, NOW, &c, Some(2_000_000)),
            Err(LimitError::KeyBudget { .. })
        ));
        // The name revoked and issued again: another key, which has spent nothing, and whose
        // own budget alerts again.
        let again = Charge {
            key_id: Some(5),
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
