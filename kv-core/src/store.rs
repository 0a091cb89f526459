//! [`Store`]: the tree, the index, the TTL index, the history and the watchers.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::command::{Command, Compare, CompareTarget, Op, Txn};
use crate::error::{Error, Result};
use crate::event::{Action, Batch, Event};
use crate::node::{Children, Name, Node, NodeRef, NodeView, PERMANENT, hash_name};
use crate::path::{clean, components, is_clean, next_slash, split};
use crate::watch::{EventHistory, Notification, WatchStart, WatcherHub, WatcherId};

/// The etcd v2 store: a deterministic state machine over a tree of nodes.
///
/// Mutations go through [`Store::apply`] with a [`Command`] that carries the leader's
/// clock; reads through [`Store::get`]. Nothing here reads a clock or does I/O.
#[derive(Debug)]
pub struct Store {
    pub(crate) root: Node,
    pub(crate) index: u64,
    /// `(expire_at, key)` of every node with a TTL: expiry pops from the front in
    /// O(log n), and ties expire in key order, deterministically.
    pub(crate) ttl: BTreeSet<(u64, Box<str>)>,
    pub(crate) history: EventHistory,
    pub(crate) hub: WatcherHub,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// What one single-key operation did, before it is published to history and watchers.
struct Applied {
    event: Event,
    refresh: bool,
    /// The subtree a delete or expiry removed (for watchers below it).
    removed: Option<Node>,
}

/// How to revert one operation of a transaction that must be rolled back.
enum Undo {
    /// Make the node at `path` be `old` again (`None`: remove it).
    Node {
        path: String,
        old: Option<(Name, Node)>,
    },
    /// Restore a node's fields changed in place by an update.
    Meta {
        path: String,
        modified_index: u64,
        expire_at: u64,
        value: Option<Box<str>>,
    },
}

fn view_root() -> NodeView {
    NodeView {
        key: "/".into(),
        dir: true,
        ..Default::default()
    }
}

fn root_ro(index: u64) -> Error {
    Error::RootReadOnly {
        cause: "/".into(),
        index,
    }
}

impl Store {
    /// An empty store at index 0.
    pub fn new() -> Store {
        Store::with_index(0)
    }

    /// An empty store whose index starts at `index` (the next write gets `index + 1`).
    pub fn with_index(index: u64) -> Store {
        Store {
            root: Node::dir(0, PERMANENT),
            index,
            ttl: BTreeSet::new(),
            history: EventHistory::default(),
            hub: WatcherHub::default(),
        }
    }

    /// The store index: the number of the last successful mutation.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The event history (the last 1000 events).
    pub fn history(&self) -> &EventHistory {
        &self.history
    }

    /// The earliest expiry time of any node, if some node has a TTL: when the leader
    /// should next propose [`Op::Expire`].
    pub fn next_expiry(&self) -> Option<u64> {
        self.ttl.first().map(|(t, _)| *t)
    }

    /// Number of nodes with a TTL.
    pub fn ttl_count(&self) -> usize {
        self.ttl.len()
    }

    /// Applies one command.
    ///
    /// # Errors
    /// The etcd error of the operation (see [`Error`]); a failed command changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<Event> {
        let now = cmd.now;
        match &cmd.op {
            Op::Expire => Ok(self.expire(now)),
            Op::Txn(txn) => self.txn(txn, now),
            op => {
                let idx = self.index + 1;
                let applied = self.apply_one(op, idx, now, None)?;
                self.index = applied.event.index;
                self.publish(&applied);
                Ok(applied.event)
            }
        }
    }

    /// Reads a key (etcd's `Get`): a file with its value, or a directory with its visible
    /// children (all descendants when `recursive`). Children always come sorted; `sorted`
    /// is accepted for API compatibility. `now` is used for the `ttl` field only.
    ///
    /// # Errors
    /// 100 when the key or an ancestor is missing (cause: the first missing path), 104
    /// when a file is in the path (cause: that file).
    pub fn get(&self, key: &str, recursive: bool, sorted: bool, now: u64) -> Result<Event> {
        let _ = sorted;
        let view = self.get_ref(key, now)?.into_view(recursive);
        Ok(Event::new(Action::Get, view, None, self.index))
    }

