# Helpers shared by the guest scenarios (sourced by /init; busybox sh).
CG=/sys/fs/cgroup
BIN=/isoscope/isoscope
WL=/isoscope/workloads

# Milliseconds since boot.
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# result NAME < text: prints text between markers; tests/vm/run_vm.py collects it as NAME.
result() {
  echo "ISOSCOPE-RESULT-BEGIN $1"
  cat
  echo "ISOSCOPE-RESULT-END $1"
}

# Creates a cgroup directory (and its parents), enabling the cpu and memory controllers in
# every parent on the way so the leaf has cpu.max.
mkcg() {
  local path=${1#/} cur=$CG old_ifs=$IFS part
  IFS=/
  for part in $path; do
    IFS=$old_ifs
    grep -qw cpu "$cur/cgroup.subtree_control" || echo "+cpu +memory" >"$cur/cgroup.subtree_control"
    cur="$cur/$part"
    mkdir -p "$cur"
    IFS=/
  done
  IFS=$old_ifs
  echo "$cur"
}

# start_in DIR CMD...: starts CMD in cgroup directory DIR (absolute) in the background and
# sets STARTED_PID. The child moves itself into the cgroup before it execs, so the workload
# never runs elsewhere.
start_in() {
  local dir=$1
  shift
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$dir" "$@" >/dev/null 2>&1 &
  STARTED_PID=$!
}

# stop PID...: kills background workloads of this shell and reaps them.
stop() {
  kill "$@" 2>/dev/null || true
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# throttled_usec and nr_throttled of a cgroup's cpu.stat as "uptime_ms throttled_usec nr".
cpustat() {
  echo "$(now_ms) $(awk '$1 == "throttled_usec" {u=$2} $1 == "nr_throttled" {n=$2} END {print u, n}' "$1/cpu.stat")"
}

# trace_with_cpustat CGDIR OUTNAME ARGS...: runs `isoscope trace ARGS` pinned to CPU 0 and, as
# each interval line arrives, samples CGDIR's cpu.stat. Result blocks: OUTNAME.trace (the JSON
# lines), OUTNAME.cpustat ("uptime_ms throttled_usec nr_throttled" at start and after each
# line), OUTNAME.stderr, OUTNAME.rc.
trace_with_cpustat() {
  local dir=$1 name=$2
  shift 2
  cpustat "$dir" >/tmp/$name.cpustat
  (rc=0; taskset -c 0 $BIN trace --json "$@" 2>/tmp/$name.stderr || rc=$?; echo $rc >/tmp/$name.rc) |
    while read -r line; do
      cpustat "$dir" >>/tmp/$name.cpustat
      echo "$line" >>/tmp/$name.trace
    done
  touch /tmp/$name.trace
}

emit_trace() {
  local name=$1
  result "$name.trace" </tmp/$name.trace
  result "$name.cpustat" </tmp/$name.cpustat 2>/dev/null
  result "$name.stderr" </tmp/$name.stderr
  result "$name.rc" </tmp/$name.rc
}

# user_pid PID: true for a live user-space process (kernel threads have no command line).
user_pid() { [ -n "$(tr -d '\0' <"/proc/$1/cmdline" 2>/dev/null)" ]; }

# watchdog NAME SECONDS (run in the background by /init next to a scenario): after SECONDS,
# prints what every process is doing as result block NAME.hang, then kills every process but
# PID 1 and itself, so /init reports the scenario as failed and goes on.
watchdog() {
  local self p sl
  read -r self _ </proc/self/stat
  trap 'kill $sl 2>/dev/null; exit 0' TERM
  sleep "$2" &
  sl=$!
  wait $sl
  {
    echo "scenario $1 still running after $2 s; processes (pid state wchan cmdline, kernel stack):"
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      user_pid "$p" || continue
      echo "$p $(cut -d' ' -f3 "/proc/$p/stat") $(cat "/proc/$p/wchan" 2>/dev/null) $(tr '\0' ' ' <"/proc/$p/cmdline")"
      sed 's/^/    /' "/proc/$p/stack" 2>/dev/null
    done
  } | result "$1.hang"
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" != 1 ] && [ "$p" != "$self" ] && user_pid "$p" && kill -9 "$p" 2>/dev/null
  done
  return 0
}

# reap_bounded PID RCFILE: waits up to 10 s for the workload PID (a child of this shell) to end,
# kills it after that, and writes its exit status to RCFILE.
reap_bounded() {
  local pid=$1 out=$2 i=0 rc=0
  while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill $pid 2>/dev/null || true
  wait $pid || rc=$?
  echo $rc >"$out"
}
