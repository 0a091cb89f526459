//! The tree's nodes ([`Node`], internal) and their external form ([`NodeView`]).

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::{format_rfc3339, parse_rfc3339, ttl_seconds};

/// Marker for "no expiry" in [`Node::expire_at`]; keeps the node 8 bytes smaller than an
/// `Option<u64>` would.
pub(crate) const PERMANENT: u64 = u64::MAX;

/// A directory's children, keyed by their last path component: an open-addressing hash
/// table with linear probing, whose slots hold the entries themselves with 32 bits of
/// their name's hash.
///
/// A hash table, not a sorted map: a B-tree of boxed names chases a pointer for every
/// comparison (measured 3x slower on a million keys). Order is imposed where it matters:
/// listings and snapshots sort by name. The hash ([`hash_name`]) is fixed, so the table
/// behaves the same on every replica; nothing replicated depends on its order anyway.
///
/// Why not std's `HashMap` (hashbrown): on a large store every lookup misses the cache
/// and the TLB, and hashbrown's separate control-byte array is one more place touched per
/// lookup (control bytes, then slot, then the name+value block). Here a slot is one
/// 64-byte cache line that carries a hash tag, so a lookup touches the slot line (and,
/// rarely, the next ones) and then the block. The table also hashes a name once per
/// operation and changes an entry's key (a file's value lives in its [`Name`]) in place.
#[derive(Debug, Clone, Default)]
pub(crate) struct Children {
    /// A power of two in length (or empty), never more than [`Children::MAX_LOAD`] full.
    slots: Vec<Slot>,
    len: usize,
}

/// One slot of [`Children`]: an entry, or none, and the low 32 bits of the hash of its
/// name (which also give its home slot). Aligned so that a slot is one cache line.
#[derive(Debug, Clone, Default)]
#[repr(align(64))]
pub(crate) struct Slot {
    hash: u32,
    entry: Option<(Name, Node)>,
}

impl Children {
    /// Grow beyond three quarters full: linear probing stays short (a hit probes about
    /// 2.5 slots at worst, usually one).
    const MAX_LOAD: (usize, usize) = (3, 4);

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Name, &Node)> {
        self.into_iter()
    }

    /// The slot holding `name` (whose hash is `hash`), if any.
    #[inline]
    fn find(&self, hash: u64, name: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = hash as u32;
        let mut i = tag as usize & mask;
        loop {
            let slot = &self.slots[i];
            match &slot.entry {
                None => return None,
                Some((n, _)) if slot.hash == tag && n.name() == name => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    #[inline]
    pub(crate) fn get_key_value(&self, name: &str) -> Option<(&Name, &Node)> {
        let i = self.find(hash_name(name), name)?;
        self.slots[i].entry.as_ref().map(|(k, v)| (k, v))
    }

    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&Node> {
        self.get_key_value(name).map(|(_, v)| v)
    }

    #[inline]
    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get_key_value(name).is_some()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.entry_mut(name).map(|(_, v)| v)
    }

    /// The entry of `name`, key included: a file's value can be changed in place.
    #[inline]
    pub(crate) fn entry_mut(&mut self, name: &str) -> Option<(&mut Name, &mut Node)> {
        self.entry_mut_hashed(hash_name(name), name)
    }

    /// [`Children::entry_mut`] with the hash of `name` already computed.
    #[inline]
    pub(crate) fn entry_mut_hashed(
        &mut self,
        hash: u64,
        name: &str,
    ) -> Option<(&mut Name, &mut Node)> {
        let i = self.find(hash, name)?;
        self.slots[i].entry.as_mut().map(|(k, v)| (k, v))
    }

    /// Inserts or replaces the entry of `name`, returning the replaced one.
    pub(crate) fn insert(&mut self, name: Name, node: Node) -> Option<(Name, Node)> {
        let hash = hash_name(name.name());
        match self.find(hash, name.name()) {
            Some(i) => self.slots[i].entry.replace((name, node)),
            None => {
                self.insert_new_hashed(hash, name, node);
                None
            }
        }
    }

    /// Inserts an entry for a name known to be absent, with the hash of its name.
    pub(crate) fn insert_new_hashed(&mut self, hash: u64, name: Name, node: Node) {
        let (num, den) = Self::MAX_LOAD;
        if (self.len + 1) * den > self.slots.len() * num {
            self.grow();
        }
        self.place(hash as u32, (name, node));
        self.len += 1;
    }

    /// Puts an entry into the first free slot from its home slot on.
    fn place(&mut self, tag: u32, entry: (Name, Node)) {
        let mask = self.slots.len() - 1;
        let mut i = tag as usize & mask;
        while self.slots[i].entry.is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            hash: tag,
            entry: Some(entry),
        };
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(4);
        let mut old = std::mem::take(&mut self.slots);
        self.slots.resize_with(cap, Slot::default);
        for slot in &mut old {
            if let Some(entry) = slot.entry.take() {
                self.place(slot.hash, entry);
            }
        }
    }

    pub(crate) fn remove_entry(&mut self, name: &str) -> Option<(Name, Node)> {
        let mut hole = self.find(hash_name(name), name)?;
        let removed = self.slots[hole].entry.take();
        self.len -= 1;
        // Backward-shift deletion: move later entries of the probe run into the hole
        // when that keeps them at or after their home slot, so no lookup ever stops at
        // the hole before reaching them (and no tombstones are needed).
        let mask = self.slots.len() - 1;
        let mut j = (hole + 1) & mask;
        while self.slots[j].entry.is_some() {
            let home = self.slots[j].hash as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots.swap(hole, j);
                hole = j;
            }
            j = (j + 1) & mask;
        }
        removed
    }
}

