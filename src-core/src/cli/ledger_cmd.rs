//! `airlock spend` and `airlock log`: read the ledger in the data dir (the server need not run).

use super::display::{csv_cell as csv, printable};
use super::Ctx;
use crate::keys::store::now_ms;
use crate::ledger::query::{self, Filter, GroupBy, Totals};
use crate::limits::fmt_usd;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct SpendArgs {
    /// Group rows by day, key, model or provider.
    #[arg(long, value_enum)]
    pub by: Option<GroupBy>,
    /// From: today, month, all, 24h, 7d, 2026-11-01, an RFC 3339 time or unix ms (default: month).
    /// Not in the future, and not after --until.
    #[arg(long, default_value = "month")]
    pub since: String,
    /// Until, in the same forms (default: now; the JSON's until_ms says when that was).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this key (its name, or the name its use is attributed to).
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Only blocked requests.
    #[arg(long)]
    pub blocked: bool,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long, default_value = "all")]
    pub since: String,
    /// At most this many rows, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

fn filter(
    since: &str,
    until: Option<&str>,
    key: Option<String>,
    provider: Option<String>,
) -> anyhow::Result<Filter> {
    let now = now_ms();
    let since_ms = query::parse_time(since, now).map_err(anyhow::Error::msg)?;
    let until_ms = until
        .map(|u| query::parse_time(u, now))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    query::check_range(since_ms, until_ms, now)
        .map_err(|e| anyhow::anyhow!("--since {since}: {e}"))?;
    Ok(Filter {
        since_ms: Some(since_ms),
        until_ms,
        account: key,
        provider,
        blocked_only: false,
    })
}

/// Commits rows still waiting in the spool first, so the figures include every request that
/// has finished. Failing that, the figures may lag a little: say so, and go on.
fn catch_up(ctx: &Ctx) -> anyhow::Result<()> {
    let dir = ctx.data_dir()?;
    if let Err(e) = crate::ledger::writer::commit_spooled(&dir) {
        eprintln!("warning: rows not yet committed by the server are left out ({e})");
    }
    Ok(())
}

/// Refuses a `--key` or `--provider` that names nothing Airlock knows, now or in the ledger: a
/// typo would otherwise read as "no spend". A revoked key, or a provider since dropped from the
/// config, still counts while the ledger has rows for it.
fn check_names(ctx: &Ctx, conn: &rusqlite::Connection, f: &Filter) -> anyhow::Result<()> {
    let exists = |sql: &str, name: &str| -> anyhow::Result<bool> {
        Ok(conn.query_row(sql, [name], |r| r.get::<_, bool>(0))?)
    };
    if let Some(key) = &f.account {
        let known = exists(
            "SELECT EXISTS(SELECT 1 FROM airlock_keys WHERE name = ?1)",
            key,
        )? || exists(
            "SELECT EXISTS(SELECT 1 FROM requests WHERE account = ?1)",
            key,
        )? || exists(
            "SELECT EXISTS(SELECT 1 FROM requests WHERE key_name = ?1)",
            key,
        )?;
        if !known {
            anyhow::bail!(
                "no key named {:?} has ever been issued or used; `airlock keys list` shows the keys",
                printable(key)
            );
        }
    }
    if let Some(provider) = &f.provider {
        let config = ctx.load_config().ok();
        let configured = config
            .as_ref()
            .is_some_and(|c| c.provider(provider).is_some());
        if !configured
            && !exists(
                "SELECT EXISTS(SELECT 1 FROM requests WHERE provider = ?1)",
                provider,
            )?
        {
            // The config's providers are a sorted map.
            let names = config
                .map(|c| c.providers.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            anyhow::bail!(
                "no provider named {:?} is configured or in the ledger (configured: {names})",
                printable(provider)
            );
        }
    }
    Ok(())
}

pub fn spend(ctx: &Ctx, a: SpendArgs) -> anyhow::Result<()> {
    let f = filter(&a.since, a.until.as_deref(), a.key, a.provider)?;
    catch_up(ctx)?;
    let store = ctx.key_store()?;
    check_names(ctx, store.connection(), &f)?;
    let report = query::spend(store.connection(), &f, a.by)?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Csv => {
            writeln!(out, "group,requests,input_tokens,output_tokens,cached_tokens,cost_usd,estimated,unknown_cost_requests")?;
            let mut line = |g: &str, t: &Totals| {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{}",
                    csv(g),
                    t.requests,
                    t.input_tokens,
                    t.output_tokens,
                    t.cached_tokens,
                    csv_cost(t),
                    t.estimated,
                    t.unknown_cost_requests
                )
            };
            for r in &report.rows {
                line(&r.group, &r.totals)?;
            }
            line("total", &report.total)?;
        }
        Format::Table => {
            writeln!(
                out,
                "{:<28} {:>9} {:>12} {:>12} {:>14}",
                by_label(a.by),
                "REQUESTS",
                "INPUT",
                "OUTPUT",
                "COST"
            )?;
            let mut line = |g: &str, t: &Totals| {
                writeln!(
                    out,
                    "{:<28} {:>9} {:>12} {:>12} {:>14}",
                    printable(g),
                    t.requests,
                    t.input_tokens,
                    t.output_tokens,
                    cost_cell(t)
                )
            };
            for r in &report.rows {
                line(&r.group, &r.totals)?;
            }
            line("total", &report.total)?;
            let t = &report.total;
            if t.estimated {
                writeln!(
                    out,
                    "* {} request(s) were cut short; their tokens are estimated",
                    t.estimated_requests
                )?;
            }
            if t.unknown_cost_requests > 0 {
                writeln!(
                    out,
                    "? {} request(s) used a model with no known price (not counted as $0)",
                    t.unknown_cost_requests
                )?;
            }
        }
    }
    Ok(())
}

