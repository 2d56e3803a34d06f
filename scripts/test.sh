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
log=$(mktemp /tmp/flowsteer-test.XXXXXX)
trap 'rm -f "$log"' EXIT
# `chaos` builds the test-only failure stages (`stall`) into this debug build
# for the chaos tests; a default build (`cargo build`, the release binary the
# demos run) never has them.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features control/chaos --no-fail-fast 2>&1 | tee "$log"
  passed=$(sed -n 's/.* tests\? run: \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
else
  cargo test --workspace --features control/chaos --no-fail-fast 2>&1 | tee "$log"
  passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$log")
fi

# Doc examples (nextest does not run them).
cargo test --workspace --doc --quiet

# Benchmarks must keep building (they are run by scripts/bench.sh, not here).
cargo bench --workspace --no-run --quiet

# The README's demo (the VM lab), and the offline replay demo, end to end.
scripts/demo.sh --check
scripts/demo-replay.sh --check

echo "test.sh: cargo tests, doc tests, benchmark build and demo check all passed"
echo "summary: ${passed:-0} passed, 0 failed"
