# runqueue: the target spins on CPU 1 in its own cgroup; two competitors spin on CPU 1 in the
# root cgroup (three equal-weight entities on CPU 1: the target runs 1/3 and waits 2/3).
dir=$(mkcg /vmtest/runqueue)
start_in "$dir" $WL/spin 30 1 1
pid=$STARTED_PID
start_in $CG $WL/spin 30 1 1
c1=$STARTED_PID
start_in $CG $WL/spin 30 1 1
c2=$STARTED_PID
sleep 1
trace_with_cpustat "$dir" runqueue --pid "$pid" --duration 4 --interval 1
stop "$pid" "$c1" "$c2"
emit_trace runqueue
