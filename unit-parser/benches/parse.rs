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
//! Every function is measured twice: in wall time (`wall/...`, criterion's default) and in
//! the benchmark thread's CPU time (`cpu/...`, `CLOCK_THREAD_CPUTIME_ID`), which does not
//! count the time the thread waits for a core, so it stays meaningful on a shared, loaded
//! machine.
//!
//! `cargo bench -p unit-parser --bench parse`

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
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

fn bench<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let files = corpus();
    let bytes: usize = files.iter().map(Vec::len).sum();
    eprintln!(
        "corpus: {} files, {} bytes (avg {} B)",
        files.len(),
        bytes,
        bytes / files.len().max(1)
    );
    for (group_name, throughput) in [
        ("bytes", Throughput::Bytes(bytes as u64)),
        ("units", Throughput::Elements(files.len() as u64)),
    ] {
        let mut g = c.benchmark_group(format!("{clock}/{group_name}"));
        g.throughput(throughput);
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(40);
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

fn bench_wall(c: &mut Criterion<WallTime>) {
    bench(c, "wall");
}

fn bench_cpu(c: &mut Criterion<CpuTime>) {
    bench(c, "cpu");
}

/// CPU time of the calling thread.
#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the
    // kernel knows; clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A criterion measurement of thread CPU time, in nanoseconds.
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e3, "µs")
        } else if typical < 1e9 {
            (1e6, "ms")
        } else {
            (1e9, "s")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let (n, unit, div) = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (n as f64, "MB/s", 1e6),
            Throughput::Elements(n) => (n as f64, "Kelem/s", 1e3),
        };
        // values are nanoseconds per iteration.
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v / div);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(CpuTime);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
