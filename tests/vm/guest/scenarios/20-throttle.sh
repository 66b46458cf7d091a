# throttle + unthrottle comparison: one spinning thread on CPU 1 in a cgroup with
# cpu.max "20000 100000" (20% of a CPU), traced by two agents at once, both on CPU 0:
#   throttle.opt  default programs (the optional unthrottle fentry/kprobe program loads here)
#   throttle.tp   --no-optional-probes (tracepoints only)
# Each samples the cgroup's cpu.stat as its interval lines arrive.
dir=$(mkcg /vmtest/throttle)
echo "20000 100000" >"$dir/cpu.max"
start_in "$dir" taskset -c 1 $WL/spin 30 1 1
pid=$STARTED_PID
sleep 1
trace_with_cpustat "$dir" throttle.opt --pid "$pid" --duration 4 --interval 1 &
t1=$!
trace_with_cpustat "$dir" throttle.tp --pid "$pid" --duration 4 --interval 1 --no-optional-probes &
t2=$!
wait $t1
wait $t2
stop "$pid"
emit_trace throttle.opt
emit_trace throttle.tp
result throttle.cpumax <"$dir/cpu.max"
