//! Property tests: random operation sequences against a naive `BTreeMap` model of the
//! etcd v2 rules, and snapshot -> restore giving identical state and identical futures.

use std::collections::BTreeMap;

use kv_core::{Action, Command, Op, Store};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    dir: bool,
    value: String,
    created: u64,
    modified: u64,
    expire: Option<u64>,
}

/// Every node by full path; the root is implicit.
#[derive(Debug, Default)]
struct Model {
    nodes: BTreeMap<String, Entry>,
    index: u64,
}

fn ancestors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
    (1..parts.len())
        .map(|i| format!("/{}", parts[..i].join("/")))
        .collect()
}

fn below(key: &str, prefix: &str) -> bool {
    key == prefix || key.starts_with(&format!("{prefix}/"))
}

impl Model {
    /// `Err(code)` as etcd's lookup would fail, else the node (None for the root).
    fn lookup(&self, key: &str) -> Result<Option<&Entry>, u32> {
        if key == "/" {
            return Ok(None);
        }
        for a in ancestors(key) {
            match self.nodes.get(&a) {
                None => return Err(100),
                Some(e) if !e.dir => return Err(104),
                Some(_) => {}
            }
        }
        self.nodes.get(key).map(Some).ok_or(100)
    }

    fn has_children(&self, key: &str) -> bool {
        self.nodes
            .keys()
            .any(|k| k.len() > key.len() && below(k, key))
    }

    fn remove_tree(&mut self, key: &str) {
        self.nodes.retain(|k, _| !below(k, key));
    }

    fn write_new(&mut self, key: &str, value: &str, dir: bool, expire: Option<u64>) -> u64 {
        let idx = self.index + 1;
        for a in ancestors(key) {
            self.nodes.entry(a).or_insert(Entry {
                dir: true,
                value: String::new(),
                created: idx,
                modified: idx,
                expire: None,
            });
        }
        let value = if dir { String::new() } else { value.to_owned() };
        self.nodes.insert(
            key.to_owned(),
            Entry {
                dir,
                value,
                created: idx,
                modified: idx,
                expire,
            },
        );
        self.index = idx;
        idx
    }

    /// Applies an op; `Ok(index after)` or `Err(code)`.
    fn apply(&mut self, op: &Op, now: u64) -> Result<u64, u32> {
        let exp = |ttl: &Option<u64>| ttl.map(|t| now + t * 1000);
        let compare = |e: &Entry, pv: &Option<String>, pi: &Option<u64>| {
            pv.as_ref().is_none_or(|v| *v == e.value) && pi.is_none_or(|i| i == e.modified)
        };
        match op {
            Op::Set {
                key,
                value,
                dir,
                ttl,
                refresh,
            } => {
                let cur = match self.lookup(key) {
                    Err(100) if !refresh => None,
                    Err(c) => return Err(c),
                    Ok(n) => n.cloned(),
                };
                if key == "/" {
                    return Err(107);
                }
                if cur.as_ref().is_some_and(|e| e.dir) {
                    return Err(102);
                }
                let value = if *refresh {
                    cur.map(|e| e.value).unwrap_or_default()
                } else {
                    value.clone()
                };
                Ok(self.write_new(key, &value, *dir, exp(ttl)))
            }
            Op::Create {
                key,
                value,
                dir,
                ttl,
                unique,
            } => {
                let key = if *unique {
                    let k = format!("{key}/{:020}", self.index + 1);
                    if k.starts_with("//") {
                        k[1..].to_owned()
                    } else {
                        k
                    }
                } else {
                    key.clone()
                };
                if key == "/" {
                    return Err(107);
                }
                match self.lookup(&key) {
                    Ok(_) => return Err(105),
                    Err(104) => return Err(104),
                    Err(_) => {}
                }
                Ok(self.write_new(&key, value, *dir, exp(ttl)))
            }
            Op::Update {
                key,
                value,
                ttl,
                refresh,
            } => {
                if key == "/" {
                    return Err(107);
                }
                let e = self.lookup(key)?.cloned().expect("not root");
                if e.dir && !value.is_empty() {
                    return Err(102);
                }
                let idx = self.index + 1;
                let n = self.nodes.get_mut(key).unwrap();
                if !n.dir {
                    if !refresh {
                        n.value = value.clone();
                    }
                    n.modified = idx;
                }
                n.expire = exp(ttl);
                self.index = idx;
                Ok(idx)
            }
            Op::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh,
            } => {
                if key == "/" {
                    return Err(107);
                }
                let e = self.lookup(key)?.cloned().expect("not root");
                if e.dir {
                    return Err(102);
                }
                if !compare(&e, prev_value, prev_index) {
                    return Err(101);
                }
                let idx = self.index + 1;
                let n = self.nodes.get_mut(key).unwrap();
                if !refresh {
                    n.value = value.clone();
                }
                n.modified = idx;
                n.expire = exp(ttl);
                self.index = idx;
                Ok(idx)
            }
            Op::Delete {
                key,
                dir,
                recursive,
            } => {
                if key == "/" {
                    return Err(107);
                }
                let e = self.lookup(key)?.cloned().expect("not root");
                if e.dir && !(*dir || *recursive) {
                    return Err(102);
                }
                if e.dir && !recursive && self.has_children(key) {
                    return Err(108);
                }
                self.remove_tree(key);
                self.index += 1;
                Ok(self.index)
            }
            Op::CompareAndDelete {
                key,
                prev_value,
                prev_index,
            } => {
                let e = self.lookup(key)?.cloned().ok_or(102u32)?;
                if e.dir {
                    return Err(102);
                }
                if !compare(&e, prev_value, prev_index) {
                    return Err(101);
                }
                self.remove_tree(key);
                self.index += 1;
                Ok(self.index)
            }
            Op::Expire => {
                let mut due: Vec<(u64, String)> = self
                    .nodes
                    .iter()
                    .filter_map(|(k, e)| e.expire.filter(|t| *t <= now).map(|t| (t, k.clone())))
                    .collect();
                due.sort();
                for (_, k) in due {
                    if self.nodes.contains_key(&k) {
                        self.remove_tree(&k);
                        self.index += 1;
                    }
                }
                Ok(self.index)
            }
            other => panic!("model does not cover {other:?}"),
        }
    }
}

