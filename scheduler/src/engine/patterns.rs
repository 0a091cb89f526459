//! Glob patterns from `Conflicts=` and `Replaces=`: where the units declaring them run,
//! where the units they match run, and which patterns match a name.

use rustc_hash::FxHashMap;

use super::Scheduler;
use super::idx::{MachineIdx, PatternIdx, PatternListIdx};
use crate::glob::Glob;

/// A glob, and where the units that declare it and the units it matches run.
#[derive(Debug, Clone, Default)]
pub(super) struct PatRec {
    glob: Option<Glob>,
    /// Machines hosting units that declare this pattern in `Conflicts=`, with counts.
    pub(super) conf_decl: FxHashMap<MachineIdx, u32>,
    /// The same for `Replaces=`.
    pub(super) rep_decl: FxHashMap<MachineIdx, u32>,
    /// Machines hosting units whose name the pattern matches, with counts.
    pub(super) matched_on: FxHashMap<MachineIdx, u32>,
}

impl Scheduler {
    pub(super) fn intern_list(&mut self, mut v: Vec<PatternIdx>) -> PatternListIdx {
        v.sort_unstable();
        v.dedup();
        if let Some(&i) = self.list_by.get(v.as_slice()) {
            return i;
        }
        let b: Box<[PatternIdx]> = v.into();
        let i = self.lists.push(b.clone());
        self.list_by.insert(b, i);
        i
    }

    /// Interns a glob; when `existing_units` is set, finds the units it already matches.
    pub(super) fn intern_pattern(&mut self, text: &str, existing_units: bool) -> PatternIdx {
        if let Some(&p) = self.pat_by_text.get(text) {
            return p;
        }
        let glob = Glob::new(text);
        let p = self.pats.push(PatRec {
            glob: Some(glob.clone()),
            ..PatRec::default()
        });
        let prefix: Box<str> = glob.literal_prefix().into();
        if prefix.len() < 128 {
            self.prefix_lens |= 1 << prefix.len();
        } else {
            self.long_prefixes = true;
        }
        self.pat_by_prefix
            .entry(prefix.clone())
            .or_default()
            .push(p);
        self.pat_by_text.insert(text.into(), p);
        if existing_units && glob.is_valid() {
            for u in self.units.indices() {
                let name = &self.units[u].name;
                if !name.starts_with(&*prefix) || !glob.matches(name) {
                    continue;
                }
                let mut list = self.lists[self.units[u].matches].to_vec();
                list.push(p);
                self.units[u].matches = self.intern_list(list);
                // Count where it already runs.
                let rec = &self.units[u];
                let mut hosts = Vec::new();
                if let Some(m) = rec.machine {
                    hosts.push(m);
                } else if self.reqs[rec.req].global {
                    hosts.extend(
                        self.machines
                            .iter_enumerated()
                            .filter(|(_, m)| m.present && m.globals.contains(&u))
                            .map(|(i, _)| i),
                    );
                }
                for h in hosts {
                    *self.pats[p].matched_on.entry(h).or_default() += 1;
                }
            }
        }
        p
    }

    /// The patterns matching a name, found through their literal prefixes.
    pub(super) fn patterns_matching(&self, name: &str) -> Vec<PatternIdx> {
        let mut out = Vec::new();
        let mut check = |prefix: &str| {
            if let Some(ps) = self.pat_by_prefix.get(prefix) {
                for &p in ps {
                    if self.pats[p].glob.as_ref().is_some_and(|g| g.matches(name)) {
                        out.push(p);
                    }
                }
            }
        };
        let mut lens = self.prefix_lens;
        while lens != 0 {
            let n = lens.trailing_zeros() as usize;
            lens &= lens - 1;
            if n <= name.len() && name.is_char_boundary(n) {
                check(&name[..n]);
            }
        }
        if self.long_prefixes {
            for n in 128..=name.len() {
                if name.is_char_boundary(n) {
                    check(&name[..n]);
                }
            }
        }
        out
    }

    pub(super) fn pat_text(&self, p: PatternIdx) -> &str {
        self.pats[p].glob.as_ref().map_or("", |g| g.as_str())
    }
}
