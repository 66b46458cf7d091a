# no false blame: a mostly sleeping process (1 ms of work, 50 ms of sleep) in a cgroup with no
# limit and an idle CPU 1: no isolation cause may be blamed.
dir=$(mkcg /vmtest/sleeper)
start_in "$dir" taskset -c 1 $WL/sleeper 30 1000 50000
pid=$STARTED_PID
sleep 1
trace_with_cpustat "$dir" sleeper --pid "$pid" --duration 3 --interval 1
stop "$pid"
emit_trace sleeper
