//! Typed indexes into the engine's tables, and the table they index.
//!
//! The engine keeps machines, units, requirement records, patterns, metadata classes
//! and interned strings in vectors and refers to an entry by its position. Each kind of
//! position has its own type, so a unit's index cannot index the machines.
//!
//! An index stores its position plus one in a [`NonZeroU32`], so `Option<MachineIdx>`
//! is as small as a `u32` (the compiler uses zero for `None`): "not placed" is an
//! `Option` at no cost in the million-entry unit table, where a bare `u32` needed
//! `u32::MAX` as a sentinel. Reading the position back is one subtraction, which the
//! compiler folds into the address computation of the table access. Positions keep
//! their order, so sorting indexes sorts by position.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::ops::{Index, IndexMut};

/// A typed position in an [`IdxVec`].
pub(crate) trait Idx: Copy + 'static {
    /// The index of position `i`.
    fn new(i: usize) -> Self;
    /// The position.
    fn index(self) -> usize;
}

/// Defines an index type: `#[repr(transparent)]` over `NonZeroU32`, `Copy`, ordered by
/// position, with `Option<Self>` the size of a `u32`.
macro_rules! idx_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) struct $name(NonZeroU32);

        impl Idx for $name {
            #[inline]
            fn new(i: usize) -> $name {
                // The tables hold at most a few million entries; 2^32 - 1 would mean a
                // bug or a cluster this design does not aim at, so stop rather than wrap.
                let n = u32::try_from(i)
                    .ok()
                    .and_then(|i| NonZeroU32::new(i.wrapping_add(1)));
                $name(n.expect(concat!(stringify!($name), ": more than 2^32 - 2 entries")))
            }
            #[inline]
            fn index(self) -> usize {
                (self.0.get() - 1) as usize
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.index())
            }
        }

        const _: () = assert!(size_of::<Option<$name>>() == size_of::<u32>());
    };
}

idx_type!(
    /// A machine's position in the machine table. Positions are never reused: a machine
    /// that leaves keeps its entry (marked absent) and gets it back when it returns.
    MachineIdx
);
idx_type!(
    /// A unit's position in the unit table; a name referenced only by `MachineOf=` has
    /// an entry too (marked as not existing).
    UnitIdx
);
idx_type!(
    /// An interned requirement record (everything a unit file asks for but its name).
    ReqIdx
);
idx_type!(
    /// An interned glob from `Conflicts=` or `Replaces=`.
    PatternIdx
);
idx_type!(
    /// An interned, sorted list of patterns: the patterns matching a unit's name.
    PatternListIdx
);
idx_type!(
    /// A metadata class: the machines satisfying one `MachineMetadata=` requirement.
    ClassIdx
);
idx_type!(
    /// An interned metadata key.
    KeyIdx
);
idx_type!(
    /// An interned metadata value.
    ValueIdx
);
idx_type!(
    /// An interned spread group (a template's or a unit's base name).
    GroupIdx
);

// The first entry of these tables is made when the scheduler is created, and is special.
impl ReqIdx {
    /// The requirement of a unit that asks for nothing. A name known only from another
    /// unit's `MachineOf=` points here too, which makes it a plain, non-global unit.
    pub(crate) const PLAIN: ReqIdx = ReqIdx(NonZeroU32::MIN);
}

impl PatternListIdx {
    /// The empty list.
    pub(crate) const EMPTY: PatternListIdx = PatternListIdx(NonZeroU32::MIN);
}

impl ClassIdx {
    /// The class of the empty requirement: every present machine.
    pub(crate) const ANY: ClassIdx = ClassIdx(NonZeroU32::MIN);
}

/// A vector indexed by `I` only.
pub(crate) struct IdxVec<I, T> {
    raw: Vec<T>,
    idx: PhantomData<fn(I) -> I>,
}

impl<I: Idx, T> IdxVec<I, T> {
    /// An empty table.
    pub(crate) fn new() -> IdxVec<I, T> {
        IdxVec::from_vec(Vec::new())
    }

    /// A table whose entry at index `I::new(n)` is `raw[n]`.
    pub(crate) fn from_vec(raw: Vec<T>) -> IdxVec<I, T> {
        IdxVec {
            raw,
            idx: PhantomData,
        }
    }

    /// Appends an entry and returns its index.
    #[inline]
    pub(crate) fn push(&mut self, value: T) -> I {
        let i = I::new(self.raw.len());
        self.raw.push(value);
        i
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.raw.reserve(additional);
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.raw.iter()
    }

    /// Entries with their indexes, in index order.
    pub(crate) fn iter_enumerated(&self) -> impl Iterator<Item = (I, &T)> + '_ {
        self.raw.iter().enumerate().map(|(i, t)| (I::new(i), t))
    }

    /// Every index, in order.
    pub(crate) fn indices(&self) -> impl Iterator<Item = I> + 'static {
        (0..self.raw.len()).map(I::new)
    }
}

impl<I, T> Index<I> for IdxVec<I, T>
where
    I: Idx,
{
    type Output = T;
    #[inline]
    fn index(&self, i: I) -> &T {
        &self.raw[i.index()]
    }
}

impl<I, T> IndexMut<I> for IdxVec<I, T>
where
    I: Idx,
{
    #[inline]
    fn index_mut(&mut self, i: I) -> &mut T {
        &mut self.raw[i.index()]
    }
}

// Written out, not derived: a derive would demand `I: Default` / `I: Clone` too.
impl<I, T> Default for IdxVec<I, T> {
    fn default() -> IdxVec<I, T> {
        IdxVec {
            raw: Vec::new(),
            idx: PhantomData,
        }
    }
}

impl<I, T: Clone> Clone for IdxVec<I, T> {
    fn clone(&self) -> IdxVec<I, T> {
        IdxVec {
            raw: self.raw.clone(),
            idx: PhantomData,
        }
    }
}

impl<I, T: fmt::Debug> fmt::Debug for IdxVec<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::{Idx, IdxVec, MachineIdx, UnitIdx};

    #[test]
    fn indexes_round_trip_and_keep_their_order() {
        for i in [0usize, 1, 2, 1000, u32::MAX as usize - 1] {
            assert_eq!(MachineIdx::new(i).index(), i);
        }
        assert!(MachineIdx::new(3) < MachineIdx::new(4));
        assert!(None < Some(MachineIdx::new(0)));
        assert_eq!(format!("{:?}", UnitIdx::new(7)), "UnitIdx(7)");
    }

    #[test]
    #[should_panic(expected = "more than 2^32 - 2 entries")]
    fn the_last_u32_is_not_an_index() {
        let _ = MachineIdx::new(u32::MAX as usize);
    }

    #[test]
    fn a_table_hands_out_its_indexes() {
        let mut t: IdxVec<UnitIdx, &str> = IdxVec::new();
        let a = t.push("a");
        let b = t.push("b");
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(t[b], "b");
        t[a] = "c";
        let all: Vec<(UnitIdx, &&str)> = t.iter_enumerated().collect();
        assert_eq!(all, vec![(a, &"c"), (b, &"b")]);
        assert_eq!(t.indices().collect::<Vec<_>>(), vec![a, b]);
    }
}
