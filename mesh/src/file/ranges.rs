//! Which bytes of a file have arrived: a set of disjoint, merged `[start, end)` ranges.
//! Tracking bytes, not chunk indices, is what keeps GhostMesh's range replies (one chunk at
//! an unaligned offset spanning several chunks) from being stored twice.

/// Disjoint, sorted, merged byte ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
    covered: u64,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes covered.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Number of separate ranges (a hostile sender can make many; callers bound it).
    pub fn fragments(&self) -> usize {
        self.ranges.len()
    }

    /// Adds `[start, end)`; returns how many bytes were new.
    pub fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        // First range that ends at or after `start` (could merge), and first that starts after
        // `end` (cannot).
        let lo = self.ranges.partition_point(|&(_, e)| e < start);
        let hi = self.ranges.partition_point(|&(s, _)| s <= end);
        let mut new_start = start;
        let mut new_end = end;
        let mut old = 0;
        for &(s, e) in &self.ranges[lo..hi] {
            new_start = new_start.min(s);
            new_end = new_end.max(e);
            old += e - s;
        }
        self.ranges.splice(lo..hi, [(new_start, new_end)]);
        let added = (new_end - new_start) - old;
        self.covered += added;
        added
    }

    /// Whether every byte of `[start, end)` is present (an empty range always is).
    pub fn contains(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges
            .get(i)
            .is_some_and(|&(s, e)| s <= start && end <= e)
    }

    /// How many bytes from `start` on are present without a gap.
    pub fn contiguous_from(&self, start: u64) -> u64 {
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        match self.ranges.get(i) {
            Some(&(s, e)) if s <= start => e - start,
            _ => 0,
        }
    }

    /// The first missing byte at or after `start` and before `end`, if any.
    pub fn first_gap(&self, start: u64, end: u64) -> Option<u64> {
        let at = start + self.contiguous_from(start);
        (at < end).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_and_counts() {
        let mut r = RangeSet::new();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.fragments(), 2);
        assert_eq!(r.insert(15, 35), 10);
        assert_eq!(r.fragments(), 1);
        assert_eq!(r.covered(), 30);
        assert_eq!(r.insert(10, 40), 0);
        assert!(r.contains(10, 40));
        assert!(!r.contains(9, 11));
        assert_eq!(r.contiguous_from(12), 28);
        assert_eq!(r.first_gap(0, 100), Some(0));
        assert_eq!(r.first_gap(10, 40), None);
        assert_eq!(r.first_gap(10, 41), Some(40));
        // Touching ranges merge.
        assert_eq!(r.insert(40, 50), 10);
        assert_eq!(r.fragments(), 1);
    }

    proptest! {
        #[test]
        fn agrees_with_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40), 0..60)) {
            let mut set = RangeSet::new();
            let mut bits = [false; 240];
            for (start, len) in ops {
                let end = start + len;
                let new = (start..end).filter(|&i| !bits[i as usize]).count() as u64;
                prop_assert_eq!(set.insert(start, end), new);
                for i in start..end { bits[i as usize] = true; }
                prop_assert_eq!(set.covered(), bits.iter().filter(|b| **b).count() as u64);
            }
            for s in 0..240u64 {
                let run = (s..240).take_while(|&i| bits[i as usize]).count() as u64;
                prop_assert_eq!(set.contiguous_from(s), run);
            }
        }
    }
}
