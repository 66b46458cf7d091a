#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Scheduler-probe overhead benchmark (docs/benchmarks.md).
#
#   bench/run.sh BUILD_DIR          (make bench runs: bench/run.sh build)
#
# Runs stress-ng --switch under three configurations, interleaved:
# baseline (no tracer), the isoscope agent, and bpftrace running runqlat's
# logic (bench/runqlat-noinclude.bt); prints a Markdown table and writes it to
# bench/results/sched-<date>.md (+ .json). Needs root, stress-ng, bpftrace,
# bpftool, python3.
#
# Environment knobs:
#   BENCH_DURATION  seconds per measured window      (default 5)
#   BENCH_ROUNDS    windows per configuration        (default 4; ABC CBA ABC CBA)
#   BENCH_WORKERS   stress-ng --switch N             (default 2)
#   BENCH_INTERVAL  agent --interval seconds         (default 1)
#   BENCH_QUIET_WAIT max seconds to wait before each window until no other
#                   BPF program runs and other processes use < 15% of a core
#                   (default 15, then never again once it timed out)
#   BENCH_NICE      nice value for the load, process and autogroup (default 0;
#                   -20 shields it from other work on a shared machine, at
#                   that work's expense)
#   BENCH_RETRIES   times a window is measured again when other processes
#                   used > 15% of a core during it (default 1)
#   BENCH_OUT       results directory                (default bench/results)
#   BENCH_COMPARE   a second build dir (or isoscope binary): measured as an
#                   extra configuration "isoscope-cmp", for A/B of BPF changes
#   BENCH_KEEP_LOGS=1 keep tracer/stress-ng logs in the temp dir
#   BENCH_SCHED=0   skip this scheduler benchmark (run only the extra steps)
#   BENCH_SPAN_JOIN=0, BENCH_HTTP=0, BENCH_FUZZ_SECONDS=0: skip the extra steps
#                   (span-join throughput, wrk HTTP off/on, longer fuzz runs; see the end)
#
# kernel.bpf_stats_enabled is set to 1 for the run and restored to its
# previous value on every exit path (normal, error, Ctrl-C, SIGTERM).
# Exit status: 0 ok, 1 failed, 2 measured but a sanity check failed.
set -euo pipefail

