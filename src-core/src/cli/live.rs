//! Commands that talk to a running `airlock serve` through its admin API (`tail`, `limits`), or
//! flip state both the server and the CLI share (`pause`, `resume`, `admin-token`), and
//! [`apply_now`], which every command that changes that state calls once it is written.

use super::display::printable;
use super::Ctx;
use crate::config::Config;
use crate::keys::Vault;
use crate::limits::fmt_usd;
use crate::proxy::state::admin_token_get_or_create;
use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub fn admin_token(ctx: &Ctx) -> anyhow::Result<()> {
    let config = ctx.load_config()?;
    let token = admin_token_get_or_create(&Vault::new(&config.keyring_service))?;
    println!("{}", token.expose_secret());
    Ok(())
}

pub fn set_paused(ctx: &Ctx, paused: bool) -> anyhow::Result<()> {
    ctx.key_store()?.set_paused(paused)?;
    // The switch is in the database now; a config that cannot be read only means the server
    // cannot be asked to apply it at once.
    let applied = match ctx.load_config() {
        Ok(config) => apply_now(&config),
        Err(e) => {
            eprintln!("airlock: warning: cannot read the config to find the server: {e:#}");
            Applied::Unconfirmed
        }
    };
    if paused {
        println!("Airlock is paused: every request is refused until `airlock resume` ({applied})");
    } else {
        println!("Airlock is no longer paused ({applied})");
    }
    Ok(())
}

/// Whether a change the CLI just wrote to the database is in force in a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Applied {
    /// The server at the configured address applied it before it answered.
    InForce,
    /// No server listens at this URL; `airlock serve` reads the database when it starts.
    NoServer(String),
    /// A server may be running but did not confirm (a warning said why); it applies the change
    /// at its next poll of the database, within `POLL_INTERVAL`.
    Unconfirmed,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Applied::InForce => f.write_str("in force now"),
            Applied::NoServer(url) => {
                write!(f, "no server at {url}; applies when `airlock serve` starts")
            }
            Applied::Unconfirmed => f.write_str(
                "not confirmed by the server; a running server applies it within a second",
            ),
        }
    }
}

