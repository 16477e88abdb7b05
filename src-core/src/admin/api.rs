//! Admin endpoints. Reads go to SQLite on a blocking thread after the ledger writer has flushed,
//! so what the API reports includes the request that just finished.

use super::events::Event;
use crate::config::Config;
use crate::keys::store::now_ms;
use crate::keys::IssueRequest;
use crate::ledger::query::{self, Filter, GroupBy};
use crate::limits::budget::Scope;
use crate::proxy::body::{self, ProxyBody};
use crate::proxy::state::State;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn json(status: StatusCode, v: &impl Serialize) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(body::full(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn not_found(path: &str) -> Response<ProxyBody> {
    error(
        StatusCode::NOT_FOUND,
        "airlock_admin_not_found",
        &format!("no admin endpoint {path:?}; see docs/admin-api.yaml"),
    )
}

/// The methods each admin endpoint answers, for a 405 and its `Allow` header.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["status" | "spend" | "requests" | "limits" | "events" | "metrics"] => Some("GET"),
        ["keys"] => Some("GET, POST"),
        ["keys", _, "revoke" | "pause" | "resume"] | ["pause"] | ["resume"] | ["sync"] => {
            Some("POST")
        }
        _ => None,
    }
}

fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Response<ProxyBody> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "airlock_admin_method_not_allowed",
        &format!("{method} is not allowed on {path:?}; use {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn bad_query(message: &str) -> Response<ProxyBody> {
    error(StatusCode::BAD_REQUEST, "airlock_admin_bad_query", message)
}

/// Refuses a query parameter the endpoint does not take, rather than ignoring a typo.
fn known_params(query: &str, allowed: &[&str]) -> Result<(), String> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = percent_decode(pair.split_once('=').map_or(pair, |(k, _)| k));
        if !allowed.contains(&name.as_str()) {
            return Err(format!(
                "unknown query parameter {name:?}; this endpoint takes {}",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// `limit` for `/requests`: a whole number from 1 to [`MAX_REQUESTS_LIMIT`] (default 100).
fn requests_limit(value: Option<&str>) -> Result<usize, String> {
    match value {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_REQUESTS_LIMIT).contains(n))
            .ok_or_else(|| {
                format!("limit={v:?}: use a whole number from 1 to {MAX_REQUESTS_LIMIT}")
            }),
    }
}

/// `blocked` for `/requests`: `1`/`true` or `0`/`false`.
fn blocked_only(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(v) => Err(format!("blocked={v:?}: use true, false, 1 or 0")),
    }
}

const MAX_REQUESTS_LIMIT: usize = 1000;

fn internal(e: impl std::fmt::Display) -> Response<ProxyBody> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "airlock_admin_internal",
        &e.to_string(),
    )
}

