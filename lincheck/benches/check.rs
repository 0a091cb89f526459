//! Checking time on Porcupine's Jepsen histories.

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use lincheck::jepsen::{parse_etcd_log, parse_kv_edn};
use lincheck::{Budget, History, check};

fn load(dir: &str) -> Vec<(String, History)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("log" | "txt")))
        .filter(|p| !p.ends_with("VERDICTS.txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let h = if name.ends_with(".log") {
                parse_etcd_log(&text).unwrap()
            } else {
                parse_kv_edn(&text).unwrap()
            };
            (name, h)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let etcd = load("jepsen-etcd");
    let kv = load("kv");
    let budget = Budget::steps(10_000_000).with_shrink(false);
    let mut g = c.benchmark_group("lincheck");
    g.sample_size(10);
    g.bench_function("jepsen_etcd_all_102", |b| {
        b.iter(|| {
            for (_, h) in &etcd {
                std::hint::black_box(check(h, budget));
            }
        })
    });
    g.bench_function("jepsen_etcd_all_102_with_shrink", |b| {
        b.iter(|| {
            for (_, h) in &etcd {
                std::hint::black_box(check(h, budget.with_shrink(true)));
            }
        })
    });
    for (name, h) in &kv {
        g.bench_function(format!("kv_{name}"), |b| {
            b.iter(|| std::hint::black_box(check(h, budget)))
        });
    }
    g.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default();
    targets = bench
);
criterion_main!(benches);