/// Every node of the store as the model stores it, by walking `get` recursively
/// (hidden nodes are read directly since listings skip them).
fn dump(store: &Store, key: &str, out: &mut BTreeMap<String, Entry>) {
    let n = store.get(key, false, true, 0).unwrap().node;
    if key != "/" {
        out.insert(
            key.to_owned(),
            Entry {
                dir: n.dir,
                value: n.value.clone().unwrap_or_default(),
                created: n.created_index,
                modified: n.modified_index,
                expire: n.expiration,
            },
        );
    }
    if n.dir {
        // Listings hide `_` names; probe them explicitly from the small key alphabet.
        let mut names: Vec<String> = n
            .nodes
            .iter()
            .map(|c| c.key.rsplit('/').next().unwrap().to_owned())
            .collect();
        let hidden = if key == "/" {
            "/_h".to_owned()
        } else {
            format!("{key}/_h")
        };
        if store.get(&hidden, false, false, 0).is_ok() {
            names.push("_h".to_owned());
        }
        for name in names {
            let k = if key == "/" {
                format!("/{name}")
            } else {
                format!("{key}/{name}")
            };
            dump(store, &k, out);
        }
    }
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("/".to_owned()),
        20 => prop::collection::vec(prop::sample::select(vec!["a", "b", "_h"]), 1..4)
            .prop_map(|parts| format!("/{}", parts.join("/"))),
    ]
}

fn op_strategy() -> impl Strategy<Value = (u64, Op)> {
    let value = prop::sample::select(vec!["", "x", "y"]).prop_map(str::to_owned);
    let ttl = prop::option::weighted(0.3, 0u64..4);
    let pv = prop::option::of(prop::sample::select(vec!["", "x", "y"]).prop_map(str::to_owned));
    let pi = prop::option::of(1u64..30);
    let op = prop_oneof![
        6 => (key_strategy(), value.clone(), prop::bool::weighted(0.15), ttl.clone(), prop::bool::weighted(0.1))
            .prop_map(|(key, value, dir, ttl, refresh)| Op::Set { key, value, dir, ttl: if refresh { Some(ttl.unwrap_or(2)) } else { ttl }, refresh }),
        3 => (key_strategy(), value.clone(), any::<bool>(), ttl.clone(), prop::bool::weighted(0.3))
            .prop_map(|(key, value, dir, ttl, unique)| Op::Create { key, value, dir, ttl, unique }),
        2 => (key_strategy(), value.clone(), ttl.clone(), prop::bool::weighted(0.1))
            .prop_map(|(key, value, ttl, refresh)| Op::Update { key, value, ttl, refresh }),
        2 => (key_strategy(), value, pv.clone(), pi.clone(), ttl)
            .prop_map(|(key, value, prev_value, prev_index, ttl)| Op::CompareAndSwap { key, value, prev_value, prev_index, ttl, refresh: false }),
        3 => (key_strategy(), any::<bool>(), any::<bool>())
            .prop_map(|(key, dir, recursive)| Op::Delete { key, dir, recursive }),
        1 => (key_strategy(), pv, pi).prop_map(|(key, prev_value, prev_index)| Op::CompareAndDelete { key, prev_value, prev_index }),
        2 => Just(Op::Expire),
    ];
    (0u64..1500, op)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op_strategy(), 1..120)) {
        let mut store = Store::new();
        let mut model = Model::default();
        let mut now = 1_000_000;
        for (i, (dt, op)) in ops.iter().enumerate() {
            now += dt;
            let got = store.apply(&Command::new(now, op.clone()));
            let want = model.apply(op, now);
            match (&got, &want) {
                (Ok(e), Ok(idx)) => prop_assert_eq!(e.index, *idx, "op #{} {:?}", i, op),
                (Err(e), Err(code)) => prop_assert_eq!(e.code(), *code, "op #{} {:?}: {}", i, op, e),
                _ => prop_assert!(false, "op #{} {:?}: store {:?}, model {:?}", i, op, got, want),
            }
            prop_assert_eq!(store.index(), model.index);
            if let Some(e) = got.as_ref().ok().filter(|e| !matches!(e.action, Action::Expire)) {
                prop_assert_eq!(e.node.modified_index, model.index);
            }
        }
        let mut dumped = BTreeMap::new();
        dump(&store, "/", &mut dumped);
        prop_assert_eq!(dumped, model.nodes.clone());
        prop_assert_eq!(store.ttl_count(), model.nodes.values().filter(|e| e.expire.is_some()).count());
    }

    #[test]
    fn restore_gives_identical_state_and_future(
        before in prop::collection::vec(op_strategy(), 0..80),
        after in prop::collection::vec(op_strategy(), 0..80),
    ) {
        let mut store = Store::new();
        let mut now = 1_000_000;
        for (dt, op) in &before {
            now += dt;
            let _ = store.apply(&Command::new(now, op.clone()));
        }
        let mut snap = Vec::new();
        store.snapshot(&mut snap).unwrap();
        let mut copy = Store::restore(&mut snap.as_slice()).unwrap();
        let mut again = Vec::new();
        copy.snapshot(&mut again).unwrap();
        prop_assert_eq!(&again, &snap);
        for (dt, op) in &after {
            now += dt;
            let cmd = Command::new(now, op.clone());
            prop_assert_eq!(store.apply(&cmd), copy.apply(&cmd));
            prop_assert_eq!(store.watch("/", true, false, Some(store.index().saturating_sub(5).max(1))),
                            copy.watch("/", true, false, Some(copy.index().saturating_sub(5).max(1))));
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        store.snapshot(&mut a).unwrap();
        copy.snapshot(&mut b).unwrap();
        prop_assert_eq!(a, b);
    }
}

