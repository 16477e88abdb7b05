//! `record`: the last stage, run once per request however it ended. It charges the spend and
//! token counters, updates metrics, logs one line, publishes a live event and queues the ledger
//! row. Nothing here blocks: the ledger is written by its own thread.

use super::state::State;
use crate::admin::events::{BlockedFinding, Event};
use crate::admin::metrics::Observation;
use crate::config::Config;
use crate::inspect::Engine;
use crate::keys::snapshot::Identity;
use crate::ledger::{Record, Verdict};
use crate::limits::budget::{Charge, ParentCharge};
use crate::protect::mask::mask_in_place;

/// Finishes a request. `message` is the refusal or failure message. `engine` masks any secret
/// or personal data in the free text of the row (model, endpoint) and in the message
/// before any of it is logged, published or queued for the ledger. `identity` is the key the
/// request came with, whose lifetime spend (and, for a child key, its parent's) the cost
/// counts under.
pub fn finish(
    state: &State,
    config: &Config,
    engine: &Engine,
    mut r: Record,
    message: Option<String>,
    identity: Option<&Identity>,
) -> Option<crate::ledger::writer::Committed> {
    mask_free_text(engine, &mut r);
    let message = message.map(|mut m| {
        mask_in_place(engine, &mut m);
        m
    });
    let key_budget = identity.and_then(|i| i.budget_micros);
    state
        .metrics
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::Instant::now();
    let t = r.tokens;
    let total_tokens = t.input + t.output;
    if let Some(account) = r.account.as_deref() {
        let charge = Charge {
            account: Some(account),
            provider: r.provider.as_deref(),
            key_name: r.key_name.as_deref(),
            key_id: identity.map(|i| i.key_id),
            parent: identity
                .and_then(|i| i.parent.as_ref())
                .map(|p| ParentCharge {
                    name: &p.name,
                    id: p.key_id,
                    budget: p.budget_micros,
                }),
        };
        if let Some(cost) = r.cost_micros.filter(|c| *c > 0) {
            for a in state
                .spend
                .add(&config.limits, r.ts, &charge, cost, key_budget)
            {
                tracing::warn!(scope = %a.scope, period = a.period, level = a.level, "budget alert");
                state.publish(Event::BudgetAlert {
                    ts: r.ts,
                    scope: a.scope.to_string(),
                    period: a.period,
                    level: a.level,
                    limit_micros: a.limit_micros,
                    spent_micros: a.spent_micros,
                });
            }
        }
        state.rates.charge_tokens(account, total_tokens, now);
        for alert in state
            .anomaly
            .observe_tokens(&config.anomaly, account, total_tokens, now)
        {
            super::stages::raise_anomaly(state, config, alert);
        }
    }

    state.metrics.observe(&Observation {
        provider: r.provider.as_deref().unwrap_or("-"),
        verdict: r.verdict.as_str(),
        status: r.status,
        tokens: [
            ("input", t.input),
            ("output", t.output),
            ("cached", t.cached),
            ("cache_write", t.cache_write),
            ("reasoning", t.reasoning),
        ],
        cost_micros: r.cost_micros,
        overhead_ms: r.overhead_ms,
        upstream_ms: r.upstream_ms,
    });

    log_line(&r);
    let event = match r.verdict {
        Verdict::Blocked | Verdict::Failed => Event::RequestBlocked {
            id: r.id.clone(),
            ts: r.ts,
            account: r.account.clone(),
            provider: r.provider.clone(),
            status: r.status,
            reason: r.reason.clone().unwrap_or_default(),
            message: message.unwrap_or_default(),
            findings: r
                .findings
                .iter()
                .filter(|f| f.action == "block")
                .map(|f| BlockedFinding {
                    rule: f.rule.clone(),
                    location: f.location.clone(),
                })
                .collect(),
        },
        _ => Event::RequestFinished {
            id: r.id.clone(),
            ts: r.ts,
            account: r.account.clone(),
            provider: r.provider.clone(),
            model: r.model.clone(),
            status: r.status,
            verdict: r.verdict.as_str(),
            streamed: r.streamed,
            input_tokens: t.input,
            output_tokens: t.output,
            cost_micros: r.cost_micros,
            estimated: r.estimated,
            total_ms: r.total_ms,
        },
    };
    state.publish(event);
    state.ledger.record(r)
}

/// The client chose the model name and the path, so either can hold a secret (a key pasted
/// into the wrong field): they are recorded masked, like a finding's preview. The reason is
/// not: it is always Airlock's own code (`ProxyError::code`, `upstream_NNN`, `client_gone`).
fn mask_free_text(engine: &Engine, r: &mut Record) {
    if let Some(model) = r.model.as_mut() {
        mask_in_place(engine, model);
    }
    mask_in_place(engine, &mut r.endpoint);
}

/// One line per request: method, endpoint, status, reason. Never a key, query string or body.
fn log_line(r: &Record) {
    let provider = r.provider.as_deref().unwrap_or("-");
    let account = r.account.as_deref().unwrap_or("-");
    match (r.verdict, r.reason.as_deref()) {
        (Verdict::Blocked, Some(code)) => {
            tracing::info!(id = %r.id, provider, account, status = r.status, code, "blocked {} {}", r.method, r.endpoint)
        }
        (Verdict::Failed, Some(code)) => {
            tracing::warn!(id = %r.id, provider, account, status = r.status, code, "failed {} {}", r.method, r.endpoint)
        }
        _ => tracing::info!(
            id = %r.id,
            provider,
            account,
            status = r.status,
            ms = format_args!("{:.1}", r.total_ms),
            end = r.body_end.as_deref().unwrap_or("-"),
            "{} {}",
            r.method,
            r.endpoint
        ),
    }
}