    /// [`Store::get`] without building the result: the node found, borrowed, with
    /// nothing copied or allocated (unless `key` needs cleaning, or on an error). The
    /// event's index is [`Store::index`]; [`NodeRef::into_view`] gives `get`'s node.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn get_ref<'a>(&'a self, key: &'a str, now: u64) -> Result<NodeRef<'a>> {
        let (key, node, value) = match self.lookup_raw(key) {
            Some(found) => {
                let (node, value) = found?;
                (Cow::Borrowed(key), node, value)
            }
            None => {
                let key = clean(key);
                let (node, value) = self.lookup(&key)?;
                (key, node, value)
            }
        };
        Ok(NodeRef {
            key,
            value,
            node,
            now,
        })
    }

    /// Starts a watch on `key` (etcd's `Watch`). With `wait_index` (`Some(n)`, `n > 0`)
    /// the history is scanned from `n` first; otherwise only events after the current
    /// index match. A hit in the history is returned at once (its `index` set to the
    /// current store index, as etcd reports it); otherwise the watcher is registered and
    /// matching events are queued for [`Store::take_notifications`]. A non-stream watcher
    /// is removed after its first event.
    ///
    /// # Errors
    /// 401 when `wait_index` is older than the history.
    pub fn watch(
        &mut self,
        key: &str,
        recursive: bool,
        stream: bool,
        wait_index: Option<u64>,
    ) -> Result<WatchStart> {
        let key = clean(key).into_owned();
        let since = wait_index.filter(|i| *i > 0).unwrap_or(self.index + 1);
        if let Some(e) = self.history.scan(&key, recursive, since, self.index)? {
            let mut e = e.clone();
            let next = e.index + 1;
            e.index = self.index;
            let id = stream.then(|| self.hub.add(key, recursive, true, next));
            return Ok(WatchStart::Ready(e, id));
        }
        Ok(WatchStart::Pending(
            self.hub.add(key, recursive, stream, since),
        ))
    }

    /// Removes a watcher; false if it was not registered (already fired or removed).
    pub fn unwatch(&mut self, id: WatcherId) -> bool {
        self.hub.remove(id)
    }

    /// Number of registered watchers.
    pub fn watcher_count(&self) -> usize {
        self.hub.len()
    }

    /// Drains the events matched by watchers since the last call, in order.
    pub fn take_notifications(&mut self) -> Vec<Notification> {
        self.hub.take()
    }

    // ---- lookups ----

    /// etcd's `internalGet` on a clean key: the node and its value ("" for
    /// directories).
    pub(crate) fn lookup(&self, key: &str) -> Result<(&Node, &str)> {
        self.lookup_raw(key).expect("a clean key")
    }

    /// [`Store::lookup`] on a key as the client sent it, if it is already clean (`None`
    /// otherwise): checking that the key is clean and walking it is one pass over its
    /// bytes, where cleaning first and then walking is two.
    fn lookup_raw(&self, key: &str) -> Option<Result<(&Node, &str)>> {
        let b = key.as_bytes();
        if b.first() != Some(&b'/') {
            return None;
        }
        let mut n = &self.root;
        let mut value = "";
        if b.len() == 1 {
            return Some(Ok((n, value)));
        }
        // Start of the current component (just after its slash).
        let mut start = 1;
        loop {
            let end = next_slash(b, start).unwrap_or(b.len());
            let c = &key[start..end];
            if matches!(c.as_bytes(), b"" | b"." | b"..") {
                return None;
            }
            // Errors name a prefix of the key, so they need the rest checked as well.
            let Some(children) = n.children() else {
                return is_clean(key).then(|| {
                    Err(Error::NotDir {
                        cause: key[..start - 1].to_owned(),
                        index: self.index,
                    })
                });
            };
            match children.get_key_value(c) {
                Some((name, child)) => (n, value) = (child, name.value()),
                None => {
                    return is_clean(key).then(|| {
                        Err(Error::KeyNotFound {
                            cause: key[..end].to_owned(),
                            index: self.index,
                        })
                    });
                }
            }
            if end == b.len() {
                return Some(Ok((n, value)));
            }
            start = end + 1;
        }
    }

    /// The children of the parent directory of `key`, as the client sent it, and where
    /// the key's last component starts; `None` unless the key is clean, not the root, and
    /// its parent exists as a directory. One pass over the key, as [`Store::lookup_raw`].
    fn parent_raw_mut(&mut self, key: &str) -> Option<(&mut Children, usize)> {
        let b = key.as_bytes();
        if b.first() != Some(&b'/') || b.len() == 1 {
            return None;
        }
        let mut n = &mut self.root;
        let mut start = 1;
        loop {
            let end = next_slash(b, start).unwrap_or(b.len());
            let c = &key[start..end];
            if matches!(c.as_bytes(), b"" | b"." | b"..") {
                return None;
            }
            let children = n.children_mut()?;
            if end == b.len() {
                return Some((children, start));
            }
            n = children.get_mut(c)?;
            start = end + 1;
        }
    }

    fn lookup_mut(&mut self, key: &str) -> Option<&mut Node> {
        let mut n = &mut self.root;
        for c in components(key) {
            n = n.children_mut()?.get_mut(c)?;
        }
        Some(n)
    }

    /// The children map of directory `dir`, creating missing directories with index
    /// `idx` (etcd's `walk` with `checkDir`). Returns the topmost directory it created.
    fn ensure_dir(&mut self, dir: &str, idx: u64) -> Result<(&mut Children, Option<String>)> {
        let index = self.index;
        let mut created = None;
        let mut n = &mut self.root;
        let mut end = 0;
        for c in components(dir) {
            end += 1 + c.len();
            let children = n
                .children_mut()
                .expect("walk only descends into directories");
            // Two lookups (the borrow checker does not accept a `get_mut` whose `None`
            // arm inserts), but directories are few and cache-resident.
            if !children.contains_key(c) {
                if created.is_none() {
                    created = Some(dir[..end].to_owned());
                }
                children.insert(Name::dir(c), Node::dir(idx, PERMANENT));
            }
            n = children.get_mut(c).expect("present");
            if !n.is_dir() {
                return Err(Error::NotDir {
                    cause: dir[..end].to_owned(),
                    index,
                });
            }
        }
        Ok((n.children_mut().expect("directory"), created))
    }

    /// Detaches the node at a clean, non-root `key` and drops its TTL entries.
    fn detach(&mut self, key: &str) -> Option<(Name, Node)> {
        let (parent, name) = split(key);
        let entry = self
            .lookup_mut(parent)?
            .children_mut()?
            .remove_entry(name)?;
        self.untrack(key, &entry.1);
        Some(entry)
    }

    /// Replaces the value of the file at a clean, non-root `key` (which exists),
    /// returning its old entry.
    fn replace_value(&mut self, key: &str, value: &str) -> Name {
        let (parent, name) = split(key);
        let children = self
            .lookup_mut(parent)
            .and_then(Node::children_mut)
            .expect("checked by the caller");
        let (entry, _) = children.entry_mut(name).expect("checked by the caller");
        std::mem::replace(entry, Name::file(name, value))
    }

    /// Removes the TTL entries of `node` (at `key`) and its descendants.
    fn untrack(&mut self, key: &str, node: &Node) {
        if self.ttl.is_empty() {
            return;
        }
        let mut buf = key.to_owned();
        walk_ttl(&mut buf, node, &mut |t, p| {
            self.ttl.remove(&(t, Box::from(p)));
        });
    }

    /// Adds the TTL entries of `node` (at `key`) and its descendants.
    fn track(&mut self, key: &str, node: &Node) {
        let mut buf = key.to_owned();
        walk_ttl(&mut buf, node, &mut |t, p| {
            self.ttl.insert((t, Box::from(p)));
        });
    }

    fn expire_at(now: u64, ttl: Option<u64>) -> u64 {
        match ttl {
            Some(s) => now
                .saturating_add(s.saturating_mul(1000))
                .min(PERMANENT - 1),
            None => PERMANENT,
        }
    }

    // ---- single-key operations ----

    fn apply_one(
        &mut self,
        op: &Op,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        match op {
            Op::Set {
                key,
                value,
                dir,
                ttl,
                refresh,
            } => self.set(key, value, *dir, *ttl, *refresh, idx, now, undo),
            Op::Create {
                key,
                value,
                dir,
                ttl,
                unique,
            } => {
                let key = if *unique {
                    format!("{key}/{idx:020}")
                } else {
                    key.clone()
                };
                self.create(
                    &key,
                    value,
                    *dir,
                    *ttl,
                    false,
                    Action::Create,
                    idx,
                    now,
                    undo,
                )
            }
            Op::Update {
                key,
                value,
                ttl,
                refresh,
            } => self.update(key, value, *ttl, *refresh, idx, now, undo),
            Op::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh,
            } => self.cas(
                key,
                value,
                prev_value.as_deref(),
                *prev_index,
                *ttl,
                *refresh,
                idx,
                now,
                undo,
            ),
            Op::Delete {
                key,
                dir,
                recursive,
            } => self.delete(key, *dir, *recursive, idx, now, undo),
            Op::CompareAndDelete {
                key,
                prev_value,
                prev_index,
            } => self.cad(key, prev_value.as_deref(), *prev_index, idx, now, undo),
            Op::Expire | Op::Txn(_) => Err(Error::InvalidField {
                cause: "expire and txn cannot be nested in a transaction".into(),
                index: self.index,
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn set(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        ttl: Option<u64>,
        refresh: bool,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        if !refresh {
            // etcd looks the key up first, but only to fail on a file in the path (104),
            // which the parent walk in `create` reports identically. `create` cleans the
            // key.
            return self.create(key, value, dir, ttl, true, Action::Set, idx, now, undo);
        }
        let key = clean(key);
        let value = self.lookup(&key)?.1.to_owned();
        let mut a = self.create(&key, &value, dir, ttl, true, Action::Set, idx, now, undo)?;
        a.refresh = true;
        Ok(a)
    }

    /// etcd's `internalCreate`.
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        ttl: Option<u64>,
        replace: bool,
        action: Action,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        let index = self.index;
        // Usually the key is clean and its parent exists: one pass over the key and one
        // hash lookup per level. Otherwise clean it and create missing directories
        // (etcd's `walk` with `checkDir`, which also reports a file in the path).
        let (children, key, name_start, created_dir) = match self.parent_raw_mut(key) {
            Some((children, name_start)) => (children, Cow::Borrowed(key), name_start, None),
            None => {
                let key = clean(key);
                if key == "/" {
                    return Err(root_ro(index));
                }
                let (parent, name) = split(&key);
                let name_start = key.len() - name.len();
                let (children, created) = match self.lookup_mut(parent).and_then(Node::children_mut)
                {
                    Some(children) => (children, None),
                    None => self.ensure_dir(parent, idx)?,
                };
                (children, key, name_start, created)
            }
        };
        let name = &key[name_start..];
        let expire_at = Store::expire_at(now, ttl);
        let (node, entry) = if dir {
            (Node::dir(idx, expire_at), Name::dir(name))
        } else {
            (Node::file(idx, expire_at), Name::file(name, value))
        };
        let view = node.view_shallow(key.to_string(), value, now);
        // One hash of the name; an existing entry is replaced in place.
        let hash = hash_name(name);
        let old = match children.entry_mut_hashed(hash, name) {
            Some(_) if !replace => {
                return Err(Error::NodeExists {
                    cause: key.into_owned(),
                    index,
                });
            }
            Some((_, existing)) if existing.is_dir() => {
                return Err(Error::NotFile {
                    cause: key.into_owned(),
                    index,
                });
            }
            Some((old_name, old_node)) => Some((
                std::mem::replace(old_name, entry),
                std::mem::replace(old_node, node),
            )),
            None => {
                children.insert_new_hashed(hash, entry, node);
                None
            }
        };
        let old_expire = old.as_ref().map_or(PERMANENT, |(_, n)| n.expire_at);
        let (prev, old) = match old {
            None => (None, None),
            // Kept for the undo log.
            Some((name, node)) if undo.is_some() => (
                Some(node.view_shallow(key.to_string(), name.value(), now)),
                Some((name, node)),
            ),
            // The old value moves into prevNode instead of being copied.
            Some((name, node)) => (
                Some(node.view_with_value(key.to_string(), Some(name.into_value()), now)),
                None,
            ),
        };
        if old_expire != PERMANENT {
            self.ttl.remove(&(old_expire, Box::from(&*key)));
        }
        if expire_at != PERMANENT {
            self.ttl.insert((expire_at, Box::from(&*key)));
        }
        if let Some(u) = undo {
            u.push(match created_dir {
                Some(path) => Undo::Node { path, old: None },
                None => Undo::Node {
                    path: key.to_string(),
                    old,
                },
            });
        }
        Ok(Applied {
            event: Event::new(action, view, prev, idx),
            refresh: false,
            removed: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        key: &str,
        value: &str,
        ttl: Option<u64>,
        refresh: bool,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        let key = clean(key);
        if key == "/" {
            return Err(root_ro(self.index));
        }
        let index = self.index;
        let (node, _) = self.lookup(&key)?;
        if node.is_dir() && !value.is_empty() {
            return Err(Error::NotFile {
                cause: key.into_owned(),
                index,
            });
        }
        self.modify(
            &key,
            if refresh { None } else { Some(value) },
            ttl,
            refresh,
            Action::Update,
            idx,
            now,
            undo,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        key: &str,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        ttl: Option<u64>,
        refresh: bool,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        let key = clean(key);
        if key == "/" {
            return Err(root_ro(self.index));
        }
        let (node, cur) = self.lookup(&key)?;
        self.check_file_compare(&key, node, cur, prev_value, prev_index)?;
        self.modify(
            &key,
            if refresh { None } else { Some(value) },
            ttl,
            refresh,
            Action::CompareAndSwap,
            idx,
            now,
            undo,
        )
    }

    /// The shared checks of CAS and CAD: files only (102), then the conditions (101).
    fn check_file_compare(
        &self,
        key: &str,
        node: &Node,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<()> {
        if node.is_dir() {
            return Err(Error::NotFile {
                cause: key.to_owned(),
                index: self.index,
            });
        }
        let value_ok = prev_value.is_none_or(|v| v == value);
        let index_ok = prev_index.is_none_or(|i| i == node.modified_index);
        if value_ok && index_ok {
            return Ok(());
        }
        let pv = prev_value.unwrap_or("");
        let pi = prev_index.unwrap_or(0);
        let cause = match (value_ok, index_ok) {
            (true, false) => format!("[{pi} != {}]", node.modified_index),
            (false, true) => format!("[{pv} != {value}]"),
            _ => format!("[{pv} != {value}] [{pi} != {}]", node.modified_index),
        };
        Err(Error::CompareFailed {
            cause,
            index: self.index,
        })
    }

    /// Changes an existing node in place (update and CAS). `value: None` keeps the value
    /// (refresh). A directory keeps its stored `modifiedIndex` (etcd quirk) while the
    /// event shows the new one.
    #[allow(clippy::too_many_arguments)]
    fn modify(
        &mut self,
        key: &str,
        value: Option<&str>,
        ttl: Option<u64>,
        refresh: bool,
        action: Action,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        let expire_at = Store::expire_at(now, ttl);
        let (parent, name) = split(key);
        let (entry, node) = self
            .lookup_mut(parent)
            .and_then(Node::children_mut)
            .and_then(|c| c.entry_mut(name))
            .expect("checked by the caller");
        // The views get their values below: a replaced value moves into prevNode.
        let mut prev = node.view_with_value(key.to_owned(), None, now);
        let (old_expire, old_modified) = (node.expire_at, node.modified_index);
        let is_file = !node.is_dir();
        if is_file {
            node.modified_index = idx;
        }
        node.expire_at = expire_at;
        let mut view = node.view_with_value(key.to_owned(), None, now);
        view.modified_index = idx;
        let mut old_value = None;
        if is_file {
            match value {
                Some(new) => {
                    let old = entry.set_value(new);
                    view.value = Some(new.to_owned());
                    if undo.is_some() {
                        prev.value = Some(old.clone());
                        old_value = Some(old.into_boxed_str());
                    } else {
                        prev.value = Some(old);
                    }
                }
                None => {
                    prev.value = Some(entry.value().to_owned());
                    view.value = Some(entry.value().to_owned());
                    old_value = Some(entry.value().into());
                }
            }
        }
        if old_expire != expire_at {
            if old_expire != PERMANENT {
                self.ttl.remove(&(old_expire, Box::from(key)));
            }
            if expire_at != PERMANENT {
                self.ttl.insert((expire_at, Box::from(key)));
            }
        }
        if let Some(u) = undo {
            u.push(Undo::Meta {
                path: key.to_owned(),
                modified_index: old_modified,
                expire_at: old_expire,
                value: old_value,
            });
        }
        Ok(Applied {
            event: Event::new(action, view, Some(prev), idx),
            refresh,
            removed: None,
        })
    }

    fn delete(
        &mut self,
        key: &str,
        dir: bool,
        recursive: bool,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        let key = clean(key);
        if key == "/" {
            return Err(root_ro(self.index));
        }
        let dir = dir || recursive;
        let (node, _) = self.lookup(&key)?;
        if let Some(children) = node.children() {
            if !dir {
                return Err(Error::NotFile {
                    cause: key.into_owned(),
                    index: self.index,
                });
            }
            if !children.is_empty() && !recursive {
                return Err(Error::DirNotEmpty {
                    cause: key.into_owned(),
                    index: self.index,
                });
            }
        }
        Ok(self.remove(&key, Action::Delete, idx, now, undo))
    }

    fn cad(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Result<Applied> {
        let key = clean(key);
        if key == "/" {
            // etcd has no read-only check here: the root fails as a directory, and its
            // internal path trims to an empty (omitted) cause.
            return Err(Error::NotFile {
                cause: String::new(),
                index: self.index,
            });
        }
        let (node, cur) = self.lookup(&key)?;
        self.check_file_compare(&key, node, cur, prev_value, prev_index)?;
        Ok(self.remove(&key, Action::CompareAndDelete, idx, now, undo))
    }

    /// Removes an existing node (delete, CAD, expiry) and builds its event.
    fn remove(
        &mut self,
        key: &str,
        action: Action,
        idx: u64,
        now: u64,
        undo: Option<&mut Vec<Undo>>,
    ) -> Applied {
        let (name, node) = self.detach(key).expect("checked by the caller");
        let view = NodeView {
            key: key.to_owned(),
            dir: node.is_dir(),
            created_index: node.created_index,
            modified_index: idx,
            ..Default::default()
        };
        if let Some(u) = undo {
            u.push(Undo::Node {
                path: key.to_owned(),
                old: Some((name.clone(), node.clone())),
            });
        }
        // The removed entry is not needed after this, so a file's value moves into
        // prevNode (watchers look only at removed directories).
        let value = (!node.is_dir()).then(|| name.into_value());
        let prev = node.view_with_value(key.to_owned(), value, now);
        Applied {
            event: Event::new(action, view, Some(prev), idx),
            refresh: false,
            removed: Some(node),
        }
    }

    /// Records an applied event in the history and matches it against watchers.
    fn publish(&mut self, a: &Applied) {
        if !a.refresh {
            self.hub.notify(&a.event, a.removed.as_ref());
        }
        self.history.push_copy(&a.event, a.refresh);
    }

    // ---- batches ----

    fn expire(&mut self, now: u64) -> Event {
        let mut events = Vec::new();
        while let Some((t, _)) = self.ttl.first() {
            if *t > now {
                break;
            }
            let (_, key) = self.ttl.pop_first().expect("non-empty");
            let idx = self.index + 1;
            let a = self.remove(&key, Action::Expire, idx, now, None);
            self.index = idx;
            self.publish(&a);
            events.push(a.event);
        }
        Event {
            action: Action::Expire,
            node: view_root(),
            prev_node: None,
            index: self.index,
            batch: Some(Batch {
                succeeded: true,
                events,
            }),
        }
    }

    fn compare_holds(&self, c: &Compare) -> bool {
        let node = self.lookup(&clean(&c.key)).ok();
        match (&c.target, node) {
            (CompareTarget::Exists(want), n) => n.is_some() == *want,
            (CompareTarget::Value(v), Some((n, value))) => !n.is_dir() && value == v,
            (CompareTarget::ModifiedIndex(i), Some((n, _))) => n.modified_index == *i,
            (CompareTarget::CreatedIndex(i), Some((n, _))) => n.created_index == *i,
            (_, None) => false,
        }
    }

    fn txn(&mut self, txn: &Txn, now: u64) -> Result<Event> {
        if let Some(bad) = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find(|op| matches!(op, Op::Expire | Op::Txn(_)))
        {
            let what = if matches!(bad, Op::Expire) {
                "expire"
            } else {
                "txn"
            };
            return Err(Error::InvalidField {
                cause: format!("a transaction cannot contain {what}"),
                index: self.index,
            });
        }
        let succeeded = txn.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        if ops.is_empty() {
            return Ok(Event {
                action: Action::Txn,
                node: view_root(),
                prev_node: None,
                index: self.index,
                batch: Some(Batch {
                    succeeded,
                    events: Vec::new(),
                }),
            });
        }
        let idx = self.index + 1;
        let mut undo = Vec::new();
        let mut applied = Vec::with_capacity(ops.len());
        for op in ops {
            match self.apply_one(op, idx, now, Some(&mut undo)) {
                Ok(a) => applied.push(a),
                Err(e) => {
                    self.rollback(undo);
                    return Err(e.with_index(self.index));
                }
            }
        }
        self.index = idx;
        let mut events = Vec::with_capacity(applied.len());
        for a in applied {
            self.publish(&a);
            events.push(a.event);
        }
        Ok(Event {
            action: Action::Txn,
            node: view_root(),
            prev_node: None,
            index: idx,
            batch: Some(Batch { succeeded, events }),
        })
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Node { path, old } => {
                    self.detach(&path);
                    if let Some((name, old)) = old {
                        self.track(&path, &old);
                        let (parent, _) = split(&path);
                        let children = self
                            .lookup_mut(parent)
                            .and_then(Node::children_mut)
                            .expect("undo runs in reverse, so the parent exists again");
                        children.insert(name, old);
                    }
                }
                Undo::Meta {
                    path,
                    modified_index,
                    expire_at,
                    value,
                } => {
                    let node = self.lookup_mut(&path).expect("undo runs in reverse");
                    let cur = node.expire_at;
                    node.modified_index = modified_index;
                    node.expire_at = expire_at;
                    let is_file = !node.is_dir();
                    if let (true, Some(old)) = (is_file, value) {
                        self.replace_value(&path, &old);
                    }
                    if cur != expire_at {
                        if cur != PERMANENT {
                            self.ttl.remove(&(cur, Box::from(path.as_str())));
                        }
                        if expire_at != PERMANENT {
                            self.ttl.insert((expire_at, path.into_boxed_str()));
                        }
                    }
                }
            }
        }
    }
}

/// Calls `f(expire_at, path)` for `node` at `buf` and every descendant with a TTL.
fn walk_ttl(buf: &mut String, node: &Node, f: &mut impl FnMut(u64, &str)) {
    if node.expire_at != PERMANENT {
        f(node.expire_at, buf);
    }
    if let Some(children) = node.children() {
        for (name, child) in children {
            let len = buf.len();
            buf.push('/');
            buf.push_str(name.name());
            walk_ttl(buf, child, f);
            buf.truncate(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn set(key: &str, value: &str) -> Op {
        Op::Set {
            key: key.into(),
            value: value.into(),
            dir: false,
            ttl: None,
            refresh: false,
        }
    }

    fn run(s: &mut Store, op: Op) -> Result<Event> {
        s.apply(&Command::new(NOW, op))
    }

    #[test]
    fn set_replaces_and_recreates() {
        let mut s = Store::new();
        let e = run(&mut s, set("/a/b", "1")).unwrap();
        assert_eq!(
            (e.index, e.node.created_index, e.http_status()),
            (1, 1, 201)
        );
        // The parent directory took the same index.
        assert_eq!(
            s.get("/a", false, false, NOW).unwrap().node.created_index,
            1
        );
        let e = run(&mut s, set("/a/b", "2")).unwrap();
        assert_eq!(
            (e.node.created_index, e.node.modified_index, e.http_status()),
            (2, 2, 200)
        );
        assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("1"));
        let err = run(&mut s, set("/a", "x")).unwrap_err();
        assert_eq!((err.code(), err.cause(), err.index()), (102, "/a", 2));
        let err = run(&mut s, set("/a/b/c", "x")).unwrap_err();
        assert_eq!((err.code(), err.cause()), (104, "/a/b"));
        let err = run(&mut s, set("/", "x")).unwrap_err();
        assert_eq!((err.code(), err.cause()), (107, "/"));
        // dir=true over a file replaces it by a directory.
        let e = run(
            &mut s,
            Op::Set {
                key: "/a/b".into(),
                value: "v".into(),
                dir: true,
                ttl: None,
                refresh: false,
            },
        )
        .unwrap();
        assert!(e.node.dir && e.node.value.is_none() && e.prev_node.is_some());
        assert_eq!(s.index(), 3);
    }

    #[test]
    fn get_errors_and_listing() {
        let mut s = Store::new();
        run(&mut s, set("/k1", "v")).unwrap();
        run(&mut s, set("/d/x", "1")).unwrap();
        run(&mut s, set("/d/_h", "h")).unwrap();
        run(&mut s, set("/d/sub/y", "2")).unwrap();
        let err = s.get("/k1/child", false, false, NOW).unwrap_err();
        assert_eq!((err.code(), err.cause()), (104, "/k1"));
        let err = s.get("/missing/deeper", false, false, NOW).unwrap_err();
        assert_eq!((err.code(), err.cause()), (100, "/missing"));
        let d = s.get("/d", false, true, NOW).unwrap().node;
        let keys: Vec<_> = d.nodes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["/d/sub", "/d/x"]);
        assert!(d.nodes[0].nodes.is_empty());
        let d = s.get("/d", true, true, NOW).unwrap().node;
        assert_eq!(d.nodes[0].nodes[0].key, "/d/sub/y");
        assert_eq!(
            s.get("/d/_h", false, false, NOW)
                .unwrap()
                .node
                .value
                .as_deref(),
            Some("h")
        );
        let root = s.get("/", false, false, NOW).unwrap();
        assert_eq!(
            (root.node.key.as_str(), root.node.created_index, root.index),
            ("/", 0, 4)
        );
    }

    #[test]
    fn create_update_cas_cad() {
        let mut s = Store::new();
        let create = |k: &str| Op::Create {
            key: k.into(),
            value: "c".into(),
            dir: false,
            ttl: None,
            unique: false,
        };
        assert_eq!(run(&mut s, create("/c")).unwrap().http_status(), 201);
        let err = run(&mut s, create("/c")).unwrap_err();
        assert_eq!((err.code(), err.cause(), err.index()), (105, "/c", 1));
        let q = run(
            &mut s,
            Op::Create {
                key: "/q".into(),
                value: "".into(),
                dir: false,
                ttl: None,
                unique: true,
            },
        )
        .unwrap();
        assert_eq!(q.node.key, "/q/00000000000000000002");
        let up = Op::Update {
            key: "/c".into(),
            value: "u".into(),
            ttl: None,
            refresh: false,
        };
        let e = run(&mut s, up).unwrap();
        assert_eq!(
            (e.action, e.node.created_index, e.node.modified_index),
            (Action::Update, 1, 3)
        );
        let err = run(
            &mut s,
            Op::Update {
                key: "/nope".into(),
                value: "".into(),
                ttl: None,
                refresh: false,
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), 100);
        let cas = |pv: Option<&str>, pi: Option<u64>| Op::CompareAndSwap {
            key: "/c".into(),
            value: "w".into(),
            prev_value: pv.map(Into::into),
            prev_index: pi,
            ttl: None,
            refresh: false,
        };
        assert_eq!(
            run(&mut s, cas(Some("x"), None)).unwrap_err().cause(),
            "[x != u]"
        );
        assert_eq!(
            run(&mut s, cas(None, Some(9))).unwrap_err().cause(),
            "[9 != 3]"
        );
        assert_eq!(
            run(&mut s, cas(Some("x"), Some(9))).unwrap_err().cause(),
            "[x != u] [9 != 3]"
        );
        let e = run(&mut s, cas(Some("u"), Some(3))).unwrap();
        assert_eq!((e.node.created_index, e.node.modified_index), (1, 4));
        let err = run(
            &mut s,
            Op::CompareAndDelete {
                key: "/q".into(),
                prev_value: Some("".into()),
                prev_index: None,
            },
        )
        .unwrap_err();
        assert_eq!((err.code(), err.cause()), (102, "/q"));
        let e = run(
            &mut s,
            Op::CompareAndDelete {
                key: "/c".into(),
                prev_value: None,
                prev_index: Some(4),
            },
        )
        .unwrap();
        assert_eq!(
            (e.action, e.node.modified_index, e.node.value.clone()),
            (Action::CompareAndDelete, 5, None)
        );
    }

    #[test]
    fn delete_rules() {
        let mut s = Store::new();
        run(&mut s, set("/d/x", "1")).unwrap();
        run(
            &mut s,
            Op::Set {
                key: "/e".into(),
                value: "".into(),
                dir: true,
                ttl: None,
                refresh: false,
            },
        )
        .unwrap();
        let del = |k: &str, dir, recursive| Op::Delete {
            key: k.into(),
            dir,
            recursive,
        };
        assert_eq!(
            run(&mut s, del("/d", false, false)).unwrap_err().code(),
            102
        );
        assert_eq!(run(&mut s, del("/d", true, false)).unwrap_err().code(), 108);
        assert_eq!(run(&mut s, del("/", true, true)).unwrap_err().code(), 107);
        assert_eq!(
            run(&mut s, del("/zz", false, false)).unwrap_err().code(),
            100
        );
        let e = run(&mut s, del("/e", true, false)).unwrap();
        assert!(e.node.dir && e.prev_node.unwrap().dir);
        let e = run(&mut s, del("/d", false, true)).unwrap();
        assert_eq!((e.node.modified_index, e.node.created_index), (4, 1));
        assert_eq!(s.get("/", true, true, NOW).unwrap().node.nodes.len(), 0);
    }

    #[test]
    fn ttl_expiry_and_refresh() {
        let mut s = Store::new();
        let ttl_set = |k: &str, ttl| Op::Set {
            key: k.into(),
            value: "v".into(),
            dir: false,
            ttl: Some(ttl),
            refresh: false,
        };
        let e = run(&mut s, ttl_set("/t1", 5)).unwrap();
        assert_eq!((e.node.ttl, e.node.expiration), (Some(5), Some(NOW + 5000)));
        run(&mut s, ttl_set("/t0", 0)).unwrap();
        run(
            &mut s,
            Op::Set {
                key: "/dt".into(),
                value: "".into(),
                dir: true,
                ttl: Some(2),
                refresh: false,
            },
        )
        .unwrap();
        run(&mut s, ttl_set("/dt/child", 100)).unwrap();
        assert_eq!(s.next_expiry(), Some(NOW));
        // Refresh keeps the value and does not reach watchers.
        let w = s.watch("/t1", false, false, None).unwrap();
        let r = run(
            &mut s,
            Op::Set {
                key: "/t1".into(),
                value: "".into(),
                dir: false,
                ttl: Some(10),
                refresh: true,
            },
        )
        .unwrap();
        assert_eq!((r.node.value.as_deref(), r.node.ttl), (Some("v"), Some(10)));
        assert!(s.take_notifications().is_empty());
        assert!(matches!(w, WatchStart::Pending(_)));
        let e = s.apply(&Command::new(NOW + 2000, Op::Expire)).unwrap();
        let batch = e.batch.unwrap();
        let keys: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.node.key.as_str(), e.index))
            .collect();
        assert_eq!(keys, [("/t0", 6), ("/dt", 7)]);
        assert!(batch.events[1].node.dir);
        assert_eq!(s.ttl_count(), 1);
        // A write without ttl makes the node permanent.
        run(&mut s, set("/t1", "p")).unwrap();
        assert_eq!(s.ttl_count(), 0);
        let e = s.apply(&Command::new(NOW + 1_000_000, Op::Expire)).unwrap();
        assert!(e.batch.unwrap().events.is_empty());
    }

    #[test]
    fn watches_live_and_history() {
        let mut s = Store::new();
        let w_rec = match s.watch("/d", true, true, None).unwrap() {
            WatchStart::Pending(id) => id,
            other => panic!("{other:?}"),
        };
        let w_leaf = match s.watch("/d/x/leaf", false, false, None).unwrap() {
            WatchStart::Pending(id) => id,
            other => panic!("{other:?}"),
        };
        run(&mut s, set("/d/x/leaf", "1")).unwrap();
        run(&mut s, set("/d/_hidden", "1")).unwrap();
        run(
            &mut s,
            Op::Delete {
                key: "/d/x".into(),
                dir: true,
                recursive: true,
            },
        )
        .unwrap();
        let n = s.take_notifications();
        let got: Vec<_> = n.iter().map(|n| (n.watcher, n.event.index)).collect();
        // The leaf watcher fired once (then was removed); hidden keys skip the recursive one.
        assert_eq!(got, [(w_rec, 1), (w_leaf, 1), (w_rec, 3)]);
        assert_eq!(s.watcher_count(), 1);
        // History: the hidden key is found by a scan.
        match s.watch("/d", true, false, Some(2)).unwrap() {
            WatchStart::Ready(e, None) => {
                assert_eq!((e.node.key.as_str(), e.index), ("/d/_hidden", 3))
            }
            other => panic!("{other:?}"),
        }
        // The delete of /d/x matches a watch below it.
        match s.watch("/d/x/leaf/deeper", false, false, Some(3)).unwrap() {
            WatchStart::Ready(e, None) => assert_eq!(e.action, Action::Delete),
            other => panic!("{other:?}"),
        }
        for i in 0..1000 {
            run(&mut s, set("/f", &i.to_string())).unwrap();
        }
        let err = s.watch("/f", false, false, Some(3)).unwrap_err();
        assert_eq!(
            (err.code(), err.cause(), err.index()),
            (401, "the requested history has been cleared [4/3]", 1003)
        );
    }

    #[test]
    fn scan_all_replays_every_match_including_a_transaction_s_events() {
        let mut s = Store::new();
        run(&mut s, set("/w/a", "1")).unwrap();
        run(&mut s, set("/other", "1")).unwrap();
        run(
            &mut s,
            Op::Txn(Txn {
                compare: vec![],
                success: vec![set("/w/b", "2"), set("/w/c", "3")],
                failure: vec![],
            }),
        )
        .unwrap();
        let got: Vec<_> = s
            .history()
            .scan_all("/w", true, 1, s.index())
            .unwrap()
            .map(|e| (e.node.key.as_str(), e.index))
            .collect();
        assert_eq!(got, [("/w/a", 1), ("/w/b", 3), ("/w/c", 3)]);
        assert_eq!(s.history().scan_all("/w", true, 4, 3).unwrap().count(), 0);
        for i in 0..1000 {
            run(&mut s, set("/f", &i.to_string())).unwrap();
        }
        let err = s
            .history()
            .scan_all("/w", true, 1, s.index())
            .err()
            .unwrap();
        assert_eq!(err.code(), 401);
    }

    #[test]
    fn txn_commits_atomically_with_one_index() {
        let mut s = Store::new();
        run(&mut s, set("/lease", "me")).unwrap();
        let txn = |cmp: &str, ops: Vec<Op>| {
            Op::Txn(Txn {
                compare: vec![Compare {
                    key: "/lease".into(),
                    target: CompareTarget::Value(cmp.into()),
                }],
                success: ops,
                failure: vec![],
            })
        };
        let e = run(&mut s, txn("me", vec![set("/a", "1"), set("/b/c", "2")])).unwrap();
        let b = e.batch.unwrap();
        assert!(b.succeeded);
        assert_eq!(
            (e.index, b.events.len(), b.events[1].node.created_index),
            (2, 2, 2)
        );
        let e = run(&mut s, txn("other", vec![set("/a", "x")])).unwrap();
        assert!(!e.batch.unwrap().succeeded);
        assert_eq!(s.index(), 2);
        // A failing op rolls everything back.
        let before = snapshot_bytes(&s);
        let err = run(
            &mut s,
            txn(
                "me",
                vec![
                    set("/a", "changed"),
                    Op::Delete {
                        key: "/b".into(),
                        dir: true,
                        recursive: true,
                    },
                    set("/new/deep", "x"),
                    Op::Update {
                        key: "/missing".into(),
                        value: "".into(),
                        ttl: None,
                        refresh: false,
                    },
                ],
            ),
        )
        .unwrap_err();
        assert_eq!((err.code(), err.index()), (100, 2));
        assert_eq!(snapshot_bytes(&s), before);
        assert!(
            run(
                &mut s,
                Op::Txn(Txn {
                    compare: vec![],
                    success: vec![Op::Expire],
                    failure: vec![]
                })
            )
            .is_err()
        );
    }

    #[test]
    fn update_of_directory_ttl_keeps_stored_modified_index() {
        let mut s = Store::new();
        run(
            &mut s,
            Op::Set {
                key: "/d".into(),
                value: "".into(),
                dir: true,
                ttl: None,
                refresh: false,
            },
        )
        .unwrap();
        let e = run(
            &mut s,
            Op::Update {
                key: "/d".into(),
                value: "".into(),
                ttl: Some(30),
                refresh: false,
            },
        )
        .unwrap();
        assert_eq!(
            (e.node.modified_index, e.node.dir, e.node.ttl),
            (2, true, Some(30))
        );
        let stored = s.get("/d", false, false, NOW).unwrap().node;
        assert_eq!((stored.modified_index, stored.ttl), (1, Some(30)));
        let err = run(
            &mut s,
            Op::Update {
                key: "/d".into(),
                value: "v".into(),
                ttl: None,
                refresh: false,
            },
        )
        .unwrap_err();
        assert_eq!((err.code(), err.cause()), (102, "/d"));
        // Refresh of a missing key is 100, and a set-refresh re-creates the node.
        let err = run(
            &mut s,
            Op::Set {
                key: "/m".into(),
                value: "".into(),
                dir: false,
                ttl: Some(1),
                refresh: true,
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), 100);
        run(&mut s, set("/f", "keep")).unwrap();
        let e = run(
            &mut s,
            Op::Set {
                key: "/f".into(),
                value: "".into(),
                dir: false,
                ttl: Some(9),
                refresh: true,
            },
        )
        .unwrap();
        assert_eq!(
            (e.action, e.node.created_index, e.node.value.as_deref()),
            (Action::Set, 4, Some("keep"))
        );
    }

    #[test]
    fn in_order_keys_under_root_and_dirs() {
        let mut s = Store::with_index(16);
        let post = |k: &str, dir| Op::Create {
            key: k.into(),
            value: "j".into(),
            dir,
            ttl: None,
            unique: true,
        };
        assert_eq!(
            run(&mut s, post("/queue", false)).unwrap().node.key,
            "/queue/00000000000000000017"
        );
        assert_eq!(
            run(&mut s, post("/", true)).unwrap().node.key,
            "/00000000000000000018"
        );
        run(&mut s, set("/file", "x")).unwrap();
        let err = run(&mut s, post("/file", false)).unwrap_err();
        assert_eq!((err.code(), err.cause()), (104, "/file"));
        let q = s.get("/queue", false, true, NOW).unwrap().node;
        assert_eq!(q.nodes.len(), 1);
    }

    #[test]
    fn stream_watchers_stay_and_expiry_reaches_descendants() {
        let mut s = Store::new();
        run(
            &mut s,
            Op::Set {
                key: "/dt".into(),
                value: "".into(),
                dir: true,
                ttl: Some(1),
                refresh: false,
            },
        )
        .unwrap();
        run(&mut s, set("/dt/leaf", "1")).unwrap();
        let WatchStart::Pending(stream) = s.watch("/dt", true, true, None).unwrap() else {
            panic!()
        };
        let WatchStart::Pending(leaf) = s.watch("/dt/leaf", false, false, None).unwrap() else {
            panic!()
        };
        let WatchStart::Pending(hidden) = s.watch("/dt/_h", false, false, None).unwrap() else {
            panic!()
        };
        run(&mut s, set("/dt/_h", "h")).unwrap();
        run(&mut s, set("/dt/leaf", "2")).unwrap();
        s.apply(&Command::new(NOW + 1000, Op::Expire)).unwrap();
        let got: Vec<_> = s
            .take_notifications()
            .into_iter()
            .map(|n| (n.watcher, n.event.action, n.event.index))
            .collect();
        assert_eq!(
            got,
            [
                (hidden, Action::Set, 3),
                (stream, Action::Set, 4),
                (leaf, Action::Set, 4),
                (stream, Action::Expire, 5)
            ]
        );
        assert_eq!(s.watcher_count(), 1);
        assert!(s.unwatch(stream));
        assert!(!s.unwatch(stream));
    }

    #[test]
    fn txn_else_branch_and_existence() {
        let mut s = Store::new();
        let txn = Op::Txn(Txn {
            compare: vec![
                Compare {
                    key: "/lock".into(),
                    target: CompareTarget::Exists(true),
                },
                Compare {
                    key: "/lock".into(),
                    target: CompareTarget::ModifiedIndex(1),
                },
            ],
            success: vec![set("/won", "1")],
            failure: vec![Op::Create {
                key: "/lock".into(),
                value: "me".into(),
                dir: false,
                ttl: Some(10),
                unique: false,
            }],
        });
        let e = run(&mut s, txn.clone()).unwrap();
        let b = e.batch.unwrap();
        assert!(!b.succeeded);
        assert_eq!(
            (b.events[0].action, b.events[0].node.ttl),
            (Action::Create, Some(10))
        );
        let e = run(&mut s, txn).unwrap();
        assert!(e.batch.unwrap().succeeded);
        assert_eq!(
            s.get("/won", false, false, NOW).unwrap().node.created_index,
            2
        );
        assert_eq!(s.ttl_count(), 1);
    }

    #[test]
    fn txn_rollback_restores_values_changed_in_place() {
        let mut s = Store::new();
        run(&mut s, set("/a", "old")).unwrap();
        run(&mut s, set("/b", "keep")).unwrap();
        let before = snapshot_bytes(&s);
        let err = run(
            &mut s,
            Op::Txn(Txn {
                compare: vec![],
                success: vec![
                    Op::Update {
                        key: "/a".into(),
                        value: "new".into(),
                        ttl: Some(5),
                        refresh: false,
                    },
                    Op::CompareAndSwap {
                        key: "/a".into(),
                        value: "newer".into(),
                        prev_value: Some("new".into()),
                        prev_index: None,
                        ttl: None,
                        refresh: false,
                    },
                    Op::Update {
                        key: "/b".into(),
                        value: String::new(),
                        ttl: Some(9),
                        refresh: true,
                    },
                    Op::CompareAndDelete {
                        key: "/b".into(),
                        prev_value: Some("keep".into()),
                        prev_index: None,
                    },
                    Op::Delete {
                        key: "/missing".into(),
                        dir: false,
                        recursive: false,
                    },
                ],
                failure: vec![],
            }),
        )
        .unwrap_err();
        assert_eq!(err.code(), 100);
        assert_eq!(snapshot_bytes(&s), before);
        assert_eq!(s.ttl_count(), 0);
        let e = s.get("/a", false, false, NOW).unwrap();
        assert_eq!(e.node.value.as_deref(), Some("old"));
        // The same operations outside a transaction: values move into prevNode.
        let e = run(
            &mut s,
            Op::CompareAndSwap {
                key: "/a".into(),
                value: "x".into(),
                prev_value: Some("old".into()),
                prev_index: None,
                ttl: None,
                refresh: false,
            },
        )
        .unwrap();
        assert_eq!(
            (e.prev_node.unwrap().value, e.node.value),
            (Some("old".into()), Some("x".into()))
        );
        let e = run(&mut s, set("/a", "y")).unwrap();
        assert_eq!(e.prev_node.unwrap().value.as_deref(), Some("x"));
        let e = run(
            &mut s,
            Op::Delete {
                key: "/a".into(),
                dir: false,
                recursive: false,
            },
        )
        .unwrap();
        assert_eq!(
            (e.prev_node.unwrap().value.as_deref(), e.node.value),
            (Some("y"), None)
        );
    }

    fn snapshot_bytes(s: &Store) -> Vec<u8> {
        let mut v = Vec::new();
        s.snapshot(&mut v).unwrap();
        v
    }
}
