#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Hypervisor and paravirt probe overhead (issue #12): BPF ns per block request and per KVM exit,
isoscope side by side with bpftrace peers in the same run.

  bench/hv_bench.py --isoscope BUILD/isoscope [--runs 3] [--out FILE.json]

Two phases per run, each with its two configurations in alternating windows over --rounds
(A B, B A, ...), every tracer alone on the machine during its window:

  block   load: O_DIRECT 4 KiB random reads of a --file-mb MiB file on a disk-backed file system
          (--file-dir, default /var/tmp: this VM's virtio-blk root disk), one read at a time, by
          BUILD/workloads/directread in chunks (or an in-process Python reader when it is not
          built), for --duration s.
            isoscope       `isoscope trace --cgroup / --interval 1 --json` (every program it loads;
                           measured: iso_blk_insert/issue/complete, tp_btf or raw_tp variant)
            bt-biolatency  bpftrace, biolatency's logic on the block tracepoints:
                           block_rq_issue stores a start time keyed by the request, block_rq_complete
                           adds the latency to a log2 histogram and deletes the key. The tracepoint
                           records carry no request pointer, so the key is (dev, sector), as in
                           bcc's biolatency on tracepoints; bpftrace's shipped biolatency.bt uses
                           kprobes on blk_account_io_start/done (keyed by the request pointer).
  kvm     load: BUILD/workloads/tinyvmm --exits N --delay-us 0 --guest-loops 0, run again
          and again for --duration s: a KVM_EXIT_IO per guest `out`. On a host whose KVM only
          emulates (no vmx/svm) kvm_exit/kvm_entry never fire; kvm_userspace_exit fires once per
          exit and kvm_fpu twice per KVM_RUN (load and put).
            isoscope       the same trace command (measured: iso_kvm_userspace_exit + iso_kvm_fpu,
                           and iso_kvm_exit/iso_kvm_entry, which run only with hardware virt)
            bt-kvmexit     bpftrace, bcc kvmexit's shape: a count per (pid, tid, exit reason) on
                           tracepoint:kvm:kvm_exit and one on tracepoint:kvm:kvm_userspace_exit

Per window, with kernel.bpf_stats_enabled=1: run_time_ns / run_cnt deltas (bpftool prog show -j)
of the programs the tracer process owns (/proc/PID/fdinfo prog_id), the tracer's user+system CPU,
/sys/block/DISK/stat completions, the load's own counts. Reported (no timing is asserted):

  block   BPF ns per request = run_time_ns of the block programs / run_cnt of the completion
          program (requests completed on every disk while the window ran; the disk's stat delta
          and the reader's count are cross-checks)
  kvm     BPF ns per exit = run_time_ns of the exit-path programs / run_cnt of the
          kvm_userspace_exit program; BPF ns per event = the same over every run of those programs

Per run the windows of a configuration are summed (weighted); over --runs the median, min, max and
spread ((max - min) / median) of each figure, and the isoscope / bpftrace ratios.
With --phases block (or kvm) alone, the windows are printed as JSON and no result file is written.

kernel.bpf_stats_enabled is set to 1 and restored to its previous value on every exit path
(normal, error, Ctrl-C, SIGTERM); a BPF_ENABLE_STATS fd is held meanwhile. Tracers and loads run
in their own sessions with PR_SET_PDEATHSIG=SIGKILL and are stopped in a `finally`; the data file
and the temporary directory are removed. Exit status: 0 ok, 1 failed, 2 measured but a sanity
check failed (a program missing or not running, statistics off), 130/143 interrupted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import mmap
import os
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sched_bench as sb  # noqa: E402

STATS = "/proc/sys/kernel/bpf_stats_enabled"

BIOLATENCY_BT = r"""
// biolatency's logic (bpftrace tools/biolatency.bt, bcc biolatency) on the block tracepoints.
// The tracepoint record has no request pointer: a request is keyed by (dev, sector).
tracepoint:block:block_rq_issue
{
  @start[args->dev, args->sector] = nsecs;
}

tracepoint:block:block_rq_complete
/@start[args->dev, args->sector]/
{
  @usecs = hist((nsecs - @start[args->dev, args->sector]) / 1000);
  delete(@start[args->dev, args->sector]);
}

END
{
  clear(@start);
}
"""

KVMEXIT_BT = r"""
// bcc kvmexit's shape: exits counted per (pid, tid, reason). kvm_exit carries the hardware exit
// reason (never fires when KVM only emulates); kvm_userspace_exit the KVM_EXIT_* reason.
tracepoint:kvm:kvm_exit
{
  @exit[pid, tid, args->exit_reason] = count();
}

tracepoint:kvm:kvm_userspace_exit
{
  @userspace_exit[pid, tid, args->reason] = count();
}
"""

PHASES = {
    "block": ["isoscope", "bt-biolatency"],
    "kvm": ["isoscope", "bt-kvmexit"],
}
BT_SCRIPTS = {"bt-biolatency": BIOLATENCY_BT, "bt-kvmexit": KVMEXIT_BT}
BT_OUTPUT = {"bt-biolatency": "@usecs", "bt-kvmexit": "@userspace_exit"}

ISO_BLK = ("iso_blk_insert", "iso_blk_issue", "iso_blk_complete")
ISO_KVM_PATH = ("iso_kvm_userspace_exit", "iso_kvm_fpu")  # what runs per exit on this kind of host
ISO_KVM_HW = ("iso_kvm_exit", "iso_kvm_entry")  # hardware virt only


def iso_base(name: str) -> str:
    """iso_blk_issue_btf / iso_blk_issue_raw -> iso_blk_issue."""
    for suf in ("_btf", "_raw"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def is_complete_prog(name: str) -> bool:
    # bpftrace's program for block_rq_complete is named "block_rq_comple" (15 characters).
    return "block_rq_comple" in name or iso_base(name) == "iso_blk_complete"


def is_userspace_exit_prog(name: str) -> bool:
    # bpftrace: "kvm_userspace_e"; isoscope: iso_kvm_userspace_exit.
    return "kvm_userspace_e" in name


# ---------------------------------------------------------------------------
# system helpers


def disk_of(path: str) -> str | None:
    """The whole-disk name (vda) under the file system holding `path`, or None."""
    st = os.stat(path)
    sysdev = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if not os.path.exists(sysdev):
        return None
    real = os.path.realpath(sysdev)
    if os.path.exists(os.path.join(real, "partition")):
        real = os.path.dirname(real)
    return os.path.basename(real)


def disk_driver(disk: str) -> str:
    return os.path.basename(os.path.realpath(f"/sys/block/{disk}/device/driver")) \
        if os.path.exists(f"/sys/block/{disk}/device/driver") else "?"


def disk_completions(disk: str | None) -> int:
    """Reads + writes completed (fields 1 and 5 of /sys/block/DISK/stat)."""
    if not disk:
        return 0
    with open(f"/sys/block/{disk}/stat") as f:
        v = f.read().split()
    return int(v[0]) + int(v[4])


def make_file(directory: str, mb: int) -> str:
    """A file of `mb` MiB written with O_DIRECT (1 MiB writes) and fsync'ed."""
    fd, path = tempfile.mkstemp(prefix="isoscope-hvbench-", suffix=".dat", dir=directory)
    os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(random.Random(12).randbytes(1 << 20))
        for i in range(mb):
            if os.pwritev(fd, [buf], i << 20) != 1 << 20:
                raise OSError("short O_DIRECT write")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path


# ---------------------------------------------------------------------------
# loads


def run_child(argv: list[str], timeout: float, nice: int = 0) -> str:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         text=True, start_new_session=True, preexec_fn=sb._load_setup(nice))
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (rc={p.returncode}): {err.strip()}")
    return out


def block_load(a, path: str, seed: int) -> dict:
    """O_DIRECT random 4 KiB reads for a.duration s: directread in chunks of ~0.5 s."""
    reads, total_s, p50s, p90s, chunks = 0, 0.0, [], [], 0
    t0 = time.monotonic()
    if a.directread:
        chunk = 500
        while time.monotonic() - t0 < a.duration:
            left = a.duration - (time.monotonic() - t0)
            out = run_child([a.directread, path, "--count", str(chunk), "--seed", str(seed + chunks),
                             "--json"], timeout=120, nice=a.nice)
            j = json.loads(out.strip().splitlines()[-1])
            reads += j["reads"]
            total_s += j["total_s"]
            p50s.append(j["p50_s"])
            p90s.append(j["p90_s"])
            chunks += 1
            # next chunk ~0.5 s, never much past the window's end
            per = j["wall_s"] / max(1, j["reads"])
            chunk = max(50, int(min(0.5, max(0.05, left - j["wall_s"])) / max(per, 1e-6)))
        reader = "directread"
    else:
        lat = []
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, 4096)
            nblocks = os.fstat(fd).st_size // 4096
            rnd = random.Random(seed)
            while time.monotonic() - t0 < a.duration:
                off = rnd.randrange(nblocks) * 4096
                s = time.monotonic()
                if os.preadv(fd, [buf], off) != 4096:
                    raise OSError("short O_DIRECT read")
                lat.append(time.monotonic() - s)
        finally:
            os.close(fd)
        reads, total_s = len(lat), sum(lat)
        if lat:
            lat.sort()
            p50s, p90s = [lat[len(lat) // 2]], [lat[int(len(lat) * 0.9)]]
        reader = "python"
    wall = time.monotonic() - t0
    return {"reader": reader, "reads": reads, "wall_s": wall, "reads_per_s": reads / wall if wall else 0,
            "mean_us": 1e6 * total_s / reads if reads else None,
            "p50_us": 1e6 * statistics.median(p50s) if p50s else None,
            "p90_us": 1e6 * statistics.median(p90s) if p90s else None, "chunks": chunks}


def kvm_load(a) -> dict:
    """tinyvmm again and again for a.duration s; each run makes a.exits port-I/O exits."""
    runs, exits_total, io_exits, vmm_s = 0, 0, 0, 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.duration:
        out = run_child([a.tinyvmm, "--exits", str(a.exits), "--delay-us", "0", "--guest-loops", "0",
                         "--json"], timeout=120, nice=a.nice)
        j = json.loads(out.strip().splitlines()[-1])
        runs += 1
        exits_total += j["exits_total"]
        io_exits += j["io_exits"]
        vmm_s += j["vmm_handling_s"]
    wall = time.monotonic() - t0
    return {"tinyvmm_runs": runs, "exits_total": exits_total, "io_exits": io_exits,
            "wall_s": wall, "exits_per_s": exits_total / wall if wall else 0,
            "vmm_handling_us_per_exit": 1e6 * vmm_s / exits_total if exits_total else None}


# ---------------------------------------------------------------------------
# tracers


class Tracer:
    def __init__(self, name: str, argv: list[str], log: str):
        self.name, self.argv, self.log_path = name, argv, log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=sb._child_setup)
        self.prog_ids: set[int] = set()
        self.exit_code = None

    def text(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self, bpftool: str, wanted, timeout: float = 90) -> None:
        """Ready: the programs it holds include `wanted(names)` and have not changed for 1 s."""
        end = time.monotonic() + timeout
        last, since = set(), time.monotonic()
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early (rc={self.proc.returncode}):\n{self.text()[-3000:]}")
            ids = sb.owned_prog_ids(self.proc.pid)
            if ids != last:
                last, since = ids, time.monotonic()
            elif ids and time.monotonic() - since >= 1.0:
                progs = sb.prog_stats(bpftool)
                if wanted({progs[i]["name"] for i in ids if i in progs}):
                    self.prog_ids = ids
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.exit_code = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it left in its session
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def start_tracer(phase: str, cfg: str, a, tmp: str, tag: str, bpftool: str) -> Tracer:
    log = f"{tmp}/{tag}-{cfg}.log"
    if cfg == "isoscope":
        if a.mode == "agent":
            argv = [a.isoscope, "agent", "--metrics-addr", f"127.0.0.1:{sb.free_port()}", "--interval", "1",
                    "--otlp-listen", ""]
        else:
            # Stopped with SIGINT after the window; --duration only bounds a run left behind.
            argv = [a.isoscope, "trace", "--cgroup", "/", "--duration", "3600", "--interval", "1", "--json"]
        t = Tracer(cfg, argv, log)
        need = ISO_BLK if phase == "block" else ISO_KVM_PATH
        t.wait_ready(bpftool, lambda names: all(any(iso_base(n) == w for n in names) for w in need))
    else:
        script = f"{tmp}/{cfg}.bt"
        Path(script).write_text(BT_SCRIPTS[cfg])
        t = Tracer(cfg, [shutil.which("bpftrace"), script], log)
        t.wait_ready(bpftool, lambda names: len(names) >= 2)
    time.sleep(a.settle)
    return t


# ---------------------------------------------------------------------------
# one window


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def window(phase: str, cfg: str, run: int, rnd: int, a, tmp: str, bpftool: str, path: str | None) -> dict:
    tag = f"r{run}-{phase}-{rnd}"
    print(f"hv_bench: run {run} {phase} round {rnd}: {cfg} ...", file=sys.stderr, flush=True)
    t = start_tracer(phase, cfg, a, tmp, tag, bpftool)
    try:
        pid = t.proc.pid
        waited, noisy = sb.wait_quiet(bpftool, t.prog_ids, pid, a.quiet_wait, a.quiet_cpu)
        if noisy:
            print(f"hv_bench:   measuring anyway after {waited:.0f} s: {noisy}", file=sys.stderr, flush=True)
            if waited >= a.quiet_wait > 0:
                print("hv_bench:   the machine stays busy; not waiting for it again", file=sys.stderr, flush=True)
                a.quiet_wait = 0.0
        s0, p0, c0, d0 = sb.system_stat(), sb.prog_stats(bpftool), sb.proc_cpu_s(pid), disk_completions(a.disk)
        l0 = children_cpu_s()
        t0 = time.monotonic()
        load = block_load(a, path, 1000 * run + rnd) if phase == "block" else kvm_load(a)
        secs = time.monotonic() - t0
        s1, p1, c1, d1 = sb.system_stat(), sb.prog_stats(bpftool), sb.proc_cpu_s(pid), disk_completions(a.disk)
        l1 = children_cpu_s()
        if not t.alive():
            raise RuntimeError(f"{cfg} died during the window:\n{t.text()[-3000:]}")
        t.prog_ids |= sb.owned_prog_ids(pid)
    finally:
        t.stop()
    progs, foreign_runs, foreign = {}, 0, {}
    for i, after in p1.items():
        before = p0.get(i, {"run_cnt": 0, "run_time_ns": 0})
        d_cnt, d_ns = after["run_cnt"] - before["run_cnt"], after["run_time_ns"] - before["run_time_ns"]
        if i in t.prog_ids:
            prev = progs.get(after["name"], {"run_cnt": 0, "run_time_ns": 0})
            progs[after["name"]] = {"type": after["type"], "run_cnt": prev["run_cnt"] + d_cnt,
                                    "run_time_ns": prev["run_time_ns"] + d_ns}
        elif d_cnt > 0:
            foreign_runs += d_cnt
            foreign[after["name"]] = foreign.get(after["name"], 0) + d_cnt
    text = t.text()
    load_cpu = (l1 - l0) if load.get("reader") != "python" else 0.0  # the python reader's CPU is ours
    w = {"run": run, "phase": phase, "config": cfg, "round": rnd, "seconds": secs, "load": load,
         "progs": progs, "foreign_bpf_runs": foreign_runs,
         "foreign_bpf": dict(sorted(foreign.items(), key=lambda kv: -kv[1])[:8]),
         "disk_completions": d1 - d0, "quiet_wait_s": waited, "noisy_before": noisy,
         "tracer_cpu_pct": 100 * (c1 - c0) / secs, "load_cpu_pct": 100 * load_cpu / secs,
         "busy_cores": (s1["busy"] - s0["busy"]) / secs,
         "other_cpu_pct": 100 * max(0.0, (s1["busy"] - s0["busy"]) - (c1 - c0) - load_cpu) / secs,
         "steal_pct": 100 * (s1["steal"] - s0["steal"]) / secs, "tracer_exit": t.exit_code,
         "tracer_output_ok": (BT_OUTPUT[cfg] in text) if cfg in BT_OUTPUT else None}
    if cfg == "isoscope" and phase == "kvm" and a.mode == "trace":
        w["iso_vmm_exits_counted"] = iso_counted_exits(text)
    return w


def iso_counted_exits(text: str) -> int | None:
    """Sum of the `vmm` exit counts in the vcpus sections of trace --json (a cross-check)."""
    total, seen = 0, False
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            j = json.loads(line)
        except ValueError:
            continue
        v = j.get("vcpus")
        if isinstance(v, dict):
            seen = True
            total += sum(e.get("count", 0) for e in v.get("exits", []) if e.get("kind") == "vmm")
    return total if seen else None


# ---------------------------------------------------------------------------
# figures


def median_or_none(vals: list) -> float | None:
    v = [x for x in vals if x is not None]
    return statistics.median(v) if v else None


def figures(phase: str, cfg: str, ws: list[dict]) -> dict:
    """Sums a configuration's windows (of one run, or all) into its figures."""
    progs: dict[str, dict] = {}
    for w in ws:
        for n, p in w["progs"].items():
            s = progs.setdefault(n, {"type": p["type"], "run_cnt": 0, "run_time_ns": 0})
            s["run_cnt"] += p["run_cnt"]
            s["run_time_ns"] += p["run_time_ns"]
    for p in progs.values():
        p["ns_per_run"] = p["run_time_ns"] / p["run_cnt"] if p["run_cnt"] else None
    secs = sum(w["seconds"] for w in ws)
    all_ns = sum(p["run_time_ns"] for p in progs.values())
    f = {"windows": len(ws), "seconds": secs, "progs": progs,
         "tracer_cpu_pct": sum(w["tracer_cpu_pct"] * w["seconds"] for w in ws) / secs if secs else None,
         "other_cpu_pct": sum(w["other_cpu_pct"] * w["seconds"] for w in ws) / secs if secs else None,
         "all_progs_bpf_pct": 100 * all_ns / 1e9 / secs if secs else None}
    if phase == "block":
        if cfg == "isoscope":
            path = {n: p for n, p in progs.items() if iso_base(n) in ISO_BLK}
        else:
            path = progs
        req = sum(p["run_cnt"] for n, p in path.items() if is_complete_prog(n))
        ns = sum(p["run_time_ns"] for p in path.values())
        f.update({"path_progs": sorted(path), "requests": req, "path_ns": ns,
                  "ns_per_request": ns / req if req else None,
                  "all_progs_ns_per_request": all_ns / req if req else None,
                  "runs_per_request": {n: p["run_cnt"] / req for n, p in path.items()} if req else {},
                  "disk_completions": sum(w["disk_completions"] for w in ws),
                  "reads": sum(w["load"]["reads"] for w in ws),
                  "reads_per_s": sum(w["load"]["reads"] for w in ws) / secs if secs else None,
                  "read_mean_us": median_or_none([w["load"]["mean_us"] for w in ws]),
                  "read_p50_us": median_or_none([w["load"]["p50_us"] for w in ws])})
    else:
        if cfg == "isoscope":
            path = {n: p for n, p in progs.items() if iso_base(n) in ISO_KVM_PATH}
            hw = {n: p for n, p in progs.items() if iso_base(n) in ISO_KVM_HW}
        else:
            path, hw = progs, {}
        exits = sum(p["run_cnt"] for n, p in path.items() if is_userspace_exit_prog(n))
        events = sum(p["run_cnt"] for p in path.values())
        ns = sum(p["run_time_ns"] for p in path.values())
        f.update({"path_progs": sorted(path), "exits": exits, "events": events, "path_ns": ns,
                  "ns_per_exit": ns / exits if exits else None,
                  "ns_per_event": ns / events if events else None,
                  "events_per_exit": events / exits if exits else None,
                  "hw_virt_prog_runs": {n: p["run_cnt"] for n, p in hw.items()},
                  "tinyvmm_exits": sum(w["load"]["exits_total"] for w in ws),
                  "exits_per_s": sum(w["load"]["exits_total"] for w in ws) / secs if secs else None})
        if cfg == "isoscope":
            c = [w.get("iso_vmm_exits_counted") for w in ws]
            f["iso_vmm_exits_counted"] = sum(c) if c and all(x is not None for x in c) else None
    return f


KEYS = {"block": ("ns_per_request", "all_progs_ns_per_request", "reads_per_s", "read_p50_us", "tracer_cpu_pct"),
        "kvm": ("ns_per_exit", "ns_per_event", "exits_per_s", "tracer_cpu_pct")}
PRIMARY = {"block": "ns_per_request", "kvm": "ns_per_exit"}


def stats(vals: list[float]) -> dict:
    v = [x for x in vals if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "spread": None, "values": vals}
    med = statistics.median(v)
    return {"median": med, "min": min(v), "max": max(v),
            "spread": (max(v) - min(v)) / med if med else None, "values": vals}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for phase, cfgs in PHASES.items():
        ph = {}
        for cfg in cfgs:
            ph[cfg] = {k: stats([r["figures"][phase][cfg].get(k) for r in runs]) for k in KEYS[phase]}
            per_prog: dict[str, list] = {}
            for r in runs:
                for n, p in r["figures"][phase][cfg]["progs"].items():
                    per_prog.setdefault(n, []).append(p["ns_per_run"])
            ph[cfg]["ns_per_run"] = {n: stats(v) for n, v in per_prog.items() if any(x is not None for x in v)}
        k = PRIMARY[phase]
        iso, bt = cfgs
        ratios = []
        for r in runs:
            a, b = r["figures"][phase][iso].get(k), r["figures"][phase][bt].get(k)
            ratios.append(a / b if a and b else None)
        ph["ratio"] = stats(ratios)
        out[phase] = ph
    return out


def checks(runs: list[dict], windows: list[dict]) -> tuple[list[str], list[str]]:
    notes, errors = [], []
    for w in windows:
        where = f"run {w['run']} {w['phase']} round {w['round']} {w['config']}"
        for n, p in w["progs"].items():
            if p["run_cnt"] > 0 and p["run_time_ns"] <= 0:
                errors.append(f"{where}: {n} ran {p['run_cnt']} times with run_time_ns 0: bpf_stats were off")
        if w["tracer_output_ok"] is False:
            errors.append(f"{where}: bpftrace printed no {BT_OUTPUT[w['config']]} map on exit")
        if w["foreign_bpf_runs"]:
            notes.append(f"{where}: BPF programs not owned by the tracer ran {w['foreign_bpf_runs']:,} times "
                         f"({', '.join(f'{n} {c:,}' for n, c in w['foreign_bpf'].items())})")
        if w["other_cpu_pct"] > 25:
            notes.append(f"{where}: other processes used ~{w['other_cpu_pct']:.0f}% of a core during the window")
    all_f = {p: {c: figures(p, c, [w for w in windows if w["phase"] == p and w["config"] == c])
                 for c in cfgs} for p, cfgs in PHASES.items()}
    for cfg, f in all_f["block"].items():
        if not f["requests"]:
            errors.append(f"block {cfg}: the completion program never ran (programs: {sorted(f['progs'])})")
            continue
        if cfg == "isoscope" and len(f["path_progs"]) < 3:
            errors.append(f"block isoscope: block programs found: {f['path_progs']} (expected insert, issue, complete)")
        notes.append(f"block {cfg}: {f['requests']:,} completions seen by the program, {f['disk_completions']:,} "
                     f"on the disk (stat), {f['reads']:,} reads by the reader; runs per request "
                     + ", ".join(f"{n} {v:.2f}" for n, v in sorted(f["runs_per_request"].items())))
    for cfg, f in all_f["kvm"].items():
        if not f["exits"]:
            errors.append(f"kvm {cfg}: no kvm_userspace_exit program ran (programs: {sorted(f['progs'])})")
            continue
        notes.append(f"kvm {cfg}: {f['exits']:,} kvm_userspace_exit runs, tinyvmm counted {f['tinyvmm_exits']:,} "
                     f"exits ({100 * (f['exits'] / f['tinyvmm_exits'] - 1):+.2f}%); events per exit "
                     f"{f['events_per_exit']:.2f}"
                     + (f"; kvm_exit/kvm_entry program runs {f['hw_virt_prog_runs']}" if f["hw_virt_prog_runs"] else "")
                     + (f"; isoscope's trace --json counted {f['iso_vmm_exits_counted']:,} vmm exits"
                        if f.get("iso_vmm_exits_counted") is not None else ""))
    return notes, errors


# ---------------------------------------------------------------------------
# report


def fmt(v, s="{:.1f}"):
    return "n/a" if v is None else s.format(v)


def render(meta: dict, summary: dict, runs: list[dict], windows: list[dict], notes: list[str]) -> str:
    L = [f"# Hypervisor and paravirt probe overhead ({meta['date']})", "",
         f"Command: `{meta['command']}`", f"Machine: {meta['machine']}", f"isoscope: {meta['binary']}",
         f"Tracer: `{meta['isoscope_cmd']}`; windows of {meta['duration']:g} s, {meta['rounds']} per "
         f"configuration and phase, {len(runs)} run(s).",
         f"Block load: {meta['block_load']}", f"KVM load: {meta['kvm_load']}"
         + (f" (loads at nice {meta['load_nice']}, process and autogroup)" if meta["load_nice"] else ""), ""]
    for phase, cfgs in PHASES.items():
        k = PRIMARY[phase]
        iso, bt = cfgs
        unit = "request" if phase == "block" else "exit"
        L.append(f"## {phase}: BPF ns per {unit} (per run: windows summed; over runs: median [min, max], spread)")
        L.append("")
        L.append("| configuration | " + " | ".join(KEYS[phase]) + " |")
        L.append("|---|" + "---:|" * len(KEYS[phase]))
        for cfg in cfgs:
            row = []
            for key in KEYS[phase]:
                s = summary[phase][cfg][key]
                row.append(f"{fmt(s['median'])} [{fmt(s['min'])}, {fmt(s['max'])}]")
            L.append(f"| {cfg} | " + " | ".join(row) + " |")
        r = summary[phase]["ratio"]
        L.append("")
        L.append(f"Ratio {iso} / {bt} ({k}): median {fmt(r['median'], '{:.2f}')} [{fmt(r['min'], '{:.2f}')}, "
                 f"{fmt(r['max'], '{:.2f}')}], per run {', '.join(fmt(x, '{:.2f}') for x in r['values'])}")
        L.append("")
        L.append("Per program ns/run, median over runs [min, max]:")
        for cfg in cfgs:
            for n, s in sorted(summary[phase][cfg]["ns_per_run"].items()):
                if cfg == "isoscope" and iso_base(n) not in (ISO_BLK if phase == "block" else ISO_KVM_PATH + ISO_KVM_HW):
                    continue
                L.append(f"- {cfg} `{n}`: {fmt(s['median'])} [{fmt(s['min'])}, {fmt(s['max'])}]")
        L.append("")
    L.append("## Windows")
    L.append("")
    L.append("| run | phase | round | configuration | s | BPF ns per request/exit | path programs ns/run | "
             "tracer CPU % | load CPU % | other CPU % | foreign BPF runs |")
    L.append("|---:|---|---:|---|---:|---:|---|---:|---:|---:|---:|")
    for w in windows:
        f = figures(w["phase"], w["config"], [w])
        per = ", ".join(f"{n} {fmt(f['progs'][n]['ns_per_run'], '{:.0f}')}" for n in f["path_progs"]
                        if f["progs"][n]["run_cnt"])
        L.append(f"| {w['run']} | {w['phase']} | {w['round']} | {w['config']} | {w['seconds']:.1f} | "
                 f"{fmt(f.get(PRIMARY[w['phase']]))} | {per} | {w['tracer_cpu_pct']:.1f} | {w['load_cpu_pct']:.0f} | "
                 f"{w['other_cpu_pct']:.0f} | {w['foreign_bpf_runs']:,} |")
    L.append("")
    b, k = summary["block"], summary["kvm"]
    L.append("## Targets (issue #12; reported, not asserted)")
    bi = b["isoscope"]["ns_per_request"]["median"]
    L.append(f"- block path <= 300 ns per request: isoscope {fmt(bi)} ns (median of runs; "
             f"bpftrace biolatency {fmt(b['bt-biolatency']['ns_per_request']['median'])} ns) -> "
             f"{'met' if bi is not None and bi <= 300 else 'not met'}")
    ki, kb = k["isoscope"]["ns_per_exit"]["median"], k["bt-kvmexit"]["ns_per_exit"]["median"]
    L.append(f"- per-exit cost <= the counting peer's (emulator-only KVM: userspace exits, not kvm_exit): "
             f"isoscope {fmt(ki)} ns vs bt-kvmexit {fmt(kb)} ns, ratio {fmt(k['ratio']['median'], '{:.2f}')} -> "
             f"{'met' if ki is not None and kb is not None and ki <= kb else 'not met'}")
    L.append("- kvm_exit/kvm_entry (hardware or nested virt): not measured on this host")
    L.append("")
    L.append("## Checks")
    L.extend(f"- {n}" for n in notes)
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isoscope", default=str(HERE.parent / "build" / "isoscope"))
    ap.add_argument("--mode", choices=("trace", "agent"), default="trace",
                    help="how isoscope runs: `trace --cgroup / --interval 1 --json` or `agent`")
    ap.add_argument("--workloads", help="directory of directread and tinyvmm (default: next to --isoscope)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per window")
    ap.add_argument("--rounds", type=int, default=2, help="windows per configuration and phase per run")
    ap.add_argument("--runs", type=int, default=1, help="whole runs (both phases); medians are over runs")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between attach and measuring")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="max seconds to wait before each window for no foreign BPF programs and low other CPU "
                         "(after one timeout, never again)")
    ap.add_argument("--quiet-cpu", type=float, default=25.0,
                    help="'quiet' means other processes use less than this %% of one core")
    ap.add_argument("--file-dir", default="/var/tmp", help="disk-backed directory for the read file")
    ap.add_argument("--file-mb", type=int, default=64)
    ap.add_argument("--exits", type=int, default=20000, help="tinyvmm --exits per tinyvmm run")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the load (directread, tinyvmm) at this nice value, process and autogroup "
                         "(-20 shields it from other work on a shared machine; the Python reader is not reniced)")
    ap.add_argument("--phases", default="block,kvm", help="comma-separated subset of block,kvm")
    ap.add_argument("--out", help="result JSON (default bench/results/hv-DATE.json)")
    ap.add_argument("--keep-logs", action="store_true")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("hv_bench: needs root (BPF, bpf_stats)", file=sys.stderr)
        return 1
    a.isoscope = os.path.abspath(a.isoscope)
    wl = Path(a.workloads) if a.workloads else Path(a.isoscope).parent / "workloads"
    a.directread = str(wl / "directread") if os.access(wl / "directread", os.X_OK) else None
    a.tinyvmm = str(wl / "tinyvmm") if os.access(wl / "tinyvmm", os.X_OK) else None
    phases = [p for p in a.phases.split(",") if p]
    for p in phases:
        if p not in PHASES:
            ap.error(f"unknown phase {p}")
    if not os.access(a.isoscope, os.X_OK):
        print(f"hv_bench: {a.isoscope} not found", file=sys.stderr)
        return 1
    if not shutil.which("bpftrace"):
        print("hv_bench: bpftrace not found", file=sys.stderr)
        return 1
    if "kvm" in phases and (not a.tinyvmm or not os.path.exists("/dev/kvm")):
        print(f"hv_bench: the kvm phase needs {wl}/tinyvmm and /dev/kvm", file=sys.stderr)
        return 1
    a.disk = disk_of(a.file_dir)
    bpftool = sb.bpftool_path()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, sb._on_sigterm)
    stats_prev = Path(STATS).read_text().strip()
    tmp = tempfile.mkdtemp(prefix="isoscope-hv-bench-")
    path = None
    stats_fd = None
    windows: list[dict] = []
    failed = False
    try:
        stats_fd = sb.enable_stats_fd()
        Path(STATS).write_text("1")
        if "block" in phases:
            path = make_file(a.file_dir, a.file_mb)
        for run in range(1, a.runs + 1):
            for phase in phases:
                cfgs = PHASES[phase]
                for rnd in range(a.rounds):
                    for cfg in (cfgs if (rnd + run) % 2 == 1 else cfgs[::-1]):
                        w = window(phase, cfg, run, rnd, a, tmp, bpftool, path)
                        key = PRIMARY[phase]
                        f = figures(phase, cfg, [w])
                        print(f"hv_bench:   {key} {fmt(f.get(key))}, tracer CPU {w['tracer_cpu_pct']:.1f}%, "
                              f"load CPU {w['load_cpu_pct']:.0f}%, other CPU {w['other_cpu_pct']:.0f}%, "
                              f"foreign BPF runs {w['foreign_bpf_runs']:,}", file=sys.stderr, flush=True)
                        windows.append(w)
                        time.sleep(a.settle)
    except (sb.Terminated, KeyboardInterrupt) as e:
        print(f"hv_bench: interrupted ({e}); cleaning up", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    except Exception as e:  # noqa: BLE001
        print(f"hv_bench: FAILED: {e}", file=sys.stderr)
        failed = True
        return 1
    finally:
        try:
            Path(STATS).write_text(stats_prev)
        except OSError as e:
            print(f"hv_bench: could not restore {STATS} to {stats_prev}: {e}", file=sys.stderr)
        if stats_fd is not None:
            os.close(stats_fd)
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
        if failed or a.keep_logs:
            print(f"hv_bench: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if set(phases) != set(PHASES):
        print(json.dumps(windows, indent=1))
        return 0
    runs = []
    for run in range(1, a.runs + 1):
        runs.append({"run": run, "figures": {p: {c: figures(p, c, [w for w in windows if w["run"] == run and
                                                                    w["phase"] == p and w["config"] == c])
                                                 for c in cfgs} for p, cfgs in PHASES.items()}})
    summary = summarize(runs)
    notes, errors = checks(runs, windows)
    now = dt.datetime.now()
    u = os.uname()

    def ver(*argv):
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"

    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(shlex.quote(x) for x in sys.argv),
        "machine": f"{u.sysname} {u.release}, {os.cpu_count()} CPUs, {ver('bpftrace', '--version')}, "
                   f"{ver(bpftool, 'version')}",
        "binary": sb.binary_info(a.isoscope),
        "isoscope_cmd": ("isoscope agent --metrics-addr 127.0.0.1:PORT --interval 1 --otlp-listen ''"
                         if a.mode == "agent" else "isoscope trace --cgroup / --interval 1 --json"),
        "duration": a.duration, "rounds": a.rounds, "runs": a.runs,
        "block_load": f"{'directread' if a.directread else 'python O_DIRECT reader'}, 4 KiB random reads, one at "
                      f"a time, {a.file_mb} MiB file in {a.file_dir} (disk {a.disk}, driver "
                      f"{disk_driver(a.disk) if a.disk else '?'}, scheduler "
                      f"{Path(f'/sys/block/{a.disk}/queue/scheduler').read_text().strip() if a.disk else '?'})",
        "kvm_load": f"tinyvmm --exits {a.exits} --delay-us 0 --guest-loops 0, repeated for the window",
        "load_nice": a.nice,
        "bpf_stats_enabled_before": stats_prev,
        "scripts": BT_SCRIPTS,
    }
    checks_out = [f"ERROR: {e}" for e in errors] + notes
    report = render(meta, summary, runs, windows, checks_out)
    out = Path(a.out) if a.out else HERE / "results" / f"hv-{now.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs, "windows": windows,
                               "checks": checks_out}, indent=1) + "\n")
    sys.stdout.write(report)
    print(f"\nhv_bench: written {out}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
