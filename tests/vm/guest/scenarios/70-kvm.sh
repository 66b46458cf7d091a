# kvm: nested KVM. The guest's CPU is qemu64,+svm (tests/vm/run_vm.py CPU_MODEL), kvm-amd is
# loaded at boot (kernels.txt modules=), so /dev/kvm works here and the real tracepoints
# kvm_entry, kvm_exit (with SVM exit reasons), kvm_userspace_exit, kvm_fpu fire.
# tests/workloads/tinyvmm.c is the VMM: one vCPU on its main thread (comm "CPU 0/KVM"), pinned
# to CPU 1; its guest makes KVM_N port-I/O exits to port 0x10, each handled by the VMM with a
# busy wait of KVM_DELAY_US, then a pure CPU loop, one exit to port 0x11 (end of the loop), HLT.
# Each run: the VMM waits on a FIFO (--wait-start-fd) until the agent, started with --pid on
# CPU 0, has printed its first interval line, so every exit happens while the agent is attached.
#   kvm.calib   a calibration run (no exits, 20M loop iterations, no agent): the loop length
#               for a given time is chosen from it
#   kvm.a       KVM_N exits, a ~1 s guest loop, no competitor; then HLT blocks in the kernel
#               (--halt-ms: in-kernel irqchip) for KVM_HALT_MS
#   kvm.b       the same with a CPU hog (spin, root cgroup) pinned to CPU 1 while the guest
#               loop runs (started on the VMM's loop_start event, stopped on loop_end), a
#               ~2.5 s loop (about twice that with the hog), HLT exits to user space
# Result blocks per run R (kvm.a, kvm.b): R.trace (the agent's JSON lines), R.sched ("uptime_ms
# exec_runtime_ns run_delay_ns" of the vCPU thread from /proc/PID/schedstat, at the start and
# after each line), R.vmm (tinyvmm's JSON), R.events ("EVENT monotonic_s" lines from tinyvmm),
# R.hog ("start|end uptime_ms", run b), R.stderr, R.rc (the agent's), R.vmmerr, R.vmmrc.
# kvm.tracefs: the raw tracepoints (a tracefs instance) around a 3-exit run with --halt-ms,
# for the record of what fires here and in which order; kvm.info: the set-up.
KVM_N=20
KVM_DELAY_US=5000
KVM_HALT_MS=300

if [ ! -c /dev/kvm ]; then
  {
    echo "kvm: no /dev/kvm (is the CPU model qemu64,+svm and kvm-amd loaded?)"
    grep -m1 -o -w svm /proc/cpuinfo || echo "no svm flag in /proc/cpuinfo"
    lsmod 2>/dev/null | grep -E "^kvm" || true
    dmesg | grep -iE "kvm|svm" || true
  } >&2
  exit 1
fi

# "uptime_ms exec_runtime_ns run_delay_ns" of process PID's main thread (just the uptime once
# it has exited).
vcpu_sched() {
  echo "$(now_ms) $(cut -d' ' -f1,2 "/proc/$1/schedstat" 2>/dev/null)"
}

# json_num FILE KEY: a number field of a one-line JSON object.
json_num() {
  sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | head -n1
}

$WL/tinyvmm --exits 0 --delay-us 0 --guest-loops 20000000 --cpu 1 --json >/tmp/kvm.calib
calib_s=$(json_num /tmp/kvm.calib guest_loop_s)
# loops_for SECONDS: loop iterations that take about SECONDS on an idle CPU 1.
loops_for() {
  awk -v s="$1" -v t="$calib_s" 'BEGIN {
    l = 20000000 * s / (t > 0 ? t : 0.1); if (l > 4000000000) l = 4000000000; if (l < 1000) l = 1000
    printf "%d\n", l }'
}

# hog_during_loop NAME VMM_PID: waits for the VMM's loop_start event, then runs spin pinned
# to CPU 1 (in the root cgroup) until loop_end or the VMM's exit; writes NAME.hog.
hog_during_loop() {
  local name=$1 vmm=$2 i=0 h
  while ! grep -q '^loop_start' "/tmp/$name.events" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$vmm" 2>/dev/null; then
      echo "none $(now_ms)" >"/tmp/$name.hog"
      return 0
    fi
    sleep 0.05
  done
  $WL/spin 60 1 1 &
  h=$!
  echo "start $(now_ms)" >"/tmp/$name.hog"
  while ! grep -q '^loop_end' "/tmp/$name.events" && kill -0 "$vmm" 2>/dev/null; do
    sleep 0.05
  done
  echo "end $(now_ms)" >>"/tmp/$name.hog"
  kill $h 2>/dev/null || true
  wait $h 2>/dev/null || true
}