impl<'a> IntoIterator for &'a Children {
    type Item = (&'a Name, &'a Node);
    type IntoIter = std::iter::FilterMap<
        std::slice::Iter<'a, Slot>,
        fn(&'a Slot) -> Option<(&'a Name, &'a Node)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.slots
            .iter()
            .filter_map(|s| s.entry.as_ref().map(|(k, v)| (k, v)))
    }
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The fixed hash of a path component: FxHash's word-at-a-time multiply-rotate, with
/// murmur3's final avalanche so that the low bits the table indexes by depend on every
/// input byte.
///
/// std's default SipHash cost about as much as the rest of a lookup on these short
/// names. Like the fixed-key SipHash it replaced, it offers no protection against keys
/// chosen to collide; the keys come from the cluster's own clients.
#[inline]
pub(crate) fn hash_name(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let mut h: u64 = 0;
    let mut add = |word: u64| h = (h.rotate_left(5) ^ word).wrapping_mul(SEED);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    let mut buf = [0u8; 8];
    buf[..rest.len()].copy_from_slice(rest);
    // The length keeps "a" and "a\0" apart.
    add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59));
    // murmur3's fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The key of an entry in [`Children`]: the child's name and, for a file, its value, in
/// one allocation (`buf` is the name followed by the value).
///
/// A lookup compares the name and a read then copies the value: with both in one block
/// that is one cache (and TLB) miss fewer per operation on a large store, and one heap
/// block fewer per key. [`Children`] hashes and compares the name only, and changes a
/// value in place ([`Name::set_value`]).
#[derive(Debug, Clone)]
pub(crate) struct Name {
    buf: Box<str>,
    name_len: usize,
}

impl Name {
    /// A file's entry.
    pub(crate) fn file(name: &str, value: &str) -> Name {
        let mut buf = String::with_capacity(name.len() + value.len());
        buf.push_str(name);
        buf.push_str(value);
        Name {
            buf: buf.into_boxed_str(),
            name_len: name.len(),
        }
    }

    /// A directory's entry (no value).
    pub(crate) fn dir(name: &str) -> Name {
        Name {
            buf: name.into(),
            name_len: name.len(),
        }
    }

    #[inline]
    pub(crate) fn name(&self) -> &str {
        &self.buf[..self.name_len]
    }