pub async fn route(
    state: &Arc<State>,
    config: &Config,
    req: Request<Incoming>,
    path: &str,
) -> Response<ProxyBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let q = |name: &str| query_value(&query, name);
    let method = req.method().clone();
    let segments: Vec<&str> = path.split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["status"]) => status(state, config).await,
        (&Method::GET, ["spend"]) => {
            if let Err(m) = known_params(&query, &["since", "until", "key", "provider", "by"]) {
                return bad_query(&m);
            }
            let by = match q("by").as_deref() {
                None | Some("") => None,
                Some("day") => Some(GroupBy::Day),
                Some("key") => Some(GroupBy::Key),
                Some("model") => Some(GroupBy::Model),
                Some("provider") => Some(GroupBy::Provider),
                Some(other) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "airlock_admin_bad_query",
                        &format!("by={other:?}: use day, key, model or provider"),
                    )
                }
            };
            let filter = match filter_from(&q) {
                Ok(f) => f,
                Err(m) => return error(StatusCode::BAD_REQUEST, "airlock_admin_bad_query", &m),
            };
            read(state, move |c| query::spend(c, &filter, by)).await
        }
        (&Method::GET, ["requests"]) => {
            let params = ["since", "until", "key", "provider", "blocked", "limit"];
            let checked = known_params(&query, &params).and_then(|()| {
                let mut filter = filter_from(&q)?;
                filter.blocked_only = blocked_only(q("blocked").as_deref())?;
                Ok((filter, requests_limit(q("limit").as_deref())?))
            });
            match checked {
                Ok((filter, limit)) => read(state, move |c| query::recent(c, &filter, limit)).await,
                Err(m) => bad_query(&m),
            }
        }
        (&Method::GET, ["limits"]) => limits(state, config).await,
        (&Method::GET, ["keys"]) => match state.with_store(|s| s.list(false)).await {
            Ok(keys) => json(StatusCode::OK, &keys),
            Err(e) => internal(e),
        },
        (&Method::POST, ["keys"]) => issue(state, config, req).await,
        (&Method::POST, ["keys", name, action]) => {
            let name = (*name).to_owned();
            let result = match *action {
                "revoke" => {
                    let n = name.clone();
                    state.with_store(move |s| s.revoke(&n).map(|n| n > 0)).await
                }
                "pause" => {
                    state
                        .set_key_paused(&name, Some("paused by the user"))
                        .await
                }
                "resume" => state.set_key_paused(&name, None).await,
                _ => return not_found(path),
            };
            match result {
                Ok(changed) => {
                    if *action == "revoke" {
                        if let Err(e) = state.refresh_keys().await {
                            tracing::warn!("key refresh after revoke failed: {e}");
                        }
                    }
                    json(
                        StatusCode::OK,
                        &json!({"key": name, "action": action, "changed": changed}),
                    )
                }
                Err(crate::proxy::state::StateError::Store(crate::keys::StoreError::NotFound(
                    n,
                ))) => error(
                    StatusCode::NOT_FOUND,
                    "airlock_admin_no_such_key",
                    &format!("no live key named {n:?}"),
                ),
                Err(e) => internal(e),
            }
        }
        (&Method::POST, ["pause"]) | (&Method::POST, ["resume"]) => {
            let paused = segments[0] == "pause";
            match state.set_paused(paused).await {
                Ok(()) => json(StatusCode::OK, &json!({"paused": paused})),
                Err(e) => internal(e),
            }
        }
        (&Method::GET, ["events"]) => events(state),
        (&Method::GET, ["metrics"]) => metrics(state),
        _ => match allowed_methods(&segments) {
            Some(allow) => method_not_allowed(&method, path, allow),
            None => not_found(path),
        },
    }
}

/// `POST /_airlock/sync`: applies the database's changes (pause switch, key pauses, revocations,
/// provider keys) now, and answers once they are in force.
pub async fn sync(state: &Arc<State>) -> Response<ProxyBody> {
    match state.sync_changes().await {
        Ok(()) => json(StatusCode::OK, &json!({"synced": true})),
        Err(e) => internal(e),
    }
}

/// Runs a read query after everything queued for the ledger is committed.
async fn read<T: Serialize + Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Response<ProxyBody> {
    let ledger = state.ledger.clone();
    let flushed = tokio::task::spawn_blocking(move || ledger.flush(Duration::from_secs(2))).await;
    if !matches!(flushed, Ok(true)) {
        tracing::warn!("ledger flush before an admin read timed out; figures may lag");
    }
    match state.with_store(move |s| Ok(f(s.connection())?)).await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => internal(e),
    }
}

fn filter_from(q: &dyn Fn(&str) -> Option<String>) -> Result<Filter, String> {
    let now = now_ms();
    let since_ms = q("since").map(|s| query::parse_time(&s, now)).transpose()?;
    let until_ms = q("until").map(|s| query::parse_time(&s, now)).transpose()?;
    if let Some(since) = since_ms {
        query::check_range(since, until_ms, now)?;
    }
    Ok(Filter {
        since_ms,
        until_ms,
        account: q("key").filter(|s| !s.is_empty()),
        provider: q("provider").filter(|s| !s.is_empty()),
        blocked_only: false,
    })
}

