//! Metadata classes: each distinct `MachineMetadata=` requirement with the machines
//! satisfying it, in (load, machine ID) order.

use std::collections::BTreeMap;

use super::Scheduler;
use super::idx::{ClassIdx, KeyIdx, MachineIdx, ValueIdx};
use super::order::LoadOrder;

/// A metadata requirement: for each key (sorted), the allowed values (sorted).
pub(super) type MetaReq = Box<[(KeyIdx, Box<[ValueIdx]>)]>;

/// A metadata class: its requirement, and its present members by (load, machine ID).
#[derive(Debug, Clone)]
pub(super) struct MetaClass {
    pub(super) req: MetaReq,
    pub(super) order: LoadOrder,
}

impl Scheduler {
    /// The class of machines satisfying a metadata requirement, created on first use.
    pub(super) fn class_for(&mut self, pairs: &[(KeyIdx, ValueIdx)]) -> ClassIdx {
        if pairs.is_empty() {
            return ClassIdx::ANY;
        }
        let mut req: BTreeMap<KeyIdx, Vec<ValueIdx>> = BTreeMap::new();
        for &(k, v) in pairs {
            req.entry(k).or_default().push(v);
        }
        let req: MetaReq = req
            .into_iter()
            .map(|(k, mut vs)| {
                vs.sort_unstable();
                vs.dedup();
                (k, vs.into_boxed_slice())
            })
            .collect();
        self.class_for_req(req)
    }

    fn class_for_req(&mut self, req: MetaReq) -> ClassIdx {
        if let Some(&c) = self.class_by_req.get(&req) {
            return c;
        }
        // Candidates: machines having one of the allowed values of the rarest key.
        let mut best: Option<Vec<MachineIdx>> = None;
        for (k, vals) in req.iter() {
            let mut cand: Vec<MachineIdx> = Vec::new();
            for v in vals.iter() {
                if let Some(list) = self.kv_index.get(&(*k, *v)) {
                    cand.extend_from_slice(list);
                }
            }
            if best.as_ref().is_none_or(|b| cand.len() < b.len()) {
                best = Some(cand);
            }
        }
        let mut members: Vec<MachineIdx> = best
            .unwrap_or_default()
            .into_iter()
            .filter(|&m| {
                let rec = &self.machines[m];
                rec.present && class_matches(&req, &rec.meta).is_ok()
            })
            .collect();
        members.sort_unstable_by_key(|&m| self.machines[m].rank);
        members.dedup();
        let mut order = LoadOrder::with_members(members.clone());
        for (p, &m) in members.iter().enumerate() {
            order.insert(p, self.machines[m].load);
        }
        let c = self.classes.push(MetaClass {
            req: req.clone(),
            order,
        });
        for (p, &m) in members.iter().enumerate() {
            self.machines[m].classes.push((c, p as u32));
        }
        self.class_by_req.insert(req, c);
        c
    }

    /// The class `c` narrowed to machines whose `key` is `val`, or `None` when `c` does
    /// not allow that value.
    pub(super) fn narrowed_class(
        &mut self,
        c: ClassIdx,
        key: KeyIdx,
        val: ValueIdx,
    ) -> Option<ClassIdx> {
        let mut req: Vec<(KeyIdx, Box<[ValueIdx]>)> = self.classes[c].req.to_vec();
        match req.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => {
                if !req[i].1.contains(&val) {
                    return None;
                }
                req[i].1 = Box::new([val]);
            }
            Err(i) => req.insert(i, (key, Box::new([val]))),
        }
        Some(self.class_for_req(req.into_boxed_slice()))
    }

    pub(super) fn describe_meta(&self, c: ClassIdx, key: KeyIdx) -> String {
        let req = &self.classes[c].req;
        let vals = req
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| &**v)
            .unwrap_or(&[]);
        let mut vals: Vec<&str> = vals.iter().map(|&v| self.vals.name(v)).collect();
        vals.sort_unstable();
        format!("{}={}", self.keys.name(key), vals.join("|"))
    }
}

/// Checks machine metadata against a requirement; on failure, the first key not satisfied.
pub(super) fn class_matches(
    req: &[(KeyIdx, Box<[ValueIdx]>)],
    meta: &[(KeyIdx, ValueIdx)],
) -> Result<(), KeyIdx> {
    for (k, vals) in req {
        match meta.binary_search_by_key(k, |&(mk, _)| mk) {
            Ok(i) if vals.contains(&meta[i].1) => {}
            _ => return Err(*k),
        }
    }
    Ok(())
}
