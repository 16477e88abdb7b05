//! Giving memory back after a burst of requests.
//!
//! glibc's allocator keeps the memory of freed blocks for reuse and returns only the top of each
//! heap to the system. After 1,000 concurrent streams close, their buffers are free but stay
//! resident, and with the next burst scattered long-lived blocks let the heap grow further, so
//! the resident set rose from round to round of `bench/memory.sh`. `malloc_trim(0)` hands every
//! free page back (with it, each round falls back to about 43 MiB; BENCHMARKS.md, memory), so the
//! server calls it when many requests have finished since the last call. It walks the
//! allocator's arenas under their locks, so it runs on a blocking thread and only after a large
//! drop, never per request.

use std::time::{Duration, Instant};

/// How often the number of requests in flight is looked at.
const EVERY: Duration = Duration::from_secs(2);
/// A trim follows once the requests in flight have fallen by at least this many from their peak
/// since the last trim, and to at most half of it.
const DROP_AT_LEAST: u64 = 64;

/// Returns free heap memory to the system. `true` if any was returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only glibc's own arenas, under their
    // locks; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators return memory by themselves, or have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Decides when to trim, from successive readings of the requests in flight.
#[derive(Debug, Default)]
pub struct Trigger {
    peak: u64,
}

impl Trigger {
    /// Takes one reading; `true` when a trim is due (the peak then restarts from `now`).
    pub fn observe(&mut self, now: u64) -> bool {
        self.peak = self.peak.max(now);
        let due = self.peak - now >= DROP_AT_LEAST && now <= self.peak / 2;
        if due {
            self.peak = now;
        }
        due
    }
}

/// Watches the requests in flight and trims after each large drop, until the runtime stops.
pub fn spawn(in_flight: impl Fn() -> u64 + Send + 'static) {
    tokio::spawn(async move {
        let mut trigger = Trigger::default();
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !trigger.observe(in_flight()) {
                continue;
            }
            let started = Instant::now();
            match tokio::task::spawn_blocking(release_free_memory).await {
                Ok(released) => tracing::debug!(
                    released,
                    took_us = started.elapsed().as_micros() as u64,
                    "returned free memory to the system"
                ),
                Err(e) => tracing::warn!("memory trim failed: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_a_large_drop_only() {
        let mut t = Trigger::default();
        // Steady load, small swings: never.
        for n in [0, 10, 40, 30, 50, 20, 0] {
            assert!(!t.observe(n), "at {n}");
        }
        // A burst of 1,000 that ends: once, when it is over.
        assert!(!t.observe(1000));
        assert!(!t.observe(700));
        assert!(t.observe(3));
        assert!(!t.observe(0));
        // The next burst starts a new peak.
        assert!(!t.observe(200));
        assert!(t.observe(100));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
        let pages = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok());
        pages.expect("resident pages in /proc/self/statm") * 4096
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn release_free_memory_gives_freed_blocks_back() {
        // 64 MiB in 2 KiB blocks, written so they are resident; every 64th stays alive, so
        // the freed memory lies between live blocks, where `free` alone never returns it.
        let mut blocks: Vec<Vec<u8>> = (0..32 * 1024).map(|i| vec![i as u8; 2048]).collect();
        let mut kept = Vec::new();
        for (i, b) in blocks.drain(..).enumerate() {
            if i % 64 == 0 {
                kept.push(b);
            }
        }
        let before = resident_bytes();
        assert!(release_free_memory(), "nothing was returned");
        let after = resident_bytes();
        assert!(
            before.saturating_sub(after) >= 24 << 20,
            "resident {before} -> {after} bytes"
        );
        assert_eq!(kept.len(), 512);
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, b)| b[2047] == (i * 64) as u8));
    }
}
