#!/usr/bin/env bash
# The whole test suite: unit, property, integration and end-to-end tests.
# Installs what it needs first. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh test

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null 2>&1 || true
fi

# Tests that busy-poll a core are serialised by the `busy-poll` test group
# in .config/nextest.toml; everything else runs in parallel.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# Doc examples (nextest does not run them).
cargo test --workspace --doc --quiet

# Benchmarks must keep building (they are run by scripts/bench.sh, not here).
cargo bench --workspace --no-run --quiet

# The README's demo, end to end.
scripts/demo.sh --check
