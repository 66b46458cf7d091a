#!/usr/bin/env bash
# `make demo`: a busy process in a CPU-quota cgroup (20 ms per 100 ms), traced
# by isoscope for a few seconds; prints the diagnosis. Cleans up after itself.
set -euo pipefail
BUILD=${1:-build}
BIN="$BUILD/isoscope"
SPIN="$BUILD/workloads/spin"

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: isoscope loads BPF programs and creates a cgroup: run as root (sudo make demo)." >&2
  exit 1
fi
mountpoint -q /sys/kernel/tracing 2>/dev/null || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true

echo "== isoscope doctor"
"$BIN" doctor | sed -n '1p;/^layers/,$p'
echo

# A cgroup with a CPU quota: v1 cpu controller if mounted, else cgroup v2 cpu.max.
CG=""
if [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
  CG=/sys/fs/cgroup/cpu/isoscope-demo-$$
  mkdir "$CG"
  echo 100000 > "$CG/cpu.cfs_period_us"
  echo 20000 > "$CG/cpu.cfs_quota_us"
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
  CG=/sys/fs/cgroup/isoscope-demo-$$
  mkdir "$CG"
  echo "20000 100000" > "$CG/cpu.max"
else
  echo "demo: no cgroup cpu controller found (v1 or v2)" >&2
  exit 1
fi
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT

# Start the busy loop inside the cgroup from its first instruction.
( echo $BASHPID > "$CG/cgroup.procs"; exec "$SPIN" 8 ) &
PID=$!
sleep 0.3
echo "== a busy process (pid $PID) in $CG with a 20% CPU quota; isoscope trace --pid $PID --duration 3 --interval 3"
"$BIN" trace --pid "$PID" --duration 3 --interval 3
