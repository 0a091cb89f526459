//! Parse throughput on real unit files: the borrowing `UnitView` and the lossless
//! `UnitFile`, side by side, in MB/s (`parse/bytes`) and units/s (`parse/units`).
//!
//! Corpus: every unit file under `/lib/systemd` and `/usr/lib/systemd` (or the directory
//! in `UNIT_PARSER_BENCH_DIR`), plus the copies in `tests/testdata/real`, read into memory
//! once; one iteration parses every file once.
//!
//! A third function, `line-split`, only splits the same bytes at `\n`: a floor measured in
//! the same run, so figures taken on a loaded machine can still be compared.
//!
//! `cargo bench -p unit-parser --bench parse`

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use unit_parser::{UnitFile, UnitView};

const SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
    "conf",
];

fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        } else if std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.len() > 0)
            && p.extension()
                .is_some_and(|x| SUFFIXES.iter().any(|s| x == *s))
        {
            out.insert(std::fs::canonicalize(&p).unwrap_or(p));
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let mut set = BTreeSet::new();
    match std::env::var_os("UNIT_PARSER_BENCH_DIR") {
        Some(d) => walk(Path::new(&d), &mut set),
        None => {
            for d in ["/lib/systemd", "/usr/lib/systemd"] {
                walk(Path::new(d), &mut set);
            }
        }
    }
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/real"),
        &mut set,
    );
    set.iter()
        .filter_map(|p| std::fs::read(p).ok())
        // Only files systemd accepts: the benchmark measures the realistic path.
        .filter(|b| UnitView::parse_bytes(b).is_ok())
        .collect()
}

fn bench(c: &mut Criterion) {
    let files = corpus();
    let bytes: usize = files.iter().map(Vec::len).sum();
    eprintln!(
        "corpus: {} files, {} bytes (avg {} B)",
        files.len(),
        bytes,
        bytes / files.len().max(1)
    );
    for (group_name, throughput) in [
        ("parse/bytes", Throughput::Bytes(bytes as u64)),
        ("parse/units", Throughput::Elements(files.len() as u64)),
    ] {
        let mut g = c.benchmark_group(group_name);
        g.throughput(throughput);
        g.measurement_time(Duration::from_secs(4));
        g.bench_function("view", |b| {
            b.iter(|| {
                for f in &files {
                    black_box(UnitView::parse_bytes(black_box(f)).ok());
                }
            })
        });
        g.bench_function("line-split", |b| {
            b.iter(|| {
                for f in &files {
                    black_box(black_box(f).split(|&c| c == b'\n').count());
                }
            })
        });
        g.bench_function("lossless", |b| {
            b.iter(|| {
                for f in &files {
                    black_box(UnitFile::parse_bytes(black_box(f)).ok());
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
