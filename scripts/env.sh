# Sourced by the scripts: one target directory reused across runs (builds are slow here:
# RocksDB compiles from source), overridable by the caller.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flotilla/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Heavy cluster tests run one at a time on these 2-core machines.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