/// How long the CLI waits for a running server to apply a change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the server at the configured address to apply the database's changes now
/// (`POST /_airlock/sync`), so a pause, resume or revoke is in force when the CLI returns rather
/// than at the server's next poll. Never fails the command: no server is normal, anything else
/// is a warning on stderr.
pub(super) fn apply_now(config: &Config) -> Applied {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        // A server on 0.0.0.0 or [::] is reachable on loopback.
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    let base = format!("http://{addr}");
    if addr.port() == 0 {
        // Port 0 is chosen at start; no CLI can know which port that server got.
        return Applied::NoServer(base);
    }
    let outcome = runtime().and_then(|rt| {
        rt.block_on(async {
            let req =
                hyper::Request::post(format!("{base}/_airlock/sync")).body(Empty::<Bytes>::new())?;
            let client = Client::builder(TokioExecutor::new()).build_http();
            match tokio::time::timeout(APPLY_TIMEOUT, client.request(req)).await {
                Err(_) => bail!("no answer within {APPLY_TIMEOUT:?}"),
                Ok(Err(e)) if e.is_connect() => Ok(None),
                Ok(Err(e)) => Err(e.into()),
                Ok(Ok(resp)) => Ok(Some(resp.status())),
            }
        })
    });
    match outcome {
        Ok(Some(status)) if status.is_success() => Applied::InForce,
        Ok(None) => Applied::NoServer(base),
        Ok(Some(status)) => {
            eprintln!("airlock: warning: the server at {base} answered {status} when asked to apply the change now");
            Applied::Unconfirmed
        }
        Err(e) => {
            eprintln!(
                "airlock: warning: cannot ask the server at {base} to apply the change now: {e:#}"
            );
            Applied::Unconfirmed
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// GETs an admin endpoint of the running server.
async fn admin_get(
    config: &Config,
    path: &str,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let token = admin_token_get_or_create(&Vault::new(&config.keyring_service))?;
    let url = format!("{}/_airlock/{path}", config.base_url());
    let req = hyper::Request::get(&url)
        .header("authorization", format!("Bearer {}", token.expose_secret()))
        .body(Empty::<Bytes>::new())?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.with_context(|| {
        format!(
            "cannot reach airlock at {} (is `airlock serve` running?)",
            config.base_url()
        )
    })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        bail!(
            "admin API answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(resp)
}

pub fn limits(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let config = ctx.load_config()?;
    let v: Value = runtime()?.block_on(async {
        let resp = admin_get(&config, "limits").await?;
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(serde_json::from_slice(&body)?)
    })?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let money = |v: &Value| v.as_i64().map(fmt_usd).unwrap_or_else(|| "-".into());
    writeln!(out, "paused: {}", v["paused"].as_bool().unwrap_or(false))?;
    writeln!(
        out,
        "{:<28} {:>12} {:>12} {:>12} {:>12}",
        "BUDGET", "TODAY", "DAILY", "THIS MONTH", "MONTHLY"
    )?;
    for b in v["budgets"].as_array().into_iter().flatten() {
        let scope = match (&b["scope"]["scope"], &b["scope"]["name"]) {
            (Value::String(s), Value::String(n)) => format!("{s} {}", printable(n)),
            (Value::String(s), _) => s.clone(),
            _ => "?".into(),
        };
        writeln!(
            out,
            "{:<28} {:>12} {:>12} {:>12} {:>12}",
            scope,
            money(&b["daily_spent_micros"]),
            money(&b["daily_limit_micros"]),
            money(&b["monthly_spent_micros"]),
            money(&b["monthly_limit_micros"])
        )?;
    }
    writeln!(
        out,
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10} {:>10}  STATE",
        "KEY", "TODAY", "DAILY", "LIFETIME", "LIFE BUDGET", "RPM", "TOK/MIN", "TPM"
    )?;
    for k in v["keys"].as_array().into_iter().flatten() {
        let num = |v: &Value| {
            v.as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        writeln!(
            out,
            "{:<28} {:>12} {:>12} {:>12} {:>12} {:>8} {:>10} {:>10}  {}",
            printable(k["key"].as_str().unwrap_or("?")),
            money(&k["daily_spent_micros"]),
            money(&k["daily_limit_micros"]),
            money(&k["lifetime_spent_micros"]),
            money(&k["lifetime_limit_micros"]),
            num(&k["rpm"]),
            num(&k["tokens_last_minute"]),
            num(&k["tpm"]),
            key_state(k)
        )?;
    }
    Ok(())
}

/// A key's state in `airlock limits`: paused (with the reason), exhausted (which budget is spent,
/// so every request is refused until it resets or is raised), or active.
fn key_state(k: &Value) -> String {
    if let Some(reason) = k["paused"].as_str() {
        return format!("paused: {}", printable(reason));
    }
    let spent = |what: &'static str| {
        let limit = k[format!("{what}_limit_micros")].as_i64()?;
        let spent = k[format!("{what}_spent_micros")].as_i64().unwrap_or(0);
        (spent >= limit).then_some(what)
    };
    match ["lifetime", "monthly", "daily"].into_iter().find_map(spent) {
        Some(what) => format!("exhausted: {what} budget spent"),
        None => "active".to_owned(),
    }
}

/// Prints live events as they happen, one line each (`--json` for the raw events).
pub fn tail(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let config = ctx.load_config()?;
    runtime()?.block_on(async {
        let resp = admin_get(&config, "events").await?;
        eprintln!(
            "following events from {} (Ctrl-C to stop)",
            config.base_url()
        );
        let mut body = resp.into_body();
        // Airlock's own event stream: `event:` and one `data:` line per event, `\n\n` between.
        let mut pending = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                let Some(text) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let mut out = std::io::stdout().lock();
                if json {
                    writeln!(out, "{text}")?;
                } else if let Ok(v) = serde_json::from_str::<Value>(text) {
                    writeln!(out, "{}", describe(&v))?;
                }
                out.flush()?;
            }
        }
        anyhow::Ok(())
    })
}

fn describe(v: &Value) -> String {
    let s = |k: &str| printable(v[k].as_str().unwrap_or("-")).into_owned();
    let time = v["ts"]
        .as_i64()
        .map(crate::ledger::query::fmt_ms)
        .unwrap_or_default();
    let body = match v["type"].as_str().unwrap_or("?") {
        "request_finished" => format!(
            "{:<9} {} {} {} {} in={} out={} {}{}",
            s("verdict"),
            s("account"),
            s("provider"),
            s("model"),
            v["status"],
            v["input_tokens"],
            v["output_tokens"],
            v["cost_micros"]
                .as_i64()
                .map(fmt_usd)
                .unwrap_or_else(|| "cost unknown".into()),
            if v["estimated"].as_bool() == Some(true) {
                " (estimated)"
            } else {
                ""
            }
        ),
        "request_blocked" => format!(
            "BLOCKED   {} {} {}: {}",
            s("account"),
            s("provider"),
            v["status"],
            s("message")
        ),
        "budget_alert" => format!(
            "BUDGET    {} {} {}: {} of {}",
            s("scope"),
            s("period"),
            s("level"),
            v["spent_micros"].as_i64().map(fmt_usd).unwrap_or_default(),
            v["limit_micros"].as_i64().map(fmt_usd).unwrap_or_default()
        ),
        "anomaly" => format!(
            "ANOMALY   {} {}: {}{}",
            s("account"),
            s("kind"),
            s("detail"),
            if v["paused"].as_bool() == Some(true) {
                " (key paused)"
            } else {
                ""
            }
        ),
        "key_paused" => format!("PAUSED    key {}: {}", s("key"), s("reason")),
        "key_resumed" => format!("RESUMED   key {}", s("key")),
        "paused" => "PAUSED    all requests".to_owned(),
        "resumed" => "RESUMED   all requests".to_owned(),
        "config_reloaded" => format!("CONFIG    {}", s("message")),
        other => format!("{} {v}", printable(other)),
    };
    format!("{time} {body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `airlock tail` printed a client's model name raw, so one holding escape
    /// sequences set the terminal's title and cleared the screen.
    #[test]
    fn tail_lines_escape_control_characters() {
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\nfake row";
        let finished = serde_json::json!({"type": "request_finished", "ts": 0, "verdict": "allowed",
            "account": "app", "provider": "openai", "model": hostile, "status": 200,
            "input_tokens": 1, "output_tokens": 1, "cost_micros": null});
        let blocked = serde_json::json!({"type": "request_blocked", "ts": 0, "account": hostile,
            "provider": "openai", "status": 400, "message": hostile});
        for ev in [finished, blocked] {
            let line = describe(&ev);
            assert!(!line.chars().any(char::is_control), "{line:?}");
            assert!(line.contains("\\u{1b}]0;pwned"), "{line}");
        }
    }
}
