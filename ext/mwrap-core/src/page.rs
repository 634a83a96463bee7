//! One page of the location table (the endpoint's `/each`): the rows of a
//! page, sorted by any column, picked from every location while keeping
//! only `offset + limit` of them, so a page of a table of 100,000
//! locations needs memory for its own rows, not for the table.

use core::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::abi::SiteSnapshot;

/// A column of `/each`, in the order the table shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Total,
    Allocations,
    Frees,
    LiveBytes,
    LiveCount,
    /// Live bytes now minus live bytes at the last mark.
    Growth,
    MeanLife,
    MaxLife,
    /// Allocations freed before their thread's next allocation.
    Temporary,
    Location,
}

impl Column {
    pub const ALL: [Column; 10] = [
        Column::Total,
        Column::Allocations,
        Column::Frees,
        Column::LiveBytes,
        Column::LiveCount,
        Column::Growth,
        Column::MeanLife,
        Column::MaxLife,
        Column::Temporary,
        Column::Location,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Total => "total",
            Column::Allocations => "allocations",
            Column::Frees => "frees",
            Column::LiveBytes => "live_bytes",
            Column::LiveCount => "live_count",
            Column::Growth => "growth",
            Column::MeanLife => "mean_life",
            Column::MaxLife => "max_life",
            Column::Temporary => "temporary",
            Column::Location => "location",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Column> {
        Column::ALL
            .into_iter()
            .find(|c| c.name().as_bytes() == name)
    }
}

/// One location offered to a page: its id, counters, growth since the
/// mark (None when there is no mark) and, for the location column only,
/// its printed name.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: u32,
    pub snapshot: SiteSnapshot,
    pub growth: Option<i64>,
    /// Allocations freed before their thread's next allocation.
    pub temporary: u64,
    pub name: Vec<u8>,
}

impl Candidate {
    /// Mean lifespan of the freed allocations (infinite with none freed).
    pub fn mean_life(&self) -> f64 {
        let s = &self.snapshot;
        if s.frees == 0 {
            f64::INFINITY
        } else {
            s.age_total as f64 / s.frees as f64
        }
    }

    fn number(&self, column: Column) -> f64 {
        let s = &self.snapshot;
        match column {
            Column::Total => s.total as f64,
            Column::Allocations => s.allocations as f64,
            Column::Frees => s.frees as f64,
            Column::LiveBytes => s.live_bytes as f64,
            Column::LiveCount => s.live_count as f64,
            Column::Growth => self.growth.map_or(f64::NEG_INFINITY, |g| g as f64),
            Column::MeanLife => self.mean_life(),
            Column::MaxLife => s.max_lifespan as f64,
            Column::Temporary => self.temporary as f64,
            Column::Location => 0.0,
        }
    }
}

/// A candidate with the order of its column: numbers largest first,
/// locations A–Z (bytewise); ties by id, first seen first. `Ord` puts the
/// *worst* row greatest, so a max-heap drops it first.
struct Ranked {
    column: Column,
    row: Candidate,
}

impl Ranked {
    fn rank(&self, other: &Self) -> Ordering {
        let by_key = if self.column == Column::Location {
            self.row.name.cmp(&other.row.name)
        } else {
            other
                .row
                .number(self.column)
                .total_cmp(&self.row.number(self.column))
        };
        by_key.then(self.row.id.cmp(&other.row.id))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank(other)
    }
}

/// Picks the rows `offset..offset + limit` of the table sorted by
/// `column`, from candidates offered one at a time.
pub struct PagePicker {
    column: Column,
    offset: usize,
    keep: usize,
    best: BinaryHeap<Ranked>,
    /// Candidates offered (the table's size, for the pager).
    pub offered: usize,
}

impl PagePicker {
    pub fn new(column: Column, offset: usize, limit: usize) -> Self {
        PagePicker {
            column,
            offset,
            keep: offset.saturating_add(limit),
            best: BinaryHeap::new(),
            offered: 0,
        }
    }

    pub fn offer(&mut self, row: Candidate) {
        self.offered += 1;
        if self.keep == 0 {
            return;
        }
        let ranked = Ranked {
            column: self.column,
            row,
        };
        if self.best.len() < self.keep {
            self.best.push(ranked);
        } else if self.best.peek().is_some_and(|worst| ranked < *worst) {
            self.best.pop();
            self.best.push(ranked);
        }
    }

    /// The page's rows, best first.
    pub fn rows(self) -> Vec<Candidate> {
        let mut sorted = self.best.into_sorted_vec();
        let rest = sorted.split_off(self.offset.min(sorted.len()));
        drop(sorted);
        rest.into_iter().map(|r| r.row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, live: u64, name: &str) -> Candidate {
        Candidate {
            id,
            snapshot: SiteSnapshot {
                id,
                live_bytes: live,
                total: 1000 - live,
                frees: id as u64 % 3,
                age_total: id as u64,
                ..Default::default()
            },
            growth: id.is_multiple_of(2).then_some(live as i64 - 50),
            temporary: 0,
            name: name.as_bytes().to_vec(),
        }
    }

    fn page(column: Column, offset: usize, limit: usize) -> Vec<u32> {
        let mut p = PagePicker::new(column, offset, limit);
        for (i, name) in ["d", "b", "a", "e", "c", "f"].iter().enumerate() {
            let id = i as u32 + 1;
            p.offer(row(id, [30, 10, 30, 50, 0, 20][i], name));
        }
        assert_eq!(p.offered, 6);
        p.rows().iter().map(|r| r.id).collect()
    }

    #[test]
    fn numbers_largest_first_ties_by_id_and_pages_of_the_order() {
        assert_eq!(page(Column::LiveBytes, 0, 10), vec![4, 1, 3, 6, 2, 5]);
        assert_eq!(page(Column::LiveBytes, 0, 2), vec![4, 1]);
        assert_eq!(page(Column::LiveBytes, 2, 2), vec![3, 6]);
        assert_eq!(page(Column::LiveBytes, 5, 2), vec![5]);
        assert_eq!(page(Column::LiveBytes, 9, 2), Vec::<u32>::new());
        assert_eq!(page(Column::Total, 0, 3), vec![5, 2, 6]);
    }

    #[test]
    fn locations_a_to_z_and_unknown_growth_last() {
        assert_eq!(page(Column::Location, 0, 10), vec![3, 2, 5, 1, 4, 6]);
        // ids 2, 4, 6 have a growth (-40, 0, -30); the others none
        assert_eq!(page(Column::Growth, 0, 3), vec![4, 6, 2]);
        // frees 0 (ids 3, 6) mean an infinite mean life: first
        assert_eq!(page(Column::MeanLife, 0, 2), vec![3, 6]);
    }

    #[test]
    fn columns_by_name() {
        for c in Column::ALL {
            assert_eq!(Column::from_name(c.name().as_bytes()), Some(c));
        }
        assert_eq!(Column::from_name(b"nope"), None);
    }
}
