//! Helpers for writing histories as lists of intervals.

use lincheck::{History, Op, Outcome};

/// Builds a timestamped history from `(client, op, invoked, returned, outcome)` tuples;
/// `returned = None` records an invocation that never returned.
pub(crate) fn timed(ops: &[(u64, Op, u64, Option<u64>, Outcome)]) -> History {
    let h = History::new();
    for (client, op, start, end, outcome) in ops {
        let id = h.invoke_at(*client, op.clone(), *start).unwrap();
        if let Some(end) = end {
            h.ret_at(id, outcome.clone(), *end).unwrap();
        }
    }
    h
}

/// The value outcome of a read.
pub(crate) fn val(v: &str) -> Outcome {
    Outcome::Value(Some(v.to_owned()))
}

/// The outcome of a read of an absent key.
pub(crate) fn absent() -> Outcome {
    Outcome::Value(None)
}

/// Reads the files of `lincheck/testdata/<dir>`.
pub(crate) fn testdata(dir: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir)
}
