# virtioblk: O_DIRECT 4 KiB reads at random offsets of the guest's two virtio-blk disks
# (tests/vm/run_vm.py VIRTIO_DISKS; found by serial, not by name order):
#   slow  serial isoscope-slow: QEMU throttles the drive to 50 requests/s
#         (throttling.iops-total=50), so each read waits ~20 ms inside the device
#   fast  serial isoscope-fast: no limit (TCG's device-model round trip only)
# Runs (tests/workloads/directread.c on CPU 1, each in its own cgroup, traced by --pid with the
# agent on CPU 0; the reader waits on a FIFO until the agent's first interval line, so every
# read happens while the agent is attached):
#   virtioblk.slow      BLK_SLOW_READS reads of the slow disk, back to back
#   virtioblk.fast      BLK_FAST_READS reads of the fast disk, BLK_FAST_PAUSE_US apart (the
#                       reader mostly sleeps: the device's share of its time is small)
#   virtioblk.throttle  BLK_THROTTLE_READS reads of the fast disk, back to back, from a cgroup
#                       with io.max "MAJ:MIN riops=50" (blk-throttle holds each read ~20 ms
#                       before dispatch)
# Result blocks per run R: R.trace (the agent's JSON lines), R.times (uptime_ms at the start and
# as each line arrived), R.reader (directread's JSON), R.stderr, R.rc (the agent's), R.readerr,
# R.readerrc; virtioblk.disks: the devices; virtioblk.iomax: the throttle cgroup's io.max and
# io.stat.
BLK_SLOW_READS=60
BLK_FAST_READS=100
BLK_FAST_PAUSE_US=10000
BLK_THROTTLE_READS=60

# disk SERIAL: the vdX whose virtio serial is SERIAL.
disk() {
  local d
  for d in /sys/block/vd*; do
    [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && { basename "$d"; return 0; }
  done
  echo "virtioblk: no virtio-blk disk with serial $1 (booted without run_vm.VIRTIO_DISKS?)" >&2
  ls -l /sys/block >&2
  return 1
}
fast=$(disk isoscope-fast)
slow=$(disk isoscope-slow)

# traced NAME CGDIR CMD...: starts CMD in cgroup directory CGDIR with fd 3 on a FIFO (CMD
# takes --wait-start-fd 3), traces its pid with the agent pinned to CPU 0 (1 s intervals, at
# most TRACE_S), and releases it when the agent's first line arrives.
TRACE_S=8
traced() {
  local name=$1 dir=$2 pid rc i
  shift 2
  rm -f "/tmp/$name".*
  mkfifo "/tmp/$name.go"
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@" \
    3<>"/tmp/$name.go" >"/tmp/$name.reader" 2>"/tmp/$name.readerr" &
  pid=$!
  now_ms >"/tmp/$name.times"
  (rc=0; taskset -c 0 $BIN trace --json --pid $pid --interval 1 --duration $TRACE_S \
      2>"/tmp/$name.stderr" || rc=$?; echo $rc >"/tmp/$name.rc") |
    while read -r line; do
      now_ms >>"/tmp/$name.times"
      echo "$line" >>"/tmp/$name.trace"
      if [ ! -e "/tmp/$name.released" ]; then
        touch "/tmp/$name.released"
        echo go >"/tmp/$name.go"
      fi
    done
  touch "/tmp/$name.trace"
  [ -e "/tmp/$name.released" ] || echo go >"/tmp/$name.go"
  reap_bounded $pid "/tmp/$name.readerrc"
}

emit_run() {
  local name=$1 f
  for f in trace times reader stderr rc readerr readerrc; do
    if [ -e "/tmp/$name.$f" ]; then result "$name.$f" <"/tmp/$name.$f"; fi
  done
  return 0
}

{
  echo "fast $fast $(cat /sys/block/$fast/dev) slow $slow $(cat /sys/block/$slow/dev)"
  for d in /sys/block/vd*; do
    echo "$(basename $d) serial=$(cat $d/serial 2>/dev/null) dev=$(cat $d/dev) size=$(cat $d/size) scheduler=$(cat $d/queue/scheduler)"
  done
} | result virtioblk.disks

dir=$(mkcg /vmtest/blk-slow)
traced virtioblk.slow "$dir" $WL/directread /dev/$slow --count $BLK_SLOW_READS --cpu 1 \
  --wait-start-fd 3 --json
emit_run virtioblk.slow

dir=$(mkcg /vmtest/blk-fast)
traced virtioblk.fast "$dir" $WL/directread /dev/$fast --count $BLK_FAST_READS \
  --pause-us $BLK_FAST_PAUSE_US --cpu 1 --wait-start-fd 3 --json
emit_run virtioblk.fast

# blk-throttle (cgroup v2 io.max) on the fast disk: the io controller enabled down to the
# reader's cgroup.
dir=$(mkcg /vmtest/blk-throttle)
if ! grep -qw io $CG/cgroup.controllers; then
  echo "virtioblk: no io controller in $CG/cgroup.controllers: $(cat $CG/cgroup.controllers)" >&2
  exit 1
fi
echo "+io" >$CG/cgroup.subtree_control
echo "+io" >$CG/vmtest/cgroup.subtree_control
echo "$(cat /sys/block/$fast/dev) riops=50" >"$dir/io.max"
traced virtioblk.throttle "$dir" $WL/directread /dev/$fast --count $BLK_THROTTLE_READS --cpu 1 \
  --wait-start-fd 3 --json
{
  echo "io.max $(cat "$dir/io.max")"
  echo "io.stat $(cat "$dir/io.stat")"
} | result virtioblk.iomax
emit_run virtioblk.throttle
