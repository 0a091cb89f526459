//! Strings (metadata keys and values, spread groups) numbered in order of first use.

use rustc_hash::FxHashMap;

use super::idx::{Idx, IdxVec};

/// Strings numbered in order of first appearance.
#[derive(Debug, Clone)]
pub(super) struct Interner<I> {
    ids: FxHashMap<Box<str>, I>,
    names: IdxVec<I, Box<str>>,
}

impl<I> Default for Interner<I> {
    fn default() -> Interner<I> {
        Interner {
            ids: FxHashMap::default(),
            names: IdxVec::default(),
        }
    }
}

impl<I: Idx> Interner<I> {
    pub(super) fn intern(&mut self, s: &str) -> I {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }
    pub(super) fn name(&self, i: I) -> &str {
        &self.names[i]
    }
}
