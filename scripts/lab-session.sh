# Sourced by the scripts that run flowsteer on the VM lab (demo.sh,
# bench-lab.sh): installs and builds what is missing, makes a work directory
# and a lab named $LAB, and removes both — and every process recorded in
# `pids` — when the script exits, also on failure.
#   LAB=name; source scripts/lab-session.sh
scripts/deps.sh lab
echo "== building flowsteer (release)"
cargo build --release --quiet -p control
bin=$PWD/target/release/flowsteer
export LAB
work=$(mktemp -d "/tmp/flowsteer-$LAB.XXXXXX")
pids=()
lab_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  scripts/lab.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap lab_cleanup EXIT
scripts/lab.sh down >/dev/null 2>&1 || true
echo "== lab up (namespaces $LAB-web1 $LAB-web2 $LAB-db1 $LAB-tool)"
scripts/lab.sh up

# lab_config OUT [sed expressions...]: examples/lab.yaml for this lab.
lab_config() {
  local out=$1; shift
  sed -e "s/interface: fs-/interface: $LAB-/" -e "s|/tmp/flowsteer-lab.pcapng|$work/lab.pcapng|" "$@" examples/lab.yaml >"$out"
  (($(nproc) < 2)) && sed -i 's/    - core: 1/    - {}/' "$out"
  return 0
}

# start_flowsteer CONFIG TAG: runs flowsteer in the background, waits until it polls.
start_flowsteer() {
  "$bin" -v run -c "$1" --socket "$work/$2.sock" >"$work/$2.out" 2>"$work/$2.err" &
  fs_pid=$!
  pids+=("$fs_pid")
  for _ in $(seq 100); do grep -q polling "$work/$2.err" && return 0; sleep 0.1; done
  echo "flowsteer did not start:" >&2
  cat "$work/$2.err" >&2
  return 1
}