    /// The value of a file ("" for a directory).
    #[inline]
    pub(crate) fn value(&self) -> &str {
        &self.buf[self.name_len..]
    }

    /// Replaces a file's value (a new block), returning the old value.
    pub(crate) fn set_value(&mut self, value: &str) -> String {
        let new = Name::file(self.name(), value);
        std::mem::replace(self, new).into_value()
    }

    /// The value, moved out (a `memmove` within the block, no allocation).
    pub(crate) fn into_value(self) -> String {
        let mut s = self.buf.into_string();
        s.drain(..self.name_len);
        s
    }
}

/// A file or a directory. Nodes do not store their path: it is the walk that found
/// them, which saves a heap allocation and the key bytes per node. A file's value is
/// in its [`Name`], the key of its parent's map.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) created_index: u64,
    pub(crate) modified_index: u64,
    /// Milliseconds since the epoch, or [`PERMANENT`].
    pub(crate) expire_at: u64,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    File,
    /// Boxed: a table is 32 bytes and directories are few, so keeping it out of line
    /// keeps every node, and every hash-table slot of a file, small.
    Dir(Box<Children>),
}

impl Node {
    pub(crate) fn file(index: u64, expire_at: u64) -> Node {
        Node {
            created_index: index,
            modified_index: index,
            expire_at,
            kind: Kind::File,
        }
    }

    pub(crate) fn dir(index: u64, expire_at: u64) -> Node {
        Node {
            created_index: index,
            modified_index: index,
            expire_at,
            kind: Kind::Dir(Box::default()),
        }
    }

    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    pub(crate) fn children(&self) -> Option<&Children> {
        match &self.kind {
            Kind::Dir(c) => Some(c),
            Kind::File => None,
        }
    }

    pub(crate) fn children_mut(&mut self) -> Option<&mut Children> {
        match &mut self.kind {
            Kind::Dir(c) => Some(c),
            Kind::File => None,
        }
    }

    pub(crate) fn expiration(&self) -> Option<u64> {
        (self.expire_at != PERMANENT).then_some(self.expire_at)
    }

    /// The external form; `value` is the file's value (from its [`Name`]). `recursive`
    /// includes all descendants; otherwise a directory lists nothing (etcd's `Repr`: the
    /// caller lists direct children separately).
    pub(crate) fn view(&self, key: String, value: &str, recursive: bool, now: u64) -> NodeView {
        let mut v = self.view_shallow(key, value, now);
        if let (true, Some(children)) = (recursive, self.children()) {
            v.nodes = list(&v.key, children, true, now);
        }
        v
    }

    /// The external form without children; `value` is the file's value.
    pub(crate) fn view_shallow(&self, key: String, value: &str, now: u64) -> NodeView {
        let value = (!self.is_dir()).then(|| value.to_owned());
        self.view_with_value(key, value, now)
    }

    /// The external form without children, with the given `value` (`None` for a
    /// directory), which the caller may have moved out of a replaced entry.
    pub(crate) fn view_with_value(&self, key: String, value: Option<String>, now: u64) -> NodeView {
        let expiration = self.expiration();
        let ttl = expiration.map(|e| ttl_seconds(e, now)).filter(|t| *t != 0);
        NodeView {
            key,
            value,
            dir: self.is_dir(),
            expiration,
            ttl,
            nodes: Vec::new(),
            modified_index: self.modified_index,
            created_index: self.created_index,
        }
    }
}

/// Visible children of a directory at `dir_key`, in key order, hidden ones skipped.
pub(crate) fn list(dir_key: &str, children: &Children, recursive: bool, now: u64) -> Vec<NodeView> {
    sorted_where(children, |name| !name.name().starts_with('_'))
        .into_iter()
        .map(|(name, child)| child.view(join(dir_key, name.name()), name.value(), recursive, now))
        .collect()
}

/// A directory's children sorted by name (for deterministic output).
///
/// Every name lives in an allocation of its own, so comparing two reads two cache lines
/// from anywhere in memory: sorting a directory of a million children that way took most
/// of two seconds, the bulk of a snapshot's encoding. Each name's first eight bytes are
/// read once and sorted beside it instead; they settle every comparison of names that
/// differ there.
pub(crate) fn sorted(children: &Children) -> Vec<(&Name, &Node)> {
    sorted_where(children, |_| true)
}

