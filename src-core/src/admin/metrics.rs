//! Prometheus metrics, written by hand in the text exposition format (a handful of series does
//! not need a metrics crate). Updated in the `record` stage, read by `/_airlock/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (ms) of the overhead and upstream latency histograms.
const BUCKETS_MS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    /// Sum in microseconds, to stay in integers.
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, ms: f64) {
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {}",
                b / 1000.0,
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (provider, verdict, status class) → count.
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// (provider, token class) → count.
    tokens: Mutex<BTreeMap<(String, &'static str), u64>>,
    cost_micros: Mutex<BTreeMap<String, i64>>,
    overhead: Histogram,
    upstream: Histogram,
    pub in_flight: AtomicU64,
    pub anomalies: AtomicU64,
}

pub struct Observation<'a> {
    pub provider: &'a str,
    pub verdict: &'static str,
    pub status: u16,
    pub tokens: [(&'static str, u64); 5],
    pub cost_micros: Option<i64>,
    pub overhead_ms: f64,
    pub upstream_ms: Option<f64>,
}

impl Metrics {
    pub fn observe(&self, o: &Observation<'_>) {
        let class = match o.status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        };
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((o.provider.to_owned(), o.verdict, class))
                .or_default() += 1;
        }
        if let Ok(mut m) = self.tokens.lock() {
            for (k, n) in o.tokens {
                if n > 0 {
                    *m.entry((o.provider.to_owned(), k)).or_default() += n;
                }
            }
        }
        if let (Some(c), Ok(mut m)) = (o.cost_micros, self.cost_micros.lock()) {
            *m.entry(o.provider.to_owned()).or_default() += c;
        }
        self.overhead.observe(o.overhead_ms);
        if let Some(u) = o.upstream_ms {
            self.upstream.observe(u);
        }
    }

    /// The exposition text. `extra` are (name, help, type, value) from elsewhere; the type is
    /// `counter` or `gauge`.
    pub fn render(&self, extra: &[(&str, &str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP airlock_requests_total Requests by provider, verdict and status class.\n# TYPE airlock_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((p, v, c), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "airlock_requests_total{{provider=\"{p}\",verdict=\"{v}\",status=\"{c}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP airlock_tokens_total Tokens by provider and class.\n# TYPE airlock_tokens_total counter");
        if let Ok(m) = self.tokens.lock() {
            for ((p, k), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "airlock_tokens_total{{provider=\"{p}\",class=\"{k}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# HELP airlock_cost_usd_total Spend in USD by provider (known prices only).\n# TYPE airlock_cost_usd_total counter");
        if let Ok(m) = self.cost_micros.lock() {
            for (p, c) in m.iter() {
                let _ = writeln!(
                    out,
                    "airlock_cost_usd_total{{provider=\"{p}\"}} {}",
                    *c as f64 / 1e6
                );
            }
        }
        self.overhead.write(
            &mut out,
            "airlock_overhead_seconds",
            "Airlock's own time per request: total minus upstream.",
        );
        self.upstream.write(
            &mut out,
            "airlock_upstream_seconds",
            "Time spent on the upstream per request.",
        );
        let _ = writeln!(out, "# HELP airlock_in_flight Requests in progress.\n# TYPE airlock_in_flight gauge\nairlock_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP airlock_anomalies_total Anomaly alerts.\n# TYPE airlock_anomalies_total counter\nairlock_anomalies_total {}", self.anomalies.load(Ordering::Relaxed));
        for (name, help, kind, v) in extra {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out
    }
}