async fn status(state: &Arc<State>, config: &Config) -> Response<ProxyBody> {
    let now = now_ms();
    let (day, month) = state.spend.spent(now, &Scope::Global);
    let keys = state
        .with_store(|s| s.list(false))
        .await
        .map(|k| k.len())
        .unwrap_or(0);
    let stats = &state.ledger.stats;
    use std::sync::atomic::Ordering::Relaxed;
    json(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": format!("http://{}", state.listen),
            "paused": state.is_paused(),
            "uptime_s": state.started.elapsed().as_secs(),
            "in_flight": state.metrics.in_flight.load(Relaxed),
            "keys": keys,
            "spend_today_micros": day,
            "spend_month_micros": month,
            "providers": config.providers.values().map(|p| json!({
                "name": p.name,
                "base_url": format!("http://{}/{}{}", state.listen, p.name, p.sdk_suffix),
                "upstream": p.upstream.to_string(),
            })).collect::<Vec<_>>(),
            "ledger": {
                "written": stats.written.load(Relaxed),
                "commits": stats.commits.load(Relaxed),
                "dropped": stats.dropped.load(Relaxed),
                "failed_batches": stats.failed_batches.load(Relaxed),
            },
        }),
    )
}

async fn limits(state: &Arc<State>, config: &Config) -> Response<ProxyBody> {
    let now = now_ms();
    let l = &config.limits;
    let budget_row = |scope: Scope, b: crate::config::Budget| -> Value {
        let (day, month) = state.spend.spent(now, &scope);
        json!({
            "scope": scope,
            "daily_limit_micros": b.daily_micros,
            "daily_spent_micros": day,
            "monthly_limit_micros": b.monthly_micros,
            "monthly_spent_micros": month,
        })
    };
    let mut budgets = vec![budget_row(Scope::Global, l.global)];
    for (p, b) in &l.providers {
        budgets.push(budget_row(Scope::Provider(p.clone()), *b));
    }
    let keys = state
        .with_store(|s| s.list(false))
        .await
        .unwrap_or_default();
    let instant = std::time::Instant::now();
    let mut per_key = Vec::new();
    for k in keys
        .iter()
        .filter(|k| k.parent.is_none() || k.budget_micros.is_some() || k.rpm.is_some())
    {
        let kl = l.for_key(&k.name);
        let (day, month) = state.spend.spent(now, &Scope::Key(k.name.clone()));
        per_key.push(json!({
            "key": k.name,
            "paused": k.paused_reason,
            "daily_limit_micros": kl.budget.daily_micros,
            "daily_spent_micros": day,
            "monthly_limit_micros": kl.budget.monthly_micros,
            "monthly_spent_micros": month,
            "lifetime_limit_micros": k.budget_micros,
            "lifetime_spent_micros": k.budget_micros.map(|_| state.spend.key_lifetime(k.id)),
            "rpm": k.rpm.or(kl.rpm),
            "tpm": kl.tpm,
            "tokens_last_minute": state.rates.tokens_last_minute(&k.name, instant),
            "max_tokens": kl.max_tokens,
            "models_allow": kl.models_allow.patterns(),
            "models_deny": kl.models_deny.patterns(),
        }));
    }
    json(
        StatusCode::OK,
        &json!({
            "paused": state.is_paused(),
            "soft_alert": l.soft_alert,
            "budgets": budgets,
            "keys": per_key,
            "anomaly": {
                "enabled": config.anomaly.enabled,
                "auto_pause": config.anomaly.auto_pause,
                "window_s": config.anomaly.window.as_secs(),
                "repeat_threshold": config.anomaly.repeat_threshold,
                "variation_threshold": config.anomaly.variation_threshold,
                "burst_factor": config.anomaly.burst_factor,
                "burst_min_requests": config.anomaly.burst_min_requests,
            },
        }),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueBody {
    name: String,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    expires: Option<String>,
}

async fn issue(state: &Arc<State>, config: &Config, req: Request<Incoming>) -> Response<ProxyBody> {
    let bytes: Bytes = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "airlock_admin_bad_body",
                "could not read the body",
            )
        }
    };
    let body: IssueBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "airlock_admin_bad_body",
                &format!("expected {{\"name\", \"providers\"?, \"models\"?, \"expires\"?}}: {e}"),
            )
        }
    };
    if let Some(p) = body.providers.iter().find(|p| config.provider(p).is_none()) {
        return error(
            StatusCode::BAD_REQUEST,
            "airlock_admin_bad_body",
            &format!("unknown provider {p:?}"),
        );
    }
    let expires_in = match body
        .expires
        .as_deref()
        .map(crate::config::parse_duration)
        .transpose()
    {
        Ok(d) => d,
        Err(m) => return error(StatusCode::BAD_REQUEST, "airlock_admin_bad_body", &m),
    };
    let req = IssueRequest {
        name: body.name,
        providers: body.providers,
        models: body.models,
        expires_in,
        ..Default::default()
    };
    match state.with_store(move |s| s.issue(&req)).await {
        Ok((issued, key)) => {
            if let Err(e) = state.refresh_keys().await {
                tracing::warn!("key refresh after issue failed: {e}");
            }
            json(
                StatusCode::CREATED,
                &json!({"key": key.expose_secret(), "issued": issued}),
            )
        }
        Err(crate::proxy::state::StateError::Store(e)) => error(
            StatusCode::BAD_REQUEST,
            "airlock_admin_issue_failed",
            &e.to_string(),
        ),
        Err(e) => internal(e),
    }
}