fn by_label(by: Option<GroupBy>) -> &'static str {
    match by {
        None => "",
        Some(GroupBy::Day) => "DAY (UTC)",
        Some(GroupBy::Key) => "KEY",
        Some(GroupBy::Model) => "MODEL",
        Some(GroupBy::Provider) => "PROVIDER",
    }
}

/// Nothing known to price: every billable request used a model with no known price.
fn cost_unknown(t: &Totals) -> bool {
    t.unknown_cost_requests > 0 && t.cost_micros == 0
}

/// The CSV `cost_usd` of a group: the known cost (the `unknown_cost_requests` column counts what
/// it leaves out), or `unknown` when nothing in it is priced, never a $0 in disguise.
fn csv_cost(t: &Totals) -> String {
    if cost_unknown(t) {
        "unknown".to_owned()
    } else {
        fmt_usd(t.cost_micros).trim_start_matches('$').to_owned()
    }
}

/// The cost column: `unknown` when nothing is priced; `*` estimated; `?` some requests unpriced
/// (the figure is what the priced ones cost).
fn cost_cell(t: &Totals) -> String {
    if cost_unknown(t) {
        return if t.estimated { "unknown*" } else { "unknown" }.to_owned();
    }
    let mut c = fmt_usd(t.cost_micros);
    if t.estimated {
        c.push('*');
    }
    if t.unknown_cost_requests > 0 {
        c.push('?');
    }
    c
}

pub fn log(ctx: &Ctx, a: LogArgs) -> anyhow::Result<()> {
    let mut f = filter(&a.since, None, a.key, a.provider)?;
    f.blocked_only = a.blocked;
    catch_up(ctx)?;
    let store = ctx.key_store()?;
    check_names(ctx, store.connection(), &f)?;
    let rows = query::recent(store.connection(), &f, a.limit.min(100_000))?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Json => {
            for r in &rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        Format::Csv => {
            writeln!(out, "id,time,key,provider,method,endpoint,model,status,verdict,reason,input_tokens,output_tokens,cost_usd,estimated")?;
            for r in &rows {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.id,
                    crate::ledger::query::fmt_ms(r.ts),
                    csv(r.account.as_deref().unwrap_or("")),
                    csv(r.provider.as_deref().unwrap_or("")),
                    csv(&r.method),
                    csv(&r.endpoint),
                    csv(r.model.as_deref().unwrap_or("")),
                    r.status,
                    r.verdict,
                    csv(r.reason.as_deref().unwrap_or("")),
                    r.input_tokens,
                    r.output_tokens,
                    match row_cost(r) {
                        RowCost::Usd(c) => fmt_usd(c).trim_start_matches('$').to_owned(),
                        RowCost::Unknown => "unknown".to_owned(),
                        RowCost::NotCharged => String::new(),
                    },
                    r.estimated
                )?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "{:<20} {:<14} {:<10} {:<26} {:>6} {:<9} {:>12} DETAIL",
                "TIME (UTC)", "KEY", "PROVIDER", "MODEL", "STATUS", "VERDICT", "COST"
            )?;
            for r in &rows {
                let detail = match (&r.reason, r.findings.is_empty()) {
                    (Some(reason), _) => reason.clone(),
                    (None, false) => r
                        .findings
                        .iter()
                        .map(|f| format!("{}@{}", f.rule, f.location))
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => r.endpoint.clone(),
                };
                writeln!(
                    out,
                    "{:<20} {:<14} {:<10} {:<26} {:>6} {:<9} {:>12} {}",
                    crate::ledger::query::fmt_ms(r.ts),
                    printable(r.account.as_deref().unwrap_or("-")),
                    printable(r.provider.as_deref().unwrap_or("-")),
                    printable(r.model.as_deref().unwrap_or("-")),
                    r.status,
                    r.verdict,
                    match row_cost(r) {
                        RowCost::Usd(c) =>
                            format!("{}{}", fmt_usd(c), if r.estimated { "*" } else { "" }),
                        RowCost::Unknown => "unknown".to_owned(),
                        RowCost::NotCharged => "-".to_owned(),
                    },
                    printable(&detail)
                )?;
            }
        }
    }
    Ok(())
}

/// What one request cost, as `log` shows it.
#[derive(Debug, PartialEq)]
enum RowCost {
    Usd(i64),
    /// Billed upstream, but its model has no known price.
    Unknown,
    /// Blocked, or failed before anything was billed: nothing to charge.
    NotCharged,
}

fn row_cost(r: &query::RequestRow) -> RowCost {
    match (r.verdict.as_str(), r.cost_micros) {
        ("blocked", _) => RowCost::NotCharged,
        (_, Some(c)) => RowCost::Usd(c),
        ("failed", None) => RowCost::NotCharged,
        (_, None) => RowCost::Unknown,
    }
}