/// [`sorted`], of the children whose name passes `keep`.
fn sorted_where(children: &Children, keep: impl Fn(&Name) -> bool) -> Vec<(&Name, &Node)> {
    let mut v: Vec<(u64, &Name, &Node)> = children
        .iter()
        .filter(|(name, _)| keep(name))
        .map(|(name, node)| (name_prefix(name.name()), name, node))
        .collect();
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name().cmp(b.1.name())));
    v.into_iter().map(|(_, name, node)| (name, node)).collect()
}

/// The first eight bytes of `name`, zero-padded, as a big-endian number: where two
/// prefixes differ, they order as the names do (a name that ends inside the prefix pads
/// with zeros, below any byte another name has there; equal prefixes compare the names).
fn name_prefix(name: &str) -> u64 {
    let b = name.as_bytes();
    let mut p = [0u8; 8];
    let n = b.len().min(8);
    p[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(p)
}

/// `dir + "/" + name`, with the root written as `/`.
pub(crate) fn join(dir: &str, name: &str) -> String {
    let mut s = String::with_capacity(dir.len() + 1 + name.len());
    s.push_str(dir);
    if !dir.ends_with('/') {
        s.push('/');
    }
    s.push_str(name);
    s
}

/// A node as [`crate::Store::get_ref`] finds it, borrowed from the store: nothing is
/// copied or allocated until asked for.
///
/// [`crate::Store::get`] is `get_ref` followed by [`NodeRef::to_view`], so both agree
/// field for field. A front end that serializes the node itself (or only needs its
/// value or indexes) can skip the owned [`NodeView`] and its two string allocations.
#[derive(Debug, Clone)]
pub struct NodeRef<'a> {
    pub(crate) key: Cow<'a, str>,
    pub(crate) value: &'a str,
    pub(crate) node: &'a Node,
    pub(crate) now: u64,
}

impl<'a> NodeRef<'a> {
    /// The clean absolute key (`/` for the root): borrowed when the key asked for was
    /// already clean.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value of a file; `None` for a directory.
    pub fn value(&self) -> Option<&'a str> {
        (!self.node.is_dir()).then_some(self.value)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.node.is_dir()
    }

    /// Index of the node's creation (0 for the root).
    pub fn created_index(&self) -> u64 {
        self.node.created_index
    }

    /// Index of the last change to this node (0 for the root).
    pub fn modified_index(&self) -> u64 {
        self.node.modified_index
    }

    /// Expiry time in milliseconds since the Unix epoch, if the node has a TTL.
    pub fn expiration(&self) -> Option<u64> {
        self.node.expiration()
    }

    /// Seconds left, rounded up, as of the `now` of the read; `None` when permanent or
    /// exactly zero (as [`NodeView::ttl`]).
    pub fn ttl(&self) -> Option<i64> {
        self.expiration()
            .map(|e| ttl_seconds(e, self.now))
            .filter(|t| *t != 0)
    }

    /// The owned form, exactly as [`crate::Store::get`] returns it: a directory lists its
    /// visible children, sorted (all descendants when `recursive`).
    pub fn to_view(&self, recursive: bool) -> NodeView {
        self.clone().into_view(recursive)
    }

    /// [`NodeRef::to_view`], reusing the key if it is owned.
    pub fn into_view(self, recursive: bool) -> NodeView {
        let mut view = self
            .node
            .view_shallow(self.key.into_owned(), self.value, self.now);
        if let Some(children) = self.node.children() {
            view.nodes = list(&view.key, children, recursive, self.now);
        }
        view
    }
}