/// `text/event-stream` of live events, with a comment every 15 s to keep proxies and the
/// connection awake.
fn events(state: &Arc<State>) -> Response<ProxyBody> {
    let rx = state.events.subscribe();
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if first {
            let hello = Bytes::from_static(b": connected to airlock events\n\n");
            return Some((
                Ok::<_, body::BoxError>(http_body::Frame::data(hello)),
                (rx, false),
            ));
        }
        let frame = tokio::select! {
            got = rx.recv() => match got {
                Ok(event) => sse_frame(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    Bytes::from(format!(": skipped {n} events (client too slow)\n\n"))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(Duration::from_secs(15)) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok(http_body::Frame::data(frame)), (rx, false)))
    });
    let body = http_body_util::StreamBody::new(stream);
    let mut r = Response::new(http_body_util::BodyExt::boxed_unsync(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn sse_frame(e: &Event) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {}\ndata: {data}\n\n", e.kind()))
}

fn metrics(state: &Arc<State>) -> Response<ProxyBody> {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &state.ledger.stats;
    let text = state.metrics.render(&[
        (
            "airlock_ledger_rows_written",
            "Ledger rows committed (including rows a reader had committed first).",
            "counter",
            stats.written.load(Relaxed) as f64,
        ),
        (
            "airlock_ledger_commits",
            "Ledger transactions committed (rows are committed in groups).",
            "counter",
            stats.commits.load(Relaxed) as f64,
        ),
        (
            "airlock_ledger_rows_dropped",
            "Ledger rows dropped because the writer was behind.",
            "counter",
            stats.dropped.load(Relaxed) as f64,
        ),
        (
            "airlock_paused",
            "1 when the global pause switch is on.",
            "gauge",
            if state.is_paused() { 1.0 } else { 0.0 },
        ),
    ]);
    let mut r = Response::new(body::full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// One query parameter, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    // In a query string `+` is a space; `%2B` stays a plus, decoded after.
    crate::providers::percent_decode(&s.replace('+', " ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(
            query_value("since=2026-11-21T00%3A00%3A00Z&by=day", "since").as_deref(),
            Some("2026-11-21T00:00:00Z")
        );
        assert_eq!(query_value("a=1", "b"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
