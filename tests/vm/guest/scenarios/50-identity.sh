# identity: a process in a kubelet systemd-driver style cgroup on pure v2; the JSON target
# must carry the pod UID (dashed) and the container ID, by --pid and by --cgroup.
uid=6f1f8a0e-3b2c-4d5e-9f60-7a8b9c0d1e2f
cid=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
uid_=$(echo $uid | tr '-' '_')
rel=kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod$uid_.slice/cri-containerd-$cid.scope
dir=$(mkcg /$rel)
start_in "$dir" taskset -c 1 $WL/sleeper 30 1000 50000
pid=$STARTED_PID
sleep 1
result identity.expected <<EOT
pod_uid $uid
container_id $cid
cgroup /$rel
pid $pid
EOT
trace_with_cpustat "$dir" identity.pid --pid "$pid" --duration 2 --interval 1
emit_trace identity.pid
trace_with_cpustat "$dir" identity.cgroup --cgroup "/$rel" --duration 2 --interval 1
emit_trace identity.cgroup
stop "$pid"