/// A node as clients see it (etcd's `NodeExtern`).
///
/// The serde form is etcd's v2 JSON, field for field: `key` (omitted for the root, whose
/// key is `/` here), `value` (files only), `dir` (only when true), `expiration` (RFC 3339,
/// UTC), `ttl` (omitted when zero), `nodes` (omitted when empty), `modifiedIndex` and
/// `createdIndex` (omitted when zero, i.e. for the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// Absolute key, no trailing slash; `/` for the root.
    #[serde(default = "root_key", skip_serializing_if = "is_root")]
    pub key: String,
    /// The value of a file; `None` for directories and for the `node` of delete and expire
    /// events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether this is a directory.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// Expiry time in milliseconds since the Unix epoch (RFC 3339 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub expiration: Option<u64>,
    /// Seconds left, rounded up, as of the `now` of the operation; `None` when permanent
    /// or exactly zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Visible children (directories only), sorted by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeView>,
    /// Index of the last change to this node (0 for the root).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub modified_index: u64,
    /// Index of the node's creation (0 for the root).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_index: u64,
}

impl NodeView {
    /// Makes `self` equal to `src`, reusing `self`'s string buffers (the event history
    /// recycles its oldest entry this way instead of allocating a copy of every event).
    pub(crate) fn copy_from(&mut self, src: &NodeView) {
        self.key.clone_from(&src.key);
        self.value.clone_from(&src.value);
        self.dir = src.dir;
        self.expiration = src.expiration;
        self.ttl = src.ttl;
        self.nodes.clone_from(&src.nodes);
        self.modified_index = src.modified_index;
        self.created_index = src.created_index;
    }
}

fn root_key() -> String {
    "/".to_owned()
}