usage() { echo "usage: $0 BUILD_DIR" >&2; exit 64; }
[[ $# -eq 1 ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=$1
if [[ ! -d $build && -d $root/$build ]]; then build=$root/$build; fi
bin=$build/isoscope
[[ -x $bin ]] || { echo "bench: $bin not found or not executable (build first: make build)" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || { echo "bench: needs root (BPF, bpf_stats)" >&2; exit 1; }
for t in stress-ng bpftrace python3; do
	command -v "$t" >/dev/null || { echo "bench: $t not found" >&2; exit 1; }
done
[[ -x /usr/sbin/bpftool ]] || command -v bpftool >/dev/null ||
	{ echo "bench: bpftool not found" >&2; exit 1; }

stats=/proc/sys/kernel/bpf_stats_enabled
stats_prev=$(cat "$stats")
helper_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [[ -n $helper_pid ]] && kill -0 "$helper_pid" 2>/dev/null; then
		kill -TERM "$helper_pid" 2>/dev/null || true
		wait "$helper_pid" 2>/dev/null || true
	fi
	echo "$stats_prev" >"$stats" || echo "bench: could not restore $stats to $stats_prev" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

echo 1 >"$stats"

duration=${BENCH_DURATION:-5}
rounds=${BENCH_ROUNDS:-4}
workers=${BENCH_WORKERS:-2}
interval=${BENCH_INTERVAL:-1}
quiet_wait=${BENCH_QUIET_WAIT:-15}
nice=${BENCH_NICE:-0}
retries=${BENCH_RETRIES:-1}
out=${BENCH_OUT:-$here/results}

# The exact command line, with the knobs that shaped the numbers.
cmdline="BENCH_DURATION=$duration BENCH_ROUNDS=$rounds BENCH_WORKERS=$workers BENCH_INTERVAL=$interval BENCH_NICE=$nice bench/run.sh $1"
extra=()
if [[ -n ${BENCH_COMPARE:-} ]]; then
	cmp=$BENCH_COMPARE
	[[ -d $cmp ]] && cmp=$cmp/isoscope
	[[ -x $cmp ]] || { echo "bench: BENCH_COMPARE: $cmp not found or not executable" >&2; exit 1; }
	extra+=(--compare "$cmp")
	cmdline="BENCH_COMPARE=$BENCH_COMPARE $cmdline"
fi
[[ ${BENCH_KEEP_LOGS:-0} == 1 ]] && extra+=(--keep-logs)

echo "bench: $cmdline" >&2

# Runs one step in the background + wait, so a signal to this script runs the trap at once.
worst=0
step() {
	"$@" &
	helper_pid=$!
	set +e
	wait "$helper_pid"
	local rc=$?
	set -e
	helper_pid=
	((rc > worst)) && worst=$rc
	return 0
}

if [[ ${BENCH_SCHED:-1} != 0 ]]; then
	step python3 "$here/sched_bench.py" \
		--isoscope "$bin" --bt-script "$here/runqlat-noinclude.bt" \
		--duration "$duration" --rounds "$rounds" --workers "$workers" --interval "$interval" \
		--quiet-wait "$quiet_wait" --nice "$nice" --retries "$retries" \
		--out-dir "$out" --command "$cmdline" --stats-prev "$stats_prev" "${extra[@]}"
	echo "bench: command: $cmdline" >&2
fi

# ---- Extra steps (docs/benchmarks.md, "Horizontal axis (OTLP) benchmark") ----
#   BENCH_SPAN_JOIN=0  skip span_join_bench (built here: cmake --build BUILD --target
#                      span_join_bench; BENCH_SPAN_JOIN_SECONDS 5, BENCH_SPAN_JOIN_RATE 600000
#                      background records/s, BENCH_SPAN_JOIN_LAG 200 requests per thread
#                      between a span's end and its join; runs at BENCH_NICE like the load)
#   BENCH_HTTP=0       skip bench/http_bench.py (wrk against a real HTTP server, agent off vs
#                      on; its BENCH_HTTP_* knobs are in that script)
#   BENCH_FUZZ_SECONDS seconds per libFuzzer target found as BUILD/tests/fuzz/*_fuzzer
#                      (default 60; 0 skips)
#   BENCH_SCHED=0      skip the scheduler benchmark above
today=$(date +%F)
mkdir -p "$out"
if [[ ${BENCH_SPAN_JOIN:-1} != 0 ]]; then
	if step cmake --build "$build" --target span_join_bench >"$out/.span-join-build.log" 2>&1 &&
		[[ -x $build/bench/span_join_bench ]]; then
		sj_cmd="$build/bench/span_join_bench --seconds ${BENCH_SPAN_JOIN_SECONDS:-5} --rate ${BENCH_SPAN_JOIN_RATE:-600000} --lag-rounds ${BENCH_SPAN_JOIN_LAG:-200}"
		echo "bench: $sj_cmd" >&2
		# shellcheck disable=SC2086
		step sh -c "echo $nice >/proc/self/autogroup 2>/dev/null; exec nice -n $nice $sj_cmd" \
			>"$out/span-join-$today.txt"
		cat "$out/span-join-$today.txt"
	else
		echo "bench: span_join_bench did not build (see $out/.span-join-build.log)" >&2
		worst=1
	fi
fi
if [[ ${BENCH_HTTP:-1} != 0 ]]; then
	for t in wrk node; do
		command -v "$t" >/dev/null || { echo "bench: $t not found (scripts/install-deps.sh)" >&2; exit 1; }
	done
	export BENCH_HTTP_NICE=${BENCH_HTTP_NICE:-$nice}  # BENCH_NICE unless set
	http_cmd="BENCH_HTTP_RATE=${BENCH_HTTP_RATE:-2000} BENCH_HTTP_DURATION=${BENCH_HTTP_DURATION:-10} BENCH_HTTP_ROUNDS=${BENCH_HTTP_ROUNDS:-3} BENCH_HTTP_SERVER=${BENCH_HTTP_SERVER:-otel} BENCH_HTTP_NICE=$BENCH_HTTP_NICE bench/run.sh $1"
	echo "bench: $http_cmd" >&2
	step python3 "$here/http_bench.py" --isoscope "$bin" --out-dir "$out" --command "$http_cmd"
fi
fuzz_s=${BENCH_FUZZ_SECONDS:-60}
if [[ $fuzz_s != 0 ]]; then
	for fz in "$build"/tests/fuzz/*_fuzzer; do
		[[ -x $fz && -f $fz ]] || continue
		name=$(basename "$fz" _fuzzer)
		work=$(mktemp -d /tmp/isoscope-fuzz-XXXXXX)
		mkdir -p "$work/corpus" "$work/artifacts"
		cp "$build/tests/fuzz/seeds/$name"/* "$work/corpus/" 2>/dev/null || true
		echo "bench: fuzz $name for ${fuzz_s}s (artifacts: $work/artifacts)" >&2
		step "$fz" -max_total_time="$fuzz_s" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix="$work/artifacts/" "$work/corpus"
		if compgen -G "$work/artifacts/*" >/dev/null; then
			echo "bench: fuzz $name found a crash: kept in $work/artifacts" >&2
		else
			rm -rf "$work"
		fi
	done
fi
exit "$worst"
