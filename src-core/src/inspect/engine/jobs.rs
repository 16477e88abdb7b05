//! The searches a scan makes, gathered over the whole text first and then run rule by rule.
//!
//! Text dense with findings sends the scan from one rule to the next at almost every hit: an
//! email, then an IBAN, then a connection string. Each rule's regex has its own lazy DFA states,
//! capture engine and validator tables, and between two hits of one rule the others evict them
//! from the CPU's caches, so a search that takes 1 µs warm took 10 µs cold. Run rule by rule,
//! the same searches find the same values with the rule's state still in cache.

/// One search for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// Search `start..end` for any number of values.
    Window(usize, usize),
    /// Try the rule's regex anchored at this keyword's start.
    Anchored(usize),
}

/// The jobs of one scan, by rule.
#[derive(Debug)]
pub(super) struct Jobs {
    /// How many rules there are (rule indices are below it).
    rules: usize,
    /// Each rule's window still growing: a window pushed that overlaps it extends it.
    open: Vec<Option<(usize, usize)>>,
    /// Jobs no longer growing, in the order they were closed.
    closed: Vec<(u32, Job)>,
}

impl Jobs {
    /// No jobs yet, for rule indices below `rules`.
    pub fn new(rules: usize) -> Self {
        Self {
            rules,
            open: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Queues a window of rule `ri`. Windows must come in order of their start until
    /// [`Jobs::close`]: one that overlaps or touches the rule's open window joins it.
    pub fn window(&mut self, ri: u32, start: usize, end: usize) {
        // Made at the first window: most scans of short text have none.
        if self.open.is_empty() {
            self.open.resize(self.rules, None);
        }
        let slot = &mut self.open[ri as usize];
        match *slot {
            Some((s, e)) if start <= e => *slot = Some((s, e.max(end))),
            Some((s, e)) => {
                self.closed.push((ri, Job::Window(s, e)));
                *slot = Some((start, end));
            }
            None => *slot = Some((start, end)),
        }
    }

    /// Queues an anchored try of rule `ri` at `at`.
    pub fn anchored(&mut self, ri: u32, at: usize) {
        self.closed.push((ri, Job::Anchored(at)));
    }

    /// Closes every open window: windows pushed after this may start before them.
    pub fn close(&mut self) {
        for (ri, slot) in self.open.iter_mut().enumerate() {
            if let Some((s, e)) = slot.take() {
                self.closed.push((ri as u32, Job::Window(s, e)));
            }
        }
    }

    /// Every job, grouped by rule (in rule order), each rule's in the order they were queued.
    pub fn take_by_rule(&mut self) -> Vec<(u32, Job)> {
        self.close();
        let jobs = std::mem::take(&mut self.closed);
        if jobs.len() < 32 {
            let mut jobs = jobs;
            jobs.sort_by_key(|&(ri, _)| ri);
            return jobs;
        }
        // A counting sort: thousands of jobs on dense text, and the rule is a small index.
        let mut next = vec![0u32; self.rules + 1];
        for &(ri, _) in &jobs {
            next[ri as usize + 1] += 1;
        }
        for i in 1..next.len() {
            next[i] += next[i - 1];
        }
        let mut sorted = vec![(0, Job::Anchored(0)); jobs.len()];
        for job in jobs {
            let at = &mut next[job.0 as usize];
            sorted[*at as usize] = job;
            *at += 1;
        }
        sorted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_windows_of_a_rule_join_and_others_stay_apart() {
        let mut jobs = Jobs::new(3);
        jobs.window(1, 0, 10);
        jobs.window(2, 5, 8);
        jobs.window(1, 10, 20);
        jobs.window(1, 21, 30);
        jobs.anchored(0, 7);
        assert_eq!(
            jobs.take_by_rule(),
            vec![
                (0, Job::Anchored(7)),
                (1, Job::Window(0, 20)),
                (1, Job::Window(21, 30)),
                (2, Job::Window(5, 8)),
            ]
        );
        assert!(jobs.take_by_rule().is_empty());
    }

    #[test]
    fn a_closed_window_is_not_extended_by_one_before_it() {
        let mut jobs = Jobs::new(1);
        jobs.window(0, 50, 60);
        jobs.close();
        jobs.window(0, 10, 55);
        assert_eq!(
            jobs.take_by_rule(),
            vec![(0, Job::Window(50, 60)), (0, Job::Window(10, 55))]
        );
    }

    /// Past the small-list path: the counting sort keeps each rule's jobs in queued order.
    #[test]
    fn many_jobs_are_grouped_by_rule_in_queued_order() {
        let mut jobs = Jobs::new(7);
        for i in 0..300usize {
            jobs.anchored((i % 7) as u32, i);
        }
        let sorted = jobs.take_by_rule();
        assert_eq!(sorted.len(), 300);
        for pair in sorted.windows(2) {
            let ((r0, Job::Anchored(a0)), (r1, Job::Anchored(a1))) = (pair[0], pair[1]) else {
                panic!("only anchored jobs were queued");
            };
            assert!(r0 < r1 || (r0 == r1 && a0 < a1), "{pair:?}");
        }
    }
}
