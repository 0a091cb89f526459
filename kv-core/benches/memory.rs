//! Memory per key: builds a store of `KV_BENCH_KEYS` keys (default 1,000,000; 10,000
//! under `--test`) with ~64-byte keys and 256-byte values, and reports the heap bytes
//! requested (counted by a wrapping global allocator) and the RSS growth, both per key and
//! beyond the key and value bytes themselves.
//!
//! Run: `cargo bench -p kv-core --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kv_core::{Command, Op, Store};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged and only keeps a count
// of live bytes on the side.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    let n: usize = std::env::var("KV_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if test_mode { 10_000 } else { 1_000_000 });
    let keys: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "/_coreos.com/fleet/job/unit-{:04}/object-{i:016}-abcdefghij",
                i % 1024
            )
        })
        .collect();
    let value = "v".repeat(256);
    let data: usize = keys.iter().map(|k| k.len() + value.len()).sum();
    // Last components only: the tree stores names, not full paths.
    let names: usize = keys
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().len())
        .sum::<usize>()
        + n * value.len();

    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss_bytes().unwrap_or(0));
    let mut store = Store::new();
    for k in &keys {
        let cmd = Command::new(
            1,
            Op::Set {
                key: k.clone(),
                value: value.clone(),
                dir: false,
                ttl: None,
                refresh: false,
            },
        );
        store.apply(&cmd).unwrap();
    }
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss_bytes().unwrap_or(0));
    // The 1000-event history holds full copies of recent events; report it apart.
    let mut history = 0;
    for e in store.history().events() {
        history += e.node.key.len() + e.node.value.as_ref().map_or(0, String::len);
    }
    let heap = heap1 - heap0;
    let rss = rss1.saturating_sub(rss0);
    let mut snap = Vec::new();
    let snap_size = store.snapshot(&mut snap).unwrap();
    println!(
        "keys: {n}, key+value bytes: {data} ({:.1} MB), leaf names+values: {names}",
        data as f64 / 1e6
    );
    println!(
        "heap requested by the store: {heap} bytes = {:.1} B/key, {:.1} B/key beyond key+value, {:.2}x data",
        heap as f64 / n as f64,
        (heap as f64 - data as f64) / n as f64,
        heap as f64 / data as f64
    );
    println!("  of which event history (1000 events) string bytes: ~{history}");
    println!(
        "RSS growth: {rss} bytes = {:.1} B/key, {:.1} B/key beyond key+value, {:.2}x data",
        rss as f64 / n as f64,
        (rss as f64 - data as f64) / n as f64,
        rss as f64 / data as f64
    );
    println!(
        "snapshot size: {snap_size} bytes ({:.2}x data)",
        snap_size as f64 / data as f64
    );
    assert_eq!(store.index(), n as u64);
}
