# doctor: what the agent finds on this kernel (features, programs loaded for real, layers).
rc=0
taskset -c 0 $BIN doctor --json >/tmp/doctor.json 2>/tmp/doctor.stderr || rc=$?
echo $rc >/tmp/doctor.rc
result doctor.json </tmp/doctor.json
result doctor.rc </tmp/doctor.rc
result doctor.stderr </tmp/doctor.stderr
# The debug log keeps libbpf's and the verifier's words for the report when something fails.
# (doctor failed, or no program of the optional "unthrottle" group attached).
if [ "$(cat /tmp/doctor.rc)" != 0 ] || ! grep -q '"available":true,"group":"unthrottle"' /tmp/doctor.json; then
  taskset -c 0 $BIN --log-level debug doctor >/tmp/doctor.debug 2>&1 || true
  result doctor.debug </tmp/doctor.debug
fi
