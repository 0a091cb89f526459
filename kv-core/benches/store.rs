//! Store throughput: get/set/CAS/delete on a large store, watch matching with many
//! watchers, snapshot and restore bandwidth.
//!
//! Sizes: `KV_BENCH_KEYS` (default 1,000,000; 10,000 under `-- --test`) and
//! `KV_BENCH_WATCHERS` (default 10,000). Keys look like fleet's registry keys (about 64
//! bytes), values are 256 bytes.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kv_core::{Command, Op, Store, WatchStart};

const NOW: u64 = 1_800_000_000_000;

/// CPU time this thread has run (`CLOCK_THREAD_CPUTIME_ID`). The machine is shared and
/// often overloaded, so benches report CPU time, not wall time: time slices given to
/// neighbours are not counted against us (their cache pollution still is).
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `iters` times and returns the CPU time it took.
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = cpu_now();
    for _ in 0..iters {
        f();
    }
    cpu_now() - start
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn keys() -> usize {
    env_or(
        "KV_BENCH_KEYS",
        if test_mode() { 10_000 } else { 1_000_000 },
    )
}

fn key(i: usize) -> String {
    format!(
        "/_coreos.com/fleet/job/unit-{:04}/object-{i:016}-abcdefghij",
        i % 1024
    )
}

fn value(i: usize) -> String {
    let mut v = format!("{i:016}");
    v.extend(std::iter::repeat_n('v', 256 - v.len()));
    v
}

fn set(key: String, value: String) -> Command {
    Command::new(
        NOW,
        Op::Set {
            key,
            value,
            dir: false,
            ttl: None,
            refresh: false,
        },
    )
}

fn populated(n: usize) -> Store {
    let mut s = Store::new();
    for i in 0..n {
        s.apply(&set(key(i), value(i))).unwrap();
    }
    s
}

/// A cheap deterministic sequence of key numbers spread over the store.
/// CPU time of `iters` operations on prepared inputs: in batches of at most `BATCH`,
/// `fill(batch, round)` makes `round` inputs outside the timed part, then `op` runs on each.
fn cpu_time_batched<T>(
    iters: u64,
    batch: &mut Vec<T>,
    mut fill: impl FnMut(&mut Vec<T>, usize),
    mut op: impl FnMut(&T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let round = left.min(BATCH);
        fill(batch, round);
        let start = cpu_now();
        for x in &batch[..round] {
            op(x);
        }
        total += cpu_now() - start;
        left -= round;
    }
    total
}

/// Inputs prepared per timed batch in the `*_in_cache` benches.
const BATCH: usize = 256;

fn spread(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761)) % n
}