/// Keys as clients may send them: relative, with empty, `.` and `..` components and
/// trailing slashes, which the store must treat exactly as their cleaned form.
fn raw_key_strategy() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "_h", "", ".", ".."]),
            0..5,
        ),
        any::<bool>(),
    )
        .prop_map(|(lead, parts, trail)| {
            let mut k = if lead { "/".to_owned() } else { String::new() };
            k.push_str(&parts.join("/"));
            if trail {
                k.push('/');
            }
            k
        })
}

fn with_key(op: &Op, f: impl Fn(&str) -> String) -> Op {
    let mut op = op.clone();
    match &mut op {
        Op::Set { key, .. }
        | Op::Create { key, .. }
        | Op::Update { key, .. }
        | Op::CompareAndSwap { key, .. }
        | Op::Delete { key, .. }
        | Op::CompareAndDelete { key, .. } => *key = f(key),
        Op::Expire | Op::Txn(_) => {}
        other => panic!("not covered: {other:?}"),
    }
    op
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The fast paths that check and walk a key in one pass give exactly what cleaning
    /// the key first gives: same events, same errors (causes included), same gets.
    #[test]
    fn raw_keys_behave_as_their_clean_form(
        ops in prop::collection::vec((op_strategy(), raw_key_strategy()), 1..100),
    ) {
        let (mut raw, mut cleaned) = (Store::new(), Store::new());
        let mut now = 1_000_000;
        for ((dt, op), key) in &ops {
            now += dt;
            let clean = kv_core::path::clean(key).into_owned();
            let a = raw.apply(&Command::new(now, with_key(op, |_| key.clone())));
            let b = cleaned.apply(&Command::new(now, with_key(op, |_| clean.clone())));
            prop_assert_eq!(&a, &b, "{:?} with key {:?}", op, key);
            if let (Err(a), Err(b)) = (&a, &b) {
                prop_assert_eq!((a.code(), a.cause(), a.index()), (b.code(), b.cause(), b.index()));
            }
            for recursive in [false, true] {
                let a = raw.get(key, recursive, true, now);
                let b = cleaned.get(&clean, recursive, true, now);
                // The borrowed read agrees with the owned one, field for field.
                match (raw.get_ref(key, now), &a) {
                    (Ok(r), Ok(e)) => {
                        let n = &e.node;
                        prop_assert_eq!((r.key(), r.value(), r.is_dir()), (n.key.as_str(), n.value.as_deref(), n.dir));
                        prop_assert_eq!((r.created_index(), r.modified_index()), (n.created_index, n.modified_index));
                        prop_assert_eq!((r.expiration(), r.ttl()), (n.expiration, n.ttl));
                        prop_assert_eq!(&r.to_view(recursive), n);
                        prop_assert_eq!((e.index, e.action), (raw.index(), Action::Get));
                    }
                    (Err(r), Err(e)) => prop_assert_eq!(&r, e),
                    (r, e) => prop_assert!(false, "get_ref {:?}, get {:?}", r, e),
                }
                prop_assert_eq!(&a, &b, "get {:?}", key);
                if let (Err(a), Err(b)) = (&a, &b) {
                    prop_assert_eq!((a.code(), a.cause(), a.index()), (b.code(), b.cause(), b.index()));
                }
            }
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        raw.snapshot(&mut x).unwrap();
        cleaned.snapshot(&mut y).unwrap();
        prop_assert_eq!(x, y);
    }
}