# run_vmm NAME HOG(hog|-) LOOP_SECONDS TRACE_SECONDS [TINYVMM OPTIONS...]
run_vmm() {
  local name=$1 hog=$2 loop=$3 dur=$4 dir pid rc i
  shift 4
  dir=$(mkcg /vmtest/$name)
  rm -f "/tmp/$name".*
  mkfifo "/tmp/$name.go"
  : >"/tmp/$name.events"
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" \
    $WL/tinyvmm --exits $KVM_N --delay-us $KVM_DELAY_US --delay-mode spin --cpu 1 \
    --guest-loops "$(loops_for "$loop")" --wait-start-fd 3 --events-fd 4 --json "$@" \
    3<>"/tmp/$name.go" 4>>"/tmp/$name.events" >"/tmp/$name.vmm" 2>"/tmp/$name.vmmerr" &
  pid=$!
  vcpu_sched $pid >"/tmp/$name.sched"
  (rc=0; taskset -c 0 $BIN trace --json --pid $pid --interval 1 --duration "$dur" \
      2>"/tmp/$name.stderr" || rc=$?; echo $rc >"/tmp/$name.rc") |
    while read -r line; do
      vcpu_sched $pid >>"/tmp/$name.sched"
      echo "$line" >>"/tmp/$name.trace"
      if [ ! -e "/tmp/$name.released" ]; then
        # The agent is attached: let the VMM run.
        touch "/tmp/$name.released"
        if [ "$hog" = hog ]; then
          hog_during_loop "$name" $pid &
        fi
        echo go >"/tmp/$name.go"
      fi
    done
  touch "/tmp/$name.trace"
  # The agent failed or ended before the VMM did: release and end the VMM anyway.
  [ -e "/tmp/$name.released" ] || echo go >"/tmp/$name.go"
  reap_bounded $pid "/tmp/$name.vmmrc"
  if [ "$hog" = hog ]; then
    i=0
    while ! grep -q -e '^end' -e '^none' "/tmp/$name.hog" 2>/dev/null && [ $i -lt 100 ]; do
      sleep 0.1
      i=$((i + 1))
    done
  fi
}

emit_vmm() {
  local name=$1 f
  for f in trace sched vmm events hog stderr rc vmmerr vmmrc; do
    [ -e "/tmp/$name.$f" ] && result "$name.$f" <"/tmp/$name.$f"
  done
  return 0
}

{
  echo "kvm_dev $(ls -l /dev/kvm)"
  echo "svm $(grep -m1 -c -w svm /proc/cpuinfo)"
  lsmod 2>/dev/null | grep -E "^(kvm|irqbypass)" || true
  echo "calib $(cat /tmp/kvm.calib)"
  echo "loops_1s $(loops_for 1)"
} | result kvm.info

run_vmm kvm.a - 1 6 --halt-ms $KVM_HALT_MS
emit_vmm kvm.a
run_vmm kvm.b hog 2.5 10
emit_vmm kvm.b

# The raw tracepoints around a short run, in their own tracefs instance.
t=/sys/kernel/tracing/instances/isoscope-kvm
if mkdir "$t" 2>/dev/null; then
  for e in kvm_entry kvm_exit kvm_userspace_exit kvm_fpu kvm_pio kvm_vcpu_wakeup; do
    echo 1 >"$t/events/kvm/$e/enable" 2>/dev/null || echo "no kvm:$e" >>/tmp/kvm.tracefs.missing
  done
  echo 1 >"$t/tracing_on"
  $WL/tinyvmm --exits 3 --delay-us 1000 --guest-loops 1000 --halt-ms 20 --cpu 1 --json \
    >/tmp/kvm.tracefs.vmm 2>&1 || true
  echo 0 >"$t/tracing_on"
  {
    if [ -e /tmp/kvm.tracefs.missing ]; then cat /tmp/kvm.tracefs.missing; fi
    cat /tmp/kvm.tracefs.vmm
    grep -v '^#' "$t/trace" | grep "CPU 0/KVM" | sed 's/^ *//' | head -n 80
  } | result kvm.tracefs
  echo 0 >"$t/events/enable"
  rmdir "$t" 2>/dev/null || true
fi
