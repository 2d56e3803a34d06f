#!/usr/bin/env bash
# Reserves 2 MB hugepages and mounts hugetlbfs for DPDK, idempotently, and
# prints the state. `--release` gives the pages back.
#
#   scripts/setup-hugepages.sh [PAGES]      (default 512 = 1 GiB)
#   scripts/setup-hugepages.sh --release
set -euo pipefail
mnt=/dev/hugepages
sys=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

if [[ "${1:-}" == "--release" ]]; then
  echo 0 >"$sys"
else
  want=${1:-512}
  have=$(cat "$sys")
  if ((have < want)); then
    echo "$want" >"$sys"
  fi
  got=$(cat "$sys")
  if ((got < want)); then
    echo "setup-hugepages: asked for $want pages of 2 MB, the kernel gave $got (memory too fragmented?)" >&2
    exit 1
  fi
  mkdir -p "$mnt"
  mountpoint -q "$mnt" || mount -t hugetlbfs -o pagesize=2M nodev "$mnt"
fi
printf 'hugepages (2 MB): total %s free %s; hugetlbfs: %s\n' \
  "$(cat "$sys")" "$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages)" \
  "$(mountpoint -q "$mnt" && echo "mounted on $mnt" || echo "not mounted")"
