//! The ledger and the admin API seen from outside: `airlock spend` / `airlock log` output,
//! authenticated `/_airlock/…` calls, and a live reader of `GET /_airlock/events`.

use super::airlock::{Airlock, AirlockSetup};
use super::client::{get, post, HttpResponse, StreamingResponse};
use anyhow::{bail, Context};
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for the background ledger writer before it gives up.
pub const LEDGER_WAIT: Duration = Duration::from_secs(2);

/// Poll `f` every 20 ms until it returns `Some`, or fail after `within`.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl AirlockSetup {
    /// `airlock spend --format json ARGS…`, parsed.
    pub fn spend_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["spend", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.run_ok(&all, None)?;
        serde_json::from_str(&out).with_context(|| format!("spend printed {out:?}"))
    }

    /// `airlock log --format json ARGS…`: JSON Lines, newest first.
    pub fn log_rows(&self, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut all = vec!["log", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.run_ok(&all, None)?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("log line {l:?}")))
            .collect()
    }

    /// `airlock admin-token`.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let t = self.run_ok(&["admin-token"], None)?.trim().to_owned();
        if t.is_empty() || t.contains(char::is_whitespace) {
            bail!("admin-token printed {t:?}");
        }
        Ok(t)
    }
}

impl Airlock {
    /// Wait until the ledger holds a row with this `x-airlock-request-id` and return it.
    pub async fn ledger_row(&self, id: &str) -> Value {
        let setup = &self.setup;
        poll(LEDGER_WAIT, &format!("ledger row {id}"), || async move {
            let rows = setup.log_rows(&["--limit", "1000"]).ok()?;
            rows.into_iter().find(|r| r["id"].as_str() == Some(id))
        })
        .await
    }

    /// Wait until `airlock log` lists at least `n` rows; returns them (newest first).
    pub async fn ledger_rows_at_least(&self, n: usize) -> Vec<Value> {
        let setup = &self.setup;
        poll(LEDGER_WAIT, &format!("{n} ledger rows"), || async move {
            let rows = setup.log_rows(&["--limit", "1000"]).ok()?;
            (rows.len() >= n).then_some(rows)
        })
        .await
    }
}

/// An authenticated client of the admin API of one running Airlock.
#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: std::net::SocketAddr,
    pub token: String,
}

impl Admin {
    pub fn new(airlock: &Airlock) -> anyhow::Result<Self> {
        Ok(Self {
            addr: airlock.addr,
            token: airlock.setup.admin_token()?,
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        get(self.addr, &format!("/_airlock/{path}"))
            .header("authorization", &self.bearer())
            .send()
            .await
    }

    /// GET and require 200 with a JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        let res = self.get(path).await.expect("admin GET");
        assert_eq!(res.status, 200, "GET /_airlock/{path}: {}", res.text());
        res.json()
    }

    pub async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<HttpResponse> {
        let mut req =
            post(self.addr, &format!("/_airlock/{path}")).header("authorization", &self.bearer());
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await
    }

    /// Subscribe to `GET /_airlock/events`; returns once the server has sent its greeting, so
    /// every event published after this call is seen.
    pub async fn events(&self) -> anyhow::Result<EventStream> {
        let mut res = get(self.addr, "/_airlock/events")
            .header("authorization", &self.bearer())
            .send_streaming()
            .await?;
        if res.status != 200 {
            bail!("GET /_airlock/events: {}", res.status);
        }
        // The greeting is a comment, which the SSE parser drops: wait for its bytes instead.
        let deadline = Instant::now() + Duration::from_secs(5);
        while res.raw.is_empty() {
            if Instant::now() >= deadline {
                bail!("no greeting on /_airlock/events");
            }
            // A comment yields no event; time out quickly and look at the raw bytes again.
            if let Ok(Some(_)) = res.next_event(Duration::from_millis(50)).await {
                bail!("an event arrived before the greeting");
            }
        }
        Ok(EventStream { res })
    }
}

/// Live admin events: `(type, data)` pairs.
pub struct EventStream {
    res: StreamingResponse,
}

impl EventStream {
    /// The next event, or None if nothing arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        match self.res.next_event(wait).await {
            Ok(Some((e, _))) => {
                let data = e.json().unwrap_or(Value::Null);
                let kind = e
                    .event
                    .clone()
                    .unwrap_or_else(|| data["type"].as_str().unwrap_or("").to_owned());
                Some((kind, data))
            }
            _ => None,
        }
    }

    /// Read events until one of type `kind` satisfying `pred`; returns every event read (the
    /// matching one last). Panics after `within`.
    pub async fn until(
        &mut self,
        within: Duration,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {kind} event within {within:?}; saw {seen:#?}"));
            match self.next(left).await {
                Some((k, d)) => {
                    let hit = k == kind && pred(&d);
                    seen.push((k, d));
                    if hit {
                        return seen;
                    }
                }
                None => panic!("no {kind} event within {within:?}; saw {seen:#?}"),
            }
        }
    }

    /// Every event that arrives within `wait` (until a quiet gap of `wait`).
    pub async fn drain(&mut self, wait: Duration) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(e) = self.next(wait).await {
            out.push(e);
        }
        out
    }
}
