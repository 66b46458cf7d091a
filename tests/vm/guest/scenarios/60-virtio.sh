# virtio: a TCP ping-pong client over each of the guest's two virtio-net NICs (QEMU user
# network, tests/vm/run_vm.py VIRTIO_NICS) to the host's echo server (port from
# isoscope.echo_port= on the kernel command line):
#   fast  MAC 52:54:00:00:00:10, 10.0.2.15/24, peer 10.0.2.2: a plain virtio-net device
#   slow  MAC 52:54:00:00:00:11, 10.0.3.15/24, peer 10.0.3.2: QEMU's device model flushes the
#         TX virtqueue only 20 ms after the first notification (tx=timer,x-txtimer=20000000)
# Each client (100-byte requests, 20 ms apart, on CPU 1 in its own cgroup) is traced by
# --pid with the agent on CPU 0. Result blocks: virtio.links, virtio.{fast,slow}.{trace,...}
# (emit_trace), virtio.{fast,slow}.rtt (pingpong's "rtt_ms p50=.. mean=.. max=.. n=.." line).
port=$(sed -n 's/.*isoscope\.echo_port=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -z "$port" ]; then
  echo "virtio: no isoscope.echo_port= on the kernel command line (boot without the NICs?)" >&2
  exit 1
fi

# nic MAC: the interface with that address (names follow probe order, which is not fixed).
nic() {
  local d
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = "$1" ] && { basename "$d"; return 0; }
  done
  echo "virtio: no interface with MAC $1" >&2
  return 1
}
fast=$(nic 52:54:00:00:00:10)
slow=$(nic 52:54:00:00:00:11)
ip link set lo up
ip link set "$fast" up
ip addr add 10.0.2.15/24 dev "$fast"
ip link set "$slow" up
ip addr add 10.0.3.15/24 dev "$slow"

# run_pingpong NAME PEER: pingpong to PEER in cgroup /vmtest/virtio-NAME, traced for 4
# intervals, then stopped (SIGTERM: it prints its statistics so far).
run_pingpong() {
  local name=$1 peer=$2 dir pid
  dir=$(mkcg /vmtest/virtio-$name)
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" \
    taskset -c 1 $WL/pingpong "$peer" "$port" 100000 20000 >/tmp/virtio.$name.rtt 2>&1 &
  pid=$!
  sleep 1
  trace_with_cpustat "$dir" virtio.$name --pid "$pid" --duration 4 --interval 1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || echo "pingpong exit $?" >>/tmp/virtio.$name.rtt
}
run_pingpong fast 10.0.2.2
run_pingpong slow 10.0.3.2

{
  echo "fast $fast slow $slow"
  for d in /sys/class/net/*; do
    echo "$(basename "$d") $(cat "$d/address") driver=$(readlink "$d/device/driver" 2>/dev/null | sed 's#.*/##')"
  done
  ip -s link 2>&1 || ip link
  ip addr
  cat /proc/net/dev
  grep -i virtio /proc/interrupts || true
} | result virtio.links
emit_trace virtio.fast
result virtio.fast.rtt </tmp/virtio.fast.rtt
emit_trace virtio.slow
result virtio.slow.rtt </tmp/virtio.slow.rtt
