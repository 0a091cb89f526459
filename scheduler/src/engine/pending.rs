//! Placing the waiting units in name order, retrying those that failed while later
//! displacements freed room.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Scheduler;
use super::idx::UnitIdx;

/// Extra passes over units that failed while later displacements freed room.
const MAX_RETRY_ROUNDS: usize = 4;

/// Units waiting to be placed, popped in name order: a sorted batch plus a heap for
/// units that join during the pass (displaced units, followers of a placed peer).
#[derive(Debug, Clone, Default)]
pub(super) struct Pending {
    sorted: Vec<UnitIdx>,
    pos: usize,
    heap: BinaryHeap<Reverse<(Box<str>, UnitIdx)>>,
}

impl Scheduler {
    /// Places `extra` and every waiting unit, in name order.
    pub(super) fn run_pending(&mut self, extra: Vec<UnitIdx>) {
        let mut batch = extra;
        for u in std::mem::take(&mut self.failed) {
            self.units[u].failed = false;
            batch.push(u);
        }
        batch.retain(|&u| self.wants_placement(u));
        self.sort_by_name(&mut batch);
        batch.dedup();
        self.freed = false;
        let mut rounds = 0;
        self.pending = Pending {
            sorted: batch,
            pos: 0,
            heap: BinaryHeap::new(),
        };
        loop {
            while let Some(u) = self.pop_pending() {
                self.place_one(u);
            }
            if !self.freed || self.failed.is_empty() || rounds >= MAX_RETRY_ROUNDS {
                break;
            }
            rounds += 1;
            self.freed = false;
            let mut again = std::mem::take(&mut self.failed);
            for &u in &again {
                self.units[u].failed = false;
            }
            again.retain(|&u| self.wants_placement(u));
            self.sort_by_name(&mut again);
            self.pending = Pending {
                sorted: again,
                pos: 0,
                heap: BinaryHeap::new(),
            };
        }
        self.failed.retain(|&u| self.units[u].failed);
        let mut failed = std::mem::take(&mut self.failed);
        self.sort_by_name(&mut failed);
        failed.dedup();
        self.failed = failed;
        self.pending = Pending::default();
    }

    fn pop_pending(&mut self) -> Option<UnitIdx> {
        let p = &mut self.pending;
        let from_sorted = p.sorted.get(p.pos).copied();
        let take_heap = match (from_sorted, p.heap.peek()) {
            (Some(s), Some(Reverse((name, _)))) => *name < self.units[s].name,
            (None, Some(_)) => true,
            _ => false,
        };
        if take_heap {
            p.heap.pop().map(|Reverse((_, u))| u)
        } else {
            p.pos += 1;
            from_sorted
        }
    }

    fn push_pending(&mut self, u: UnitIdx) {
        let name = self.units[u].name.clone();
        self.pending.heap.push(Reverse((name, u)));
    }

    fn place_one(&mut self, u: UnitIdx) {
        if !self.wants_placement(u) {
            return;
        }
        match self.choose(u) {
            Some(m) => {
                if self.units[u].failed {
                    self.units[u].failed = false;
                }
                self.attach(u, m);
                let mut displaced = Vec::new();
                self.displace_replaced(u, m, &mut displaced);
                for x in displaced {
                    self.push_pending(x);
                }
                if let Some(fs) = self.followers.get(&u) {
                    let waiting: Vec<UnitIdx> = fs
                        .iter()
                        .copied()
                        .filter(|&f| self.units[f].failed)
                        .collect();
                    for f in waiting {
                        self.units[f].failed = false;
                        self.push_pending(f);
                    }
                }
            }
            None => {
                if !self.units[u].failed {
                    self.units[u].failed = true;
                    self.failed.push(u);
                }
            }
        }
    }
}