fn is_root(k: &str) -> bool {
    k == "/"
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

mod rfc3339_opt {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ms) => s.serialize_str(&format_rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            parse_rfc3339(&s).ok_or_else(|| {
                serde::de::Error::custom(format_args!("invalid RFC 3339 time {s:?}"))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Where two names' prefixes differ, they order as the names do, so sorting by
        /// prefix and then by name is sorting by name.
        #[test]
        fn name_prefixes_order_as_names_do(
            a in "[a\\x00\\x01\\x7fé-]{0,12}",
            b in "[a\\x00\\x01\\x7fé-]{0,12}",
        ) {
            let (pa, pb) = (name_prefix(&a), name_prefix(&b));
            if pa != pb {
                prop_assert_eq!(pa.cmp(&pb), a.as_bytes().cmp(b.as_bytes()));
            }
        }
    }

    #[test]
    fn children_sort_by_name_bytes() {
        let names = [
            "k10",
            "k1",
            "",
            "k1\0",
            "kk",
            "k100000000",
            "k10000000",
            "é",
            "K",
            "k2",
        ];
        let mut c = Children::default();
        for n in names {
            c.insert(Name::file(n, "v"), Node::file(1, PERMANENT));
        }
        let got: Vec<&str> = sorted(&c).iter().map(|(n, _)| n.name()).collect();
        let mut want = names.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn json_matches_etcd_field_rules() {
        let n = Node::file(8, PERMANENT);
        let v = n.view("/foo".into(), "v", false, 0);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"key":"/foo","value":"v","modifiedIndex":8,"createdIndex":8}"#
        );
        let root = Node::dir(0, PERMANENT).view("/".into(), "", true, 0);
        assert_eq!(serde_json::to_string(&root).unwrap(), r#"{"dir":true}"#);
        let t = Node::file(3, 10_500).view("/t".into(), "", false, 0);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"key":"/t","value":"","expiration":"1970-01-01T00:00:10.5Z","ttl":11,"modifiedIndex":3,"createdIndex":3}"#
        );
        for v in [v, root, t] {
            let back: NodeView = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn nodes_stay_small() {
        // Three indexes and a boxed map or nothing: memory per key depends on it.
        assert_eq!(std::mem::size_of::<Node>(), 32);
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }

    #[test]
    fn name_hash_separates_names() {
        let names = [
            "",
            "a",
            "a\0",
            "ab",
            "abcdefgh",
            "abcdefgh\0",
            "object-0000000000000001-abcdefghij",
        ];
        let hashes: std::collections::HashSet<u64> = names.iter().map(|n| hash_name(n)).collect();
        assert_eq!(hashes.len(), names.len());
    }

    #[test]
    fn names_carry_values_but_compare_by_name() {
        let mut c = Children::default();
        c.insert(Name::file("k", "value"), Node::file(1, PERMANENT));
        let (name, _) = c.get_key_value("k").unwrap();
        assert_eq!((name.name(), name.value()), ("k", "value"));
        let (name, _) = c.entry_mut("k").unwrap();
        assert_eq!(name.set_value("new"), "value");
        assert_eq!(c.get_key_value("k").unwrap().0.value(), "new");
        let old = c.insert(Name::file("k", "other"), Node::file(2, PERMANENT));
        assert_eq!(old.unwrap().0.value(), "new");
        assert_eq!((c.len(), c.get("k").unwrap().created_index), (1, 2));
        let (name, _) = c.remove_entry("k").unwrap();
        assert_eq!(name.into_value(), "other");
        assert!(c.is_empty() && c.remove_entry("k").is_none());
        assert_eq!(Name::dir("d").value(), "");
    }

    proptest::proptest! {
        /// The table against a `BTreeMap`: inserts, replacements, in-place value
        /// changes and removals (backward shifts across the table's end included).
        #[test]
        fn children_match_a_map(ops in proptest::collection::vec((0u8..4, 0u32..48), 0..400)) {
            let mut c = Children::default();
            let mut m = std::collections::BTreeMap::new();
            for (step, (op, k)) in ops.into_iter().enumerate() {
                let name = format!("n{k}");
                let value = format!("v{step}");
                match op {
                    0 => {
                        let old = c.insert(Name::file(&name, &value), Node::file(step as u64, PERMANENT));
                        let want = m.insert(name.clone(), (value, step as u64));
                        proptest::prop_assert_eq!(
                            old.map(|(n, node)| (n.into_value(), node.created_index)),
                            want
                        );
                    }
                    1 => {
                        let old = c.remove_entry(&name);
                        let want = m.remove(&name);
                        proptest::prop_assert_eq!(
                            old.map(|(n, node)| (n.name().to_owned(), n.into_value(), node.created_index)),
                            want.map(|(v, i)| (name.clone(), v, i))
                        );
                    }
                    2 => {
                        let got = c.entry_mut(&name).map(|(n, _)| n.set_value(&value));
                        let want = m.get_mut(&name).map(|e| std::mem::replace(&mut e.0, value));
                        proptest::prop_assert_eq!(got, want);
                    }
                    _ => {
                        let got = c.get_key_value(&name).map(|(n, node)| (n.value().to_owned(), node.created_index));
                        proptest::prop_assert_eq!(got.as_ref(), m.get(&name));
                        proptest::prop_assert_eq!(c.contains_key(&name), m.contains_key(&name));
                    }
                }
                proptest::prop_assert_eq!((c.len(), c.is_empty()), (m.len(), m.is_empty()));
            }
            let all: Vec<(String, String, u64)> = sorted(&c)
                .into_iter()
                .map(|(n, node)| (n.name().to_owned(), n.value().to_owned(), node.created_index))
                .collect();
            let want: Vec<(String, String, u64)> = m.into_iter().map(|(k, (v, i))| (k, v, i)).collect();
            proptest::prop_assert_eq!(all, want);
        }
    }

    #[test]
    fn slots_are_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn listing_skips_hidden_and_sorts() {
        let mut d = Node::dir(1, PERMANENT);
        let c = d.children_mut().unwrap();
        c.insert(Name::file("b", "2"), Node::file(2, PERMANENT));
        c.insert(Name::file("_h", "h"), Node::file(3, PERMANENT));
        c.insert(Name::dir("a"), Node::dir(4, PERMANENT));
        let keys: Vec<_> = list("/d", d.children().unwrap(), false, 0)
            .into_iter()
            .map(|v| v.key)
            .collect();
        assert_eq!(keys, ["/d/a", "/d/b"]);
        assert_eq!(join("/", "x"), "/x");
    }
}
