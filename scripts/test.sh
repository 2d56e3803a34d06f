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
# The suite runs with the DPDK backend built in (DPDK 22.11 from Debian, see
# scripts/deps.sh); its tests use vdevs (net_ring, net_null, net_pcap, memif
# and vhost-user/virtio_user to Debian's dpdk-testpmd in control/tests/memif.rs
# and dpdk_devices.rs, net_tap, net_af_packet and net_af_xdp between network
# namespaces in dpdk_devices.rs; a crash and supervised restart over memif
# and vhost-user in dpdk_restart.rs, with the benches crate's `restart`
# harness), no NIC, and the hugepage test reserves pages with scripts/setup-hugepages.sh and
# gives them back. The default build (no DPDK) must keep building, and its
# refusal of dpdk configurations is tested on its own.
features=dataplane/dpdk,chains/dpdk,control/dpdk,benches/dpdk
cargo build --workspace --all-targets --quiet
log=$(mktemp /tmp/flowsteer-test.XXXXXX)
trap 'rm -f "$log"' EXIT
# `chaos` builds the test-only failure stages (`stall`) into this debug build
# for the chaos tests; a default build (`cargo build`, the release binary the
# demos run) never has them.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features "$features,control/chaos" --no-fail-fast 2>&1 | tee "$log"
  passed=$(sed -n 's/.* tests\? run: \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
  cargo nextest run -p control --test dpdk --no-fail-fast 2>&1 | tee -a "$log"
  passed=$((passed + $(sed -n 's/.* tests\? run: \([0-9]*\) passed.*/\1/p' "$log" | tail -1)))
else
  # Without nextest every test binary is one process: the DPDK tests
  # initialise the EAL once per binary, which is what they are written for.
  cargo test --workspace --features "$features,control/chaos" --no-fail-fast 2>&1 | tee "$log"
  cargo test -p control --test dpdk --no-fail-fast 2>&1 | tee -a "$log"
  passed=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$log")
fi

# Doc examples (nextest does not run them).
cargo test --workspace --features "$features" --doc --quiet

# Benchmarks must keep building (they are run by scripts/bench.sh, not here).
cargo bench --workspace --features "$features" --no-run --quiet

# The Pktgen-DPDK scripts agree with each other (Pktgen itself is not packaged).
scripts/pktgen/check.sh

# The README's demo (the VM lab), and the offline replay demo, end to end.
scripts/demo.sh --check
scripts/demo-replay.sh --check

# The memif benchmark keeps working: one second per scenario, every device
# under test must forward (its figures are not judged here).
scripts/bench-memif.sh 1

echo "test.sh: cargo tests, doc tests, benchmark build and demo check all passed"
echo "summary: ${passed:-0} passed, 0 failed"
