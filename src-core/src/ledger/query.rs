//! Read-side queries: spend totals, recent requests, and sums that seed the limit counters.

use super::Verdict;
use rusqlite::{params_from_iter, Connection, ToSql};
use serde::Serialize;

/// What spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Day,
    Key,
    Model,
    Provider,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            GroupBy::Day => "strftime('%Y-%m-%d', ts / 1000, 'unixepoch')",
            GroupBy::Key => "COALESCE(account, '-')",
            GroupBy::Model => "COALESCE(model, '-')",
            GroupBy::Provider => "COALESCE(provider, '-')",
        }
    }
}

/// Sums over a set of requests. `cost_usd` covers requests with a known price; requests whose
/// model has no known price are counted in `unknown_cost_requests`, never priced at $0.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_micros: i64,
    pub cost_usd: f64,
    /// True when any figure here rests on an estimate (a stream cut short).
    pub estimated: bool,
    pub estimated_requests: u64,
    pub unknown_cost_requests: u64,
    pub blocked_requests: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupRow {
    pub group: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpendReport {
    pub since_ms: i64,
    pub until_ms: i64,
    pub total: Totals,
    pub by: Option<GroupBy>,
    pub rows: Vec<GroupRow>,
}

impl Serialize for GroupBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            GroupBy::Day => "day",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
        })
    }
}

const SUMS: &str =
    "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cache_write_tokens),
    SUM(reasoning_tokens), SUM(COALESCE(cost_micros, 0)), SUM(estimated),
    SUM(CASE WHEN cost_micros IS NULL AND verdict NOT IN ('blocked', 'failed') THEN 1 ELSE 0 END),
    SUM(CASE WHEN verdict = 'blocked' THEN 1 ELSE 0 END)";

fn totals_from(row: &rusqlite::Row<'_>, offset: usize) -> rusqlite::Result<Totals> {
    let g = |i: usize| -> rusqlite::Result<i64> {
        Ok(row.get::<_, Option<i64>>(offset + i)?.unwrap_or(0))
    };
    let cost_micros = g(6)?;
    let estimated_requests = g(7)? as u64;
    Ok(Totals {
        requests: g(0)? as u64,
        input_tokens: g(1)? as u64,
        output_tokens: g(2)? as u64,
        cached_tokens: g(3)? as u64,
        cache_write_tokens: g(4)? as u64,
        reasoning_tokens: g(5)? as u64,
        cost_micros,
        cost_usd: cost_micros as f64 / 1e6,
        estimated: estimated_requests > 0,
        estimated_requests,
        unknown_cost_requests: g(8)? as u64,
        blocked_requests: g(9)? as u64,
    })
}

/// Filters shared by spend and log queries.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub account: Option<String>,
    pub provider: Option<String>,
    pub blocked_only: bool,
}

impl Filter {
    fn where_clause(&self) -> (String, Vec<Box<dyn ToSql>>) {
        let mut conds = vec!["1 = 1".to_owned()];
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        if let Some(s) = self.since_ms {
            conds.push(format!("ts >= ?{}", args.len() + 1));
            args.push(Box::new(s));
        }
        if let Some(u) = self.until_ms {
            conds.push(format!("ts < ?{}", args.len() + 1));
            args.push(Box::new(u));
        }
        if let Some(a) = &self.account {
            conds.push(format!(
                "(account = ?{n} OR key_name = ?{n})",
                n = args.len() + 1
            ));
            args.push(Box::new(a.clone()));
        }
        if let Some(p) = &self.provider {
            conds.push(format!("provider = ?{}", args.len() + 1));
            args.push(Box::new(p.clone()));
        }
        if self.blocked_only {
            conds.push("verdict = 'blocked'".to_owned());
        }
        (conds.join(" AND "), args)
    }
}

pub fn spend(
    conn: &Connection,
    filter: &Filter,
    by: Option<GroupBy>,
) -> rusqlite::Result<SpendReport> {
    let (cond, args) = filter.where_clause();
    let total = conn.query_row(
        &format!("SELECT {SUMS} FROM requests WHERE {cond}"),
        params_from_iter(args.iter()),
        |r| totals_from(r, 0),
    )?;
    let mut rows = Vec::new();
    if let Some(by) = by {
        let col = by.column();
        let mut stmt = conn.prepare(&format!(
            "SELECT {col} AS g, {SUMS} FROM requests WHERE {cond} GROUP BY g ORDER BY g"
        ))?;
        let it = stmt.query_map(params_from_iter(args.iter()), |r| {
            Ok(GroupRow {
                group: r.get::<_, String>(0)?,
                totals: totals_from(r, 1)?,
            })
        })?;
        for row in it {
            rows.push(row?);
        }
    }
    Ok(SpendReport {
        since_ms: filter.since_ms.unwrap_or(0),
        // No end given: the report runs until now, not until the end of time.
        until_ms: filter.until_ms.unwrap_or_else(crate::keys::store::now_ms),
        total,
        by,
        rows,
    })
}

