//! The distinct pages a file's page-ins covered, as runs of pages: memory
//! grows with the runs (at most half the file's pages), not with page-ins.
//! Page-ins read clusters in order, so most files are a few runs.

use std::collections::BTreeMap;

/// Runs of pages: start page to end page (exclusive), disjoint and not
/// touching.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    runs: BTreeMap<u64, u64>,
    pages: u64,
}

impl PageSet {
    /// Adds the pages `[start, end)`.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A run that starts at or before `start` and reaches it.
        if let Some((&s, &e)) = self.runs.range(..=start).next_back() {
            if e >= start {
                if e >= end {
                    return;
                }
                start = s;
                self.pages -= e - s;
                self.runs.remove(&s);
            }
        }
        // Runs that start inside or right after the new one.
        while let Some((&s, &e)) = self.runs.range(start..=end).next() {
            end = end.max(e);
            self.pages -= e - s;
            self.runs.remove(&s);
        }
        self.pages += end - start;
        self.runs.insert(start, end);
    }

    /// Distinct pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Runs kept (memory).
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn counts_like_a_set_of_pages() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut set = PageSet::default();
        let mut exact = HashSet::new();
        for _ in 0..5_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let start = rng % 2_000;
            let end = start + (rng >> 20) % 9;
            set.insert(start, end);
            exact.extend(start..end);
            assert_eq!(set.pages(), exact.len() as u64);
        }
        // Every page 0..2000 is in by now or nearly: few runs remain.
        assert!(set.runs() < 50, "{} runs", set.runs());
    }

    #[test]
    fn sequential_clusters_are_one_run() {
        let mut set = PageSet::default();
        for i in 0..1_000 {
            set.insert(i * 4, i * 4 + 4);
        }
        set.insert(10, 12);
        assert_eq!((set.pages(), set.runs()), (4_000, 1));
        set.insert(5_000, 5_001);
        set.insert(4_000, 5_000);
        assert_eq!((set.pages(), set.runs()), (5_001, 1));
        set.insert(7, 7);
        assert_eq!(set.pages(), 5_001);
    }
}
