//! Live events: what the tray, the browser dashboard and `airlock tail` show as it happens.
//! Events carry names, numbers and reasons; never a key, a value that was found, or prompt text.

use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    RequestFinished {
        id: String,
        ts: i64,
        account: Option<String>,
        provider: Option<String>,
        model: Option<String>,
        status: u16,
        verdict: &'static str,
        streamed: bool,
        input_tokens: u64,
        output_tokens: u64,
        cost_micros: Option<i64>,
        estimated: bool,
        total_ms: f64,
    },
    RequestBlocked {
        id: String,
        ts: i64,
        account: Option<String>,
        provider: Option<String>,
        status: u16,
        reason: String,
        message: String,
        /// Detection rules and locations, when inspection blocked it.
        findings: Vec<BlockedFinding>,
    },
    BudgetAlert {
        ts: i64,
        scope: String,
        period: &'static str,
        level: &'static str,
        limit_micros: i64,
        spent_micros: i64,
    },
    Anomaly {
        ts: i64,
        kind: crate::limits::anomaly::AnomalyKind,
        account: String,
        detail: String,
        paused: bool,
    },
    KeyPaused {
        ts: i64,
        key: String,
        reason: String,
    },
    KeyResumed {
        ts: i64,
        key: String,
    },
    Paused {
        ts: i64,
    },
    Resumed {
        ts: i64,
    },
    ConfigReloaded {
        ts: i64,
        ok: bool,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockedFinding {
    pub rule: String,
    pub location: String,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RequestFinished { .. } => "request_finished",
            Event::RequestBlocked { .. } => "request_blocked",
            Event::BudgetAlert { .. } => "budget_alert",
            Event::Anomaly { .. } => "anomaly",
            Event::KeyPaused { .. } => "key_paused",
            Event::KeyResumed { .. } => "key_resumed",
            Event::Paused { .. } => "paused",
            Event::Resumed { .. } => "resumed",
            Event::ConfigReloaded { .. } => "config_reloaded",
        }
    }

    /// Whether the event is worth a row in the ledger's events table (requests have their own).
    pub fn is_notable(&self) -> bool {
        !matches!(
            self,
            Event::RequestFinished { .. } | Event::RequestBlocked { .. }
        )
    }
}

/// A broadcast bus: publishing never blocks; a slow subscriber skips what it missed.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(4096).0,
        }
    }
}

impl EventBus {
    pub fn publish(&self, e: Event) {
        // No subscriber is the normal case when no UI is open.
        if self.tx.send(Arc::new(e)).is_err() {
            tracing::trace!("event with no subscriber");
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
