//! The distinct pages a file's page-ins covered, as a sparse bitmap: one
//! 64-bit word per 64 pages (256 KiB of file) that any page-in touched.
//! Memory grows with the extent of the file that was read, never with the
//! number of page-ins, and an insert is a few bit operations.

use rustc_hash::FxHashMap;

/// Pages, by word of 64.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    words: FxHashMap<u64, u64>,
    pages: u64,
}

impl PageSet {
    /// Adds the pages `[start, end)`.
    pub fn insert(&mut self, start: u64, end: u64) {
        let mut page = start;
        while page < end {
            let (word, bit) = (page / 64, page % 64);
            // The pages of `[page, end)` that fall in this word.
            let n = (64 - bit).min(end - page);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            let w = self.words.entry(word).or_insert(0);
            self.pages += u64::from((mask & !*w).count_ones());
            *w |= mask;
            page += n;
        }
    }

    /// Distinct pages.
    pub fn pages(&self) -> u64 {
        self.pages
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
            let end = start + (rng >> 20) % 200;
            set.insert(start, end);
            exact.extend(start..end);
            assert_eq!(set.pages(), exact.len() as u64);
        }
        // 2 200 pages at most: 35 words.
        assert!(set.words.len() <= 35, "{} words", set.words.len());
    }

    #[test]
    fn whole_words_and_edges() {
        let mut set = PageSet::default();
        set.insert(0, 64);
        set.insert(63, 130);
        set.insert(7, 7);
        assert_eq!(set.pages(), 130);
        set.insert(u64::MAX - 3, u64::MAX);
        assert_eq!(set.pages(), 133);
    }
}