/// One ledger row for display (no prompt text unless it was stored, after redaction).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    pub id: String,
    pub ts: i64,
    pub account: Option<String>,
    pub provider: Option<String>,
    pub method: String,
    pub endpoint: String,
    pub model: Option<String>,
    pub streamed: bool,
    pub status: u16,
    pub verdict: String,
    pub reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: Option<i64>,
    pub estimated: bool,
    pub body_end: Option<String>,
    pub total_ms: f64,
    pub overhead_ms: f64,
    pub findings: Vec<FindingRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingRow {
    pub rule: String,
    pub kind: String,
    pub location: String,
    pub action: String,
}

pub fn recent(
    conn: &Connection,
    filter: &Filter,
    limit: usize,
) -> rusqlite::Result<Vec<RequestRow>> {
    let (cond, args) = filter.where_clause();
    let mut stmt = conn.prepare(&format!(
        "SELECT id, ts, account, provider, method, endpoint, model, streamed, status, verdict, reason,
                input_tokens, output_tokens, cost_micros, estimated, body_end, total_ms, overhead_ms
         FROM requests WHERE {cond} ORDER BY ts DESC, rowid DESC LIMIT {limit}"
    ))?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
        Ok(RequestRow {
            id: r.get(0)?,
            ts: r.get(1)?,
            account: r.get(2)?,
            provider: r.get(3)?,
            method: r.get(4)?,
            endpoint: r.get(5)?,
            model: r.get(6)?,
            streamed: r.get(7)?,
            status: r.get(8)?,
            verdict: r.get(9)?,
            reason: r.get(10)?,
            input_tokens: r.get::<_, i64>(11)? as u64,
            output_tokens: r.get::<_, i64>(12)? as u64,
            cost_micros: r.get(13)?,
            estimated: r.get(14)?,
            body_end: r.get(15)?,
            total_ms: r.get(16)?,
            overhead_ms: r.get(17)?,
            findings: Vec::new(),
        })
    })?;
    let mut out: Vec<RequestRow> = rows.collect::<Result<_, _>>()?;
    let mut fstmt = conn.prepare_cached(
        "SELECT rule, kind, location, action FROM findings WHERE request_id = ?1",
    )?;
    for row in &mut out {
        row.findings = fstmt
            .query_map([&row.id], |r| {
                Ok(FindingRow {
                    rule: r.get(0)?,
                    kind: r.get(1)?,
                    location: r.get(2)?,
                    action: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

/// (account, provider, micro-dollars) spent: one row of [`cost_since`].
pub type CostRow = (Option<String>, Option<String>, i64);

/// What one key has spent since it was issued (`?1` its name, `?2` its creation time):
/// searched through the time index from there on, as no index serves `key_name`.
pub(crate) const KEY_SPEND_SINCE_SQL: &str =
    "SELECT COALESCE(SUM(cost_micros), 0) FROM requests WHERE ts >= ?2 AND key_name = ?1";

/// A top-level key's spend: its own rows and its child keys' (attributed to it as `account`).
pub(crate) const ACCOUNT_SPEND_SINCE_SQL: &str =
    "SELECT COALESCE(SUM(cost_micros), 0) FROM requests WHERE account = ?1 AND ts >= ?2";

pub(crate) const COST_SINCE_SQL: &str = "SELECT account, provider, SUM(COALESCE(cost_micros, 0)) \
    FROM requests WHERE ts >= ?1 GROUP BY account, provider";

/// Cost spent since `since_ms`, grouped by (account, provider), to seed the budget counters.
pub fn cost_since(conn: &Connection, since_ms: i64) -> rusqlite::Result<Vec<CostRow>> {
    let mut stmt = conn.prepare(COST_SINCE_SQL)?;
    let rows = stmt.query_map([since_ms], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get::<_, Option<i64>>(2)?.unwrap_or(0),
        ))
    })?;
    rows.collect()
}

/// A point in time for `--since`/`--until`: `today`, `month` (UTC starts), a duration ago
/// (`24h`, `7d`), a date (`2026-11-21`), an RFC 3339 time, or unix milliseconds.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    let p = crate::limits::calendar::periods(now_ms);
    match t {
        "today" => return Ok(p.day_start_ms),
        "month" => return Ok(p.month_start_ms),
        "all" => return Ok(0),
        _ => {}
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{t:?} is out of range"));
    }
    if let Ok(d) = humantime::parse_duration(t) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    let with_time = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else {
        t.to_owned()
    };
    humantime::parse_rfc3339_weak(&with_time)
        .ok()
        .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("{t:?} is not a time: use today, month, all, 24h, 7d, 2026-11-21 or an RFC 3339 time"))
}

/// Checks a `--since`/`--until` range (unix ms): `since` not in the future and not after
/// `until`. Either would select nothing while looking like an answer ("$0 spent").
pub fn check_range(since_ms: i64, until_ms: Option<i64>, now_ms: i64) -> Result<(), String> {
    if since_ms > now_ms {
        return Err(format!("since ({}) is in the future", fmt_ms(since_ms)));
    }
    match until_ms {
        Some(u) if since_ms > u => Err(format!(
            "since ({}) is after until ({})",
            fmt_ms(since_ms),
            fmt_ms(u)
        )),
        _ => Ok(()),
    }
}

/// A Unix-milliseconds time as RFC 3339, to the second, for people to read.
pub fn fmt_ms(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Whether a verdict counts as spend-bearing (it went upstream).
pub fn went_upstream(v: Verdict) -> bool {
    !matches!(v, Verdict::Blocked)
}
