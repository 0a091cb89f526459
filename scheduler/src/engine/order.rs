//! The machines of one metadata class, ordered by (load, machine ID) for least-loaded
//! and bin-pack selection.
//!
//! Loads are small integers (units per machine), so instead of a balanced tree keyed by
//! (load, rank) the order keeps one bitset per load over the class's members, which are
//! numbered by machine ID. Moving a machine from load `l` to `l + 1` is two bit flips;
//! the least-loaded machine is the first set bit of the lowest non-empty load. A machine
//! that leaves keeps its number (a hole), so a returning machine costs nothing.

use super::idx::MachineIdx;

/// Ordered membership of one class. Positions index `members`, which is sorted by rank.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadOrder {
    /// Machine indexes by position, sorted by machine ID.
    members: Vec<MachineIdx>,
    /// 64-bit words per load level.
    words: usize,
    /// Level-major bitsets: bit `p` of level `l` is `bits[l * words + p / 64]`.
    bits: Vec<u64>,
    /// Set bits per level.
    counts: Vec<u32>,
    /// Per level, the index of the first word that may be non-zero.
    first: Vec<u32>,
    /// Lowest level that may be non-empty.
    min_level: u32,
    len: u32,
}

impl LoadOrder {
    /// An order over `members` (sorted by rank), with no machine present yet.
    pub(crate) fn with_members(members: Vec<MachineIdx>) -> LoadOrder {
        let words = members.len().div_ceil(64).max(1);
        LoadOrder {
            members,
            words,
            ..LoadOrder::default()
        }
    }

    pub(crate) fn members(&self) -> &[MachineIdx] {
        &self.members
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Inserts a member at `pos` (shifting later positions); the caller re-adds present
    /// machines with [`LoadOrder::insert`] after this, as every bit is cleared.
    pub(crate) fn add_member(&mut self, pos: usize, machine: MachineIdx) {
        self.members.insert(pos, machine);
        self.words = self.members.len().div_ceil(64).max(1);
        self.bits.clear();
        self.counts.clear();
        self.first.clear();
        self.min_level = 0;
        self.len = 0;
    }

    /// Appends a member (its rank is above every other), keeping the present ones.
    pub(crate) fn push_member(&mut self, machine: MachineIdx) -> usize {
        self.members.push(machine);
        let need = self.members.len().div_ceil(64);
        if need > self.words {
            // Re-lay the levels with room to grow.
            let new_words = need.max(self.words * 2);
            let levels = self.counts.len();
            let mut bits = vec![0u64; levels * new_words];
            for l in 0..levels {
                bits[l * new_words..l * new_words + self.words]
                    .copy_from_slice(&self.bits[l * self.words..(l + 1) * self.words]);
            }
            self.bits = bits;
            self.words = new_words;
        }
        self.members.len() - 1
    }

    fn ensure_level(&mut self, load: usize) {
        while self.counts.len() <= load {
            self.counts.push(0);
            self.first.push(u32::MAX);
            self.bits.extend(std::iter::repeat_n(0, self.words));
        }
    }

    /// Marks the member at `pos` present with `load`.
    pub(crate) fn insert(&mut self, pos: usize, load: u32) {
        let l = load as usize;
        self.ensure_level(l);
        let w = pos / 64;
        self.bits[l * self.words + w] |= 1 << (pos % 64);
        self.counts[l] += 1;
        self.first[l] = self.first[l].min(w as u32);
        self.min_level = self.min_level.min(load);
        self.len += 1;
    }

    /// Marks the member at `pos` (present with `load`) absent.
    pub(crate) fn remove(&mut self, pos: usize, load: u32) {
        let l = load as usize;
        let w = pos / 64;
        let base = l * self.words;
        self.bits[base + w] &= !(1 << (pos % 64));
        self.counts[l] -= 1;
        self.len -= 1;
        if self.counts[l] == 0 {
            self.first[l] = u32::MAX;
        } else if self.first[l] as usize == w && self.bits[base + w] == 0 {
            let mut f = w;
            while self.bits[base + f] == 0 {
                f += 1;
            }
            self.first[l] = f as u32;
        }
        while (self.min_level as usize) < self.counts.len()
            && self.counts[self.min_level as usize] == 0
        {
            self.min_level += 1;
        }
    }

    /// Moves the member at `pos` from load `old` to `new`.
    pub(crate) fn relevel(&mut self, pos: usize, old: u32, new: u32) {
        self.remove(pos, old);
        self.insert(pos, new);
    }

    /// Present members at one load, by ID.
    fn level(&self, l: usize) -> impl Iterator<Item = MachineIdx> + '_ {
        let start = if self.counts[l] == 0 {
            self.words
        } else {
            self.first[l] as usize
        };
        let base = l * self.words;
        (start..self.words).flat_map(move |w| {
            let mut word = self.bits[base + w];
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let b = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(self.members[w * 64 + b])
            })
        })
    }

    /// Present members by (load ascending, ID ascending), with their load.
    pub(crate) fn ascending(&self) -> impl Iterator<Item = (u32, MachineIdx)> + '_ {
        (self.min_level as usize..self.counts.len())
            .filter(|&l| self.counts[l] > 0)
            .flat_map(move |l| self.level(l).map(move |m| (l as u32, m)))
    }

    /// Present members by (load descending, ID ascending), with their load.
    pub(crate) fn descending(&self) -> impl Iterator<Item = (u32, MachineIdx)> + '_ {
        (self.min_level as usize..self.counts.len())
            .rev()
            .filter(|&l| self.counts[l] > 0)
            .flat_map(move |l| self.level(l).map(move |m| (l as u32, m)))
    }
}

#[cfg(test)]
mod tests {
    use super::LoadOrder;
    use crate::engine::idx::{Idx, MachineIdx};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn matches_a_sorted_set(ops in prop::collection::vec((0..150usize, 0..6u32, any::<bool>()), 0..300)) {
            // Member `i` at position `i`, so positions and machines coincide below.
            let mut o = LoadOrder::with_members((0..100).map(MachineIdx::new).collect());
            let mut model: BTreeSet<(u32, u32)> = BTreeSet::new();
            let mut load = [None::<u32>; 150];
            for (m, l, on) in ops {
                if m >= 100 {
                    // Grow: append a member.
                    let pos = o.push_member(MachineIdx::new(o.members().len()));
                    prop_assert_eq!(pos, o.members().len() - 1);
                    continue;
                }
                match (load[m], on) {
                    (None, true) => { o.insert(m, l); model.insert((l, m as u32)); load[m] = Some(l); }
                    (Some(old), true) => { o.relevel(m, old, l); model.remove(&(old, m as u32)); model.insert((l, m as u32)); load[m] = Some(l); }
                    (Some(old), false) => { o.remove(m, old); model.remove(&(old, m as u32)); load[m] = None; }
                    (None, false) => {}
                }
                let asc: Vec<(u32, u32)> = o.ascending().map(|(l, m)| (l, m.index() as u32)).collect();
                prop_assert_eq!(&asc, &model.iter().copied().collect::<Vec<_>>());
                let mut desc: Vec<(u32, u32)> = model.iter().copied().collect();
                desc.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                prop_assert_eq!(o.descending().map(|(l, m)| (l, m.index() as u32)).collect::<Vec<_>>(), desc);
                prop_assert_eq!(o.len(), model.len());
            }
        }
    }
}
