//! The request log behind `GET /_mock/requests` and `POST /_mock/reset`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch, as a float, comparable across processes on one
/// machine (the tests compare the client's clock with the mock's).
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One request as the mock received it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    pub id: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-cased header names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as text when it is UTF-8.
    pub body: Option<String>,
    pub body_base64: String,
    /// When the request head arrived.
    pub received_ms: f64,
    /// When the whole request body had been read.
    pub body_read_ms: f64,
    pub response_status: Option<u16>,
    /// Set for streamed responses.
    pub stream: Option<StreamTimes>,
}

/// When the mock wrote the events of a streamed response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamTimes {
    /// Events this response would send if nothing stalls or resets it.
    pub events_planned: usize,
    /// Events handed to the connection so far.
    pub events_written: usize,
    pub first_event_ms: Option<f64>,
    pub last_event_ms: Option<f64>,
    /// The body ended normally (all events written).
    pub finished: bool,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
    }
}

#[derive(Debug, Default)]
pub struct Store {
    next_id: AtomicU64,
    records: Mutex<Vec<RecordedRequest>>,
}

impl Store {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn push(&self, record: RecordedRequest) {
        self.lock().push(record);
    }

    /// Change the record with this id, if it was not cleared by a reset meanwhile.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut RecordedRequest)) {
        if let Some(r) = self.lock().iter_mut().rev().find(|r| r.id == id) {
            f(r);
        }
    }

    pub fn all(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}