fn ops(c: &mut Criterion) {
    let n = keys();
    let names: Vec<String> = (0..n).map(key).collect();
    let mut store = populated(n);
    let mut g = c.benchmark_group(format!("ops_{n}_keys"));
    g.throughput(Throughput::Elements(1));

    let mut i = 0;
    // The harness's own share of the figures below: fetching a random key of `names`
    // (1M of them: two cache and TLB misses) without touching the store.
    g.bench_function("harness_key_only", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                i += 1;
                let k = &names[spread(i, n)];
                black_box(k.as_bytes()[k.len() - 1]);
            })
        })
    });

    g.bench_function("get", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                i += 1;
                black_box(store.get(&names[spread(i, n)], false, false, NOW).unwrap());
            })
        })
    });

    // The same gets and sets with the key (or the whole command) already in cache, as
    // a server has it in the request it just parsed. `get` and `set_existing` above read
    // each key through `names`, a 24 MB `Vec<String>` of heap strings: two dependent
    // cache and TLB misses per operation that a server does not have (they do not show
    // in `harness_key_only`, where consecutive iterations overlap). Keys are copied into
    // a 256-entry batch outside the timed part, then the batch is timed.
    let mut batch: Vec<String> = vec![String::new(); BATCH];
    // Copies the next `round` keys into the reused strings of `batch`.
    let mut next_keys = |batch: &mut Vec<String>, round: usize| {
        for k in batch.iter_mut().take(round) {
            i += 1;
            k.clear();
            k.push_str(&names[spread(i, n)]);
        }
    };
    g.bench_function("get_key_in_cache", |b| {
        b.iter_custom(|iters| {
            cpu_time_batched(iters, &mut batch, &mut next_keys, |k| {
                black_box(store.get(k, false, false, NOW).unwrap());
            })
        })
    });

    // The borrowed read (`Store::get_ref`, no allocation), its value copied into a
    // reused buffer as a server writes its response; keys in cache as above.
    let mut out: Vec<u8> = Vec::with_capacity(512);
    g.bench_function("get_ref_key_in_cache", |b| {
        b.iter_custom(|iters| {
            cpu_time_batched(iters, &mut batch, &mut next_keys, |k| {
                let r = store.get_ref(k, NOW).unwrap();
                out.clear();
                out.extend_from_slice(r.value().unwrap_or("").as_bytes());
                black_box((&out, r.modified_index()));
            })
        })
    });

    let v = value(7);
    let mut cmds: Vec<Command> = Vec::with_capacity(BATCH);
    g.bench_function("set_command_in_cache", |b| {
        b.iter_custom(|iters| {
            let fill = |cmds: &mut Vec<Command>, round: usize| {
                cmds.clear();
                for _ in 0..round {
                    i += 1;
                    cmds.push(set(names[spread(i, n)].clone(), v.clone()));
                }
            };
            cpu_time_batched(iters, &mut cmds, fill, |c| {
                black_box(store.apply(c).unwrap());
            })
        })
    });

    g.bench_function("set_existing", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                i += 1;
                let cmd = Command::new(
                    NOW,
                    Op::Set {
                        key: names[spread(i, n)].clone(),
                        value: v.clone(),
                        dir: false,
                        ttl: None,
                        refresh: false,
                    },
                );
                black_box(store.apply(&cmd).unwrap());
            })
        })
    });

    // Every value is now either value(i) or `v`; CAS on `prevIndex` read just before.
    g.bench_function("compare_and_swap", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                i += 1;
                let k = &names[spread(i, n)];
                let cur = store.get(k, false, false, NOW).unwrap().node.modified_index;
                let cmd = Command::new(
                    NOW,
                    Op::CompareAndSwap {
                        key: k.clone(),
                        value: v.clone(),
                        prev_value: None,
                        prev_index: Some(cur),
                        ttl: None,
                        refresh: false,
                    },
                );
                black_box(store.apply(&cmd).unwrap());
            })
        })
    });

    // Deletes are timed; putting the keys back is not. More iterations than keys are
    // run in rounds (a small store would otherwise time fewer deletes than criterion
    // divides by).
    g.bench_function("delete", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let round = left.min(n);
                let start = cpu_now();
                for name in names.iter().take(round) {
                    let cmd = Command::new(
                        NOW,
                        Op::Delete {
                            key: name.clone(),
                            dir: false,
                            recursive: false,
                        },
                    );
                    black_box(store.apply(&cmd).unwrap());
                }
                total += cpu_now() - start;
                for (j, name) in names.iter().enumerate().take(round) {
                    store.apply(&set(name.clone(), value(j))).unwrap();
                }
                left -= round;
            }
            total
        })
    });
    g.finish();
}

fn watchers(c: &mut Criterion) {
    let n = keys().min(100_000);
    let w = env_or("KV_BENCH_WATCHERS", 10_000).min(n);
    let names: Vec<String> = (0..n).map(key).collect();
    let mut store = populated(n);
    for name in names.iter().take(w) {
        let start = store.watch(name, false, true, None).unwrap();
        assert!(matches!(start, WatchStart::Pending(_)));
    }
    // And a few recursive watchers on directories, as fleet agents use.
    for d in 0..16 {
        store
            .watch(
                &format!("/_coreos.com/fleet/job/unit-{d:04}"),
                true,
                true,
                None,
            )
            .unwrap();
    }
    let mut g = c.benchmark_group(format!("watch_{w}_watchers"));
    g.throughput(Throughput::Elements(1));
    let v = value(1);
    let mut i = 0;
    g.bench_function("set_and_notify", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                i += 1;
                let k = names[spread(i, n)].clone();
                store
                    .apply(&Command::new(
                        NOW,
                        Op::Set {
                            key: k,
                            value: v.clone(),
                            dir: false,
                            ttl: None,
                            refresh: false,
                        },
                    ))
                    .unwrap();
                black_box(store.take_notifications());
            })
        })
    });
    g.finish();
}

fn snapshots(c: &mut Criterion) {
    let n = keys();
    snapshot_group(c, format!("snapshot_{n}_keys"), &populated(n));
    // kvbench's layout: every key in one directory (`/bench/k<N>`), so one directory's
    // children are sorted for the snapshot's key order.
    let mut one_dir = Store::new();
    for i in 0..n {
        one_dir
            .apply(&set(format!("/bench/k{i}"), value(i)))
            .unwrap();
    }
    snapshot_group(c, format!("snapshot_{n}_keys_in_one_dir"), &one_dir);
}

fn snapshot_group(c: &mut Criterion, name: String, store: &Store) {
    let mut buf = Vec::new();
    let size = store.snapshot(&mut buf).unwrap();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(size));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(if test_mode() { 1 } else { 10 }));
    let mut out = Vec::with_capacity(buf.len());
    g.bench_function("snapshot", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                out.clear();
                black_box(store.snapshot(&mut out).unwrap());
            })
        })
    });
    g.bench_function("restore", |b| {
        // Dropping the restored store is not part of restoring it.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = cpu_now();
                let restored = Store::restore(&mut buf.as_slice()).unwrap();
                total += cpu_now() - start;
                drop(black_box(restored));
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, ops, watchers, snapshots);
criterion_main!(benches);
