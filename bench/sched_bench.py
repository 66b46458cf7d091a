#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Scheduler-probe overhead benchmark: isoscope agent vs bpftrace runqlat.

Runs the same context-switch-heavy load (stress-ng --switch) under three
configurations, interleaved over several rounds (A B C, C B A, ...) so that
drift on a shared machine hits every configuration alike:

  baseline   no tracer
  isoscope   `isoscope agent` (tp_btf programs on sched_switch/wakeup/...)
  runqlat    bpftrace running bench/runqlat-noinclude.bt

Per configuration it measures, over exactly the stress-ng window:
  - per-program run_time_ns / run_cnt deltas (bpftool prog show -j, with
    kernel.bpf_stats_enabled on) for the programs the tracer process owns
    (found through /proc/PID/fdinfo, so other people's BPF programs on the
    same machine are never counted as ours);
  - the tracer's user-space CPU: utime+stime deltas from /proc/PID/stat;
  - stress-ng throughput (bogo ops/s, real time) from --metrics-brief;
  - sched_switch events/s (the tracer's sched_switch run_cnt; /proc/stat
    `ctxt` for the baseline and as a cross-check).

bench/run.sh owns kernel.bpf_stats_enabled (sets it, restores it on exit);
this script additionally holds a BPF_ENABLE_STATS fd for the whole run so a
concurrent `sysctl kernel.bpf_stats_enabled=0` by someone else cannot switch
the statistics off under us (the kernel refcounts both switches). The fd
closes with the process, so nothing is left behind.

Every child (tracer, stress-ng) runs in its own session with
PR_SET_PDEATHSIG=SIGKILL and is stopped in a `finally`, so an error, Ctrl-C
or SIGTERM leaves no tracer, load or BPF program behind.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

BPFTOOL_CANDIDATES = ["/usr/sbin/bpftool", "/sbin/bpftool", "bpftool"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONFIGS = ["baseline", "isoscope", "runqlat"]
COMPARE = "isoscope-cmp"  # optional: a second isoscope build (--compare), for A/B of BPF changes

# ---------------------------------------------------------------------------
# small system helpers


class Terminated(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    # One signal is enough: ignore repeats (run.sh forwards SIGTERM after a
    # group-wide signal) so they cannot interrupt the cleanup.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(f"signal {signum}")


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
NR_BPF = 321  # x86_64
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0


def _child_setup():
    """Runs in the child between fork and exec: die with the harness."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _load_setup(nice: int):
    """preexec for the load: die with the harness and, when asked, run at
    `nice`. The child is a new session, hence (CONFIG_SCHED_AUTOGROUP) a new
    autogroup whose weight against other sessions is set by
    /proc/self/autogroup, not by the process nice: set both."""
    def setup():
        _child_setup()
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            try:
                with open("/proc/self/autogroup", "w") as fh:
                    fh.write(str(nice))
            except OSError:
                pass
    return setup


def enable_stats_fd() -> int | None:
    """BPF_ENABLE_STATS: refcounted stats switch that lives as long as the fd."""
    if platform.machine() != "x86_64":
        return None
    attr = (ctypes.c_uint8 * 16)()  # union bpf_attr, enable_stats.type = 0
    ctypes.c_uint32.from_buffer(attr, 0).value = BPF_STATS_RUN_TIME
    _libc.syscall.restype = ctypes.c_long
    fd = _libc.syscall(ctypes.c_long(NR_BPF), ctypes.c_int(BPF_ENABLE_STATS), attr, ctypes.c_uint(16))
    return fd if fd >= 0 else None


def bpftool_path() -> str:
    for c in BPFTOOL_CANDIDATES:
        p = shutil.which(c) if "/" not in c else (c if os.access(c, os.X_OK) else None)
        if p:
            return p
    raise SystemExit("bench: bpftool not found (apt-get install bpftool)")


def prog_stats(bpftool: str) -> dict[int, dict]:
    out = subprocess.run([bpftool, "prog", "show", "-j"], check=True, capture_output=True, text=True).stdout
    progs = json.loads(out or "[]")
    return {
        p["id"]: {
            "name": p.get("name", "?"),
            "type": p.get("type", "?"),
            "run_time_ns": int(p.get("run_time_ns", 0)),
            "run_cnt": int(p.get("run_cnt", 0)),
            "bytes_jited": int(p.get("bytes_jited", 0)),
            "bytes_xlated": int(p.get("bytes_xlated", 0)),
        }
        for p in progs
    }


def owned_prog_ids(pid: int) -> set[int]:
    ids: set[int] = set()
    d = f"/proc/{pid}/fdinfo"
    try:
        entries = os.listdir(d)
    except OSError:
        return ids
    for e in entries:
        try:
            with open(f"{d}/{e}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def proc_cpu_s(pid: int) -> float:
    """utime+stime of a whole process (all threads, live and exited), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_schedstat_s(pid: int) -> float:
    """Sum of on-CPU time of the live threads (ns precision), seconds."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                continue
    except OSError:
        pass
    return total / 1e9


def system_stat() -> dict:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                out["busy"] = (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK
                out["steal"] = (v[7] if len(v) > 7 else 0) / CLK_TCK
            elif line.startswith("ctxt "):
                out["ctxt"] = int(line.split()[1])
    return out


def binary_info(path: str) -> str:
    """Which code was measured: binary mtime and its source tree's git state."""
    path = os.path.abspath(path)
    mtime = dt.datetime.fromtimestamp(os.stat(path).st_mtime).strftime("%Y-%m-%d %H:%M:%S")

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", os.path.dirname(path), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    top = git("rev-parse", "--show-toplevel")
    if not top:
        return f"`{path}` built {mtime} (not inside a git checkout)"
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", f"{top}/bpf", f"{top}/agent", f"{top}/collectors",
                f"{top}/exporters", f"{top}/CMakeLists.txt")
    state = f"git {head}" + (" + uncommitted changes under bpf/ agent/ collectors/ exporters/" if dirty else "")
    return f"`{os.path.relpath(path, top)}` built {mtime}; source tree at measurement time: {state}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# tracers


@dataclass
class Tracer:
    name: str
    argv: list[str]
    log_path: str
    proc: subprocess.Popen | None = None
    prog_ids: set[int] = field(default_factory=set)
    stop_signal: int = signal.SIGTERM
    metrics_url: str | None = None
    exit_code: int | None = None

    def start(self, ready_timeout: float) -> None:
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_child_setup)
        # Ready = its readiness signal, and the set of BPF programs it holds has
        # stopped changing for 1 s (the agent serves /metrics before it loads).
        deadline = time.monotonic() + ready_timeout
        stable_since, last = None, set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early (rc={self.proc.returncode}); log:\n{self.tail()}")
            if self._ready():
                ids = owned_prog_ids(self.proc.pid)
                if ids and ids == last:
                    if time.monotonic() - stable_since >= 1.0:
                        self.prog_ids = ids
                        return
                else:
                    stable_since, last = time.monotonic(), ids
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {ready_timeout}s; log:\n{self.tail()}")

    def _ready(self) -> bool:
        if self.metrics_url:
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        with open(self.log_path) as f:
            return "Tracing CPU scheduler" in f.read()

    def scrape(self) -> str:
        if not self.metrics_url:
            return ""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(self.stop_signal)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.exit_code = self.proc.returncode
        _killpg(self.proc.pid)
        self.log.close()
        self.proc = None

    def tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# the load


METRC_RE = re.compile(
    r"\]\s+switch\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")


def run_stress(argv: list[str], workdir: str, yaml_path: str, timeout: float, nice: int) -> dict:
    p = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                         preexec_fn=_load_setup(nice))
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _killpg(p.pid)
    if p.returncode != 0:
        raise RuntimeError(f"stress-ng failed (rc={p.returncode}):\n{out}")
    m = METRC_RE.search(out)
    if not m:
        raise RuntimeError(f"cannot parse stress-ng --metrics-brief output:\n{out}")
    res = {
        "bogo_ops": int(m.group(1)),
        "real_s": float(m.group(2)),
        "ops_per_s": float(m.group(5)),
        "usr_s": float(m.group(3)),
        "sys_s": float(m.group(4)),
        "text": out,
    }
    # The YAML has unrounded times; use them when present.
    try:
        with open(yaml_path) as f:
            y = f.read()
        for key, name in (("real_s", "wall-clock-time"), ("usr_s", "user-time"), ("sys_s", "system-time")):
            mm = re.search(rf"^\s*{name}:\s*([\d.]+)", y, re.M)
            if mm:
                res[key] = float(mm.group(1))
    except OSError:
        pass
    return res


# ---------------------------------------------------------------------------
# waiting for a quiet machine


def wait_quiet(bpftool: str, owned: set[int], tracer_pid: int | None, max_wait: float,
               max_other_pct: float) -> tuple[float, str]:
    """Waits (1 s probes) until no BPF program other than the tracer's runs and
    other processes use < max_other_pct of a core. Returns (seconds waited,
    what was still noisy at the last probe, '' when quiet)."""
    start = time.monotonic()
    why = ""
    while True:
        t0 = time.monotonic()
        s0, p0 = system_stat(), prog_stats(bpftool)
        c0 = proc_cpu_s(tracer_pid) if tracer_pid else 0.0
        time.sleep(1.0)
        s1, p1 = system_stat(), prog_stats(bpftool)
        c1 = proc_cpu_s(tracer_pid) if tracer_pid else 0.0
        dt_s = time.monotonic() - t0
        foreign = {p1[i]["name"] for i in p1 if i not in owned and
                   p1[i]["run_cnt"] - p0.get(i, {"run_cnt": 0})["run_cnt"] > 0}
        other = 100.0 * max(0.0, (s1["busy"] - s0["busy"]) - (c1 - c0)) / dt_s
        why = ", ".join(filter(None, [
            f"foreign BPF programs running ({', '.join(sorted(foreign))})" if foreign else "",
            f"other CPU {other:.0f}% of a core" if other >= max_other_pct else ""]))
        waited = time.monotonic() - start
        if not why or waited >= max_wait:
            return waited, why
        print(f"bench:   waiting for a quiet machine: {why}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# one measured window


@dataclass
class Window:
    config: str
    round: int
    seconds: float
    stress: dict
    progs: dict[int, dict]  # id -> name/type/deltas, tracer-owned only
    foreign_runs: int
    foreign_ns: int
    tracer_cpu_s: float
    tracer_schedstat_s: float
    ctxt: int
    busy_s: float
    steal_s: float
    quiet_wait_s: float = 0.0
    noisy: str = ""
    retries: int = 0

    def other_pct(self) -> float:
        stress_cpu = self.stress["usr_s"] + self.stress["sys_s"]
        return 100.0 * max(0.0, self.busy_s - stress_cpu - self.tracer_cpu_s) / self.seconds


def measure(config: str, rnd: int, tracer: Tracer | None, bpftool: str, stress_argv: list[str],
            workdir: str, yaml_path: str, duration: float, nice: int) -> Window:
    pid = tracer.proc.pid if tracer else None
    if tracer:
        tracer.prog_ids |= owned_prog_ids(pid)
    s0 = system_stat()
    c0 = proc_cpu_s(pid) if pid else 0.0
    q0 = proc_schedstat_s(pid) if pid else 0.0
    p0 = prog_stats(bpftool)
    t0 = time.monotonic()
    stress = run_stress(stress_argv, workdir, yaml_path, timeout=duration + 60, nice=nice)
    t1 = time.monotonic()
    p1 = prog_stats(bpftool)
    c1 = proc_cpu_s(pid) if pid else 0.0
    q1 = proc_schedstat_s(pid) if pid else 0.0
    s1 = system_stat()
    if tracer and not tracer.alive():
        raise RuntimeError(f"{tracer.name} died during the window; log:\n{tracer.tail()}")
    if tracer:
        tracer.prog_ids |= owned_prog_ids(pid)
    owned = tracer.prog_ids if tracer else set()
    progs, frun, fns = {}, 0, 0
    for pid_, after in p1.items():
        before = p0.get(pid_, {"run_cnt": 0, "run_time_ns": 0})
        d_cnt = after["run_cnt"] - before["run_cnt"]
        d_ns = after["run_time_ns"] - before["run_time_ns"]
        if pid_ in owned:
            progs[pid_] = {"name": after["name"], "type": after["type"], "run_cnt": d_cnt, "run_time_ns": d_ns,
                           "bytes_jited": after["bytes_jited"], "bytes_xlated": after["bytes_xlated"]}
        elif d_cnt > 0:
            frun += d_cnt
            fns += d_ns
    missing = owned - set(p1)
    if missing:
        raise RuntimeError(f"{config}: programs {sorted(missing)} vanished during the window")
    return Window(config, rnd, t1 - t0, stress, progs, frun, fns, c1 - c0, q1 - q0,
                  s1["ctxt"] - s0["ctxt"], s1["busy"] - s0["busy"], s1["steal"] - s0["steal"])


# ---------------------------------------------------------------------------
# aggregation and report


def is_switch_prog(name: str) -> bool:
    return "sched_switch" in name


def is_sched_prog(name: str) -> bool:
    """Programs on sched_* tracepoints (isoscope iso_sched_*, bpftrace sched_*)."""
    return name.startswith("sched_") or name.startswith("iso_sched_")


def aggregate(ws: list[Window]) -> dict:
    secs = sum(w.seconds for w in ws)
    ops = sum(w.stress["bogo_ops"] for w in ws)
    real = sum(w.stress["real_s"] for w in ws)
    per_prog: dict[str, dict] = {}
    for w in ws:
        for p in w.progs.values():
            a = per_prog.setdefault(p["name"], {"type": p["type"], "run_cnt": 0, "run_time_ns": 0,
                                                "bytes_xlated": p["bytes_xlated"], "bytes_jited": p["bytes_jited"]})
            a["run_cnt"] += p["run_cnt"]
            a["run_time_ns"] += p["run_time_ns"]
    sw = [v for k, v in per_prog.items() if is_switch_prog(k)]
    sw_cnt = sum(v["run_cnt"] for v in sw)
    sw_ns = sum(v["run_time_ns"] for v in sw)
    all_cnt = sum(v["run_cnt"] for v in per_prog.values())
    all_ns = sum(v["run_time_ns"] for v in per_prog.values())
    user_s = sum(w.tracer_cpu_s for w in ws)
    ctxt = sum(w.ctxt for w in ws)
    stress_cpu = sum(w.stress["usr_s"] + w.stress["sys_s"] for w in ws)
    busy = sum(w.busy_s for w in ws)
    events = sw_cnt if sw_cnt else ctxt
    r = {
        "seconds": secs,
        "rounds": len(ws),
        "ops_per_s": ops / real if real else 0.0,
        "ops_per_s_rounds": [w.stress["ops_per_s"] for w in ws],
        "events_per_s": events / secs,
        "events_source": "sched_switch run_cnt" if sw_cnt else "/proc/stat ctxt",
        "ctxt_per_s": ctxt / secs,
        "sw_cnt": sw_cnt,
        "sw_ns_per_event": sw_ns / sw_cnt if sw_cnt else None,
        "all_ns_per_run": all_ns / all_cnt if all_cnt else None,
        "all_ns_per_switch": all_ns / sw_cnt if sw_cnt else None,
        # Like for like with runqlat: only the scheduler tracepoint programs.
        "sched_ns_per_switch": (sum(v["run_time_ns"] for k, v in per_prog.items() if is_sched_prog(k)) / sw_cnt
                                if sw_cnt else None),
        "bpf_cpu_pct": 100.0 * all_ns / 1e9 / secs,
        "user_cpu_pct": 100.0 * user_s / secs,
        "user_cpu_s": user_s,
        "user_schedstat_pct": 100.0 * sum(w.tracer_schedstat_s for w in ws) / secs,
        "user_ms_per_1m": (user_s * 1e3) / (sw_cnt / 1e6) if sw_cnt else None,
        "total_ns_per_switch": (all_ns + user_s * 1e9) / sw_cnt if sw_cnt else None,
        "total_cpu_pct": 100.0 * (all_ns / 1e9 + user_s) / secs,
        "per_prog": per_prog,
        "foreign_runs": sum(w.foreign_runs for w in ws),
        "foreign_ms": sum(w.foreign_ns for w in ws) / 1e6,
        "other_cpu_pct": 100.0 * max(0.0, busy - stress_cpu - user_s) / secs,
        "steal_pct": 100.0 * sum(w.steal_s for w in ws) / secs,
    }
    # User CPU normalised to 1M sched_switch events/s, as a % of one core.
    r["user_pct_at_1m"] = r["user_ms_per_1m"] / 10.0 if r["user_ms_per_1m"] is not None else None
    return r


def f(v, fmt="{:.1f}", none="n/a") -> str:
    return none if v is None else fmt.format(v)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def render(meta: dict, agg: dict[str, dict], windows: list[Window], checks: list[str]) -> str:
    base = agg["baseline"]
    L: list[str] = []
    L.append(f"# Scheduler probe overhead: isoscope vs bpftrace runqlat ({meta['date']})")
    L.append("")
    L.append(f"- Command: `{meta['command']}`")
    L.append(f"- Load (same for every configuration): `{meta['stress']}`")
    L.append(f"- isoscope: `{meta['agent']}`")
    L.append(f"- runqlat: `{meta['bpftrace']}`")
    L.append(f"- isoscope binary: {meta['binary']}")
    L.append(f"- Machine: {meta['machine']}")
    L.append(f"- Rounds: {meta['rounds']} x {meta['duration']:g} s per configuration, order "
             f"{meta['order']}; kernel.bpf_stats_enabled=1 during the run "
             f"(was {meta['stats_prev']}, restored afterwards)")
    L.append("")
    L.append("| configuration | sched_switch events/s | BPF ns/event sched_switch | BPF ns/run all progs (weighted) "
             "| BPF ns per switch, all progs | BPF CPU % of one core | user-space CPU % of one core "
             "| user CPU per 1M events (ms) | stress-ng ops/s | ops/s vs baseline |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in meta["configs"]:
        a = agg[c]
        ev = f"{a['events_per_s']:,.0f}" + (" (ctxt)" if a["events_source"] != "sched_switch run_cnt" else "")
        L.append("| " + " | ".join([
            c, ev,
            f(a["sw_ns_per_event"]), f(a["all_ns_per_run"]), f(a["all_ns_per_switch"]),
            f(a["bpf_cpu_pct"], "{:.2f}") if c != "baseline" else "0",
            f(a["user_cpu_pct"], "{:.2f}") if c != "baseline" else "-",
            f(a["user_ms_per_1m"], "{:.2f}") if c != "baseline" else "-",
            f"{a['ops_per_s']:,.0f}",
            f"{a['ops_per_s'] / base['ops_per_s']:.3f}",
        ]) + " |")
    L.append("")
    iso, bt = agg["isoscope"], agg["runqlat"]

    def ratio(x, y):
        return None if x is None or y in (None, 0) else x / y

    L.append("## Ratios isoscope / runqlat")
    L.append("")
    L.append("| metric | isoscope | runqlat | ratio |")
    L.append("|---|---:|---:|---:|")
    rows = [
        ("BPF ns/event, sched_switch program", iso["sw_ns_per_event"], bt["sw_ns_per_event"], "{:.1f}"),
        ("BPF ns/run, all programs weighted", iso["all_ns_per_run"], bt["all_ns_per_run"], "{:.1f}"),
        ("BPF ns per sched_switch, all programs", iso["all_ns_per_switch"], bt["all_ns_per_switch"], "{:.1f}"),
        ("BPF ns per sched_switch, sched_* programs only", iso["sched_ns_per_switch"], bt["sched_ns_per_switch"],
         "{:.1f}"),
        ("total CPU (BPF + user) ns per sched_switch", iso["total_ns_per_switch"], bt["total_ns_per_switch"], "{:.1f}"),
        ("total CPU (BPF + user), % of one core", iso["total_cpu_pct"], bt["total_cpu_pct"], "{:.2f}"),
        ("stress-ng ops/s vs baseline", iso["ops_per_s"] / base["ops_per_s"],
         bt["ops_per_s"] / base["ops_per_s"], "{:.3f}"),
    ]
    for name, x, y, fm in rows:
        L.append(f"| {name} | {f(x, fm)} | {f(y, fm)} | {f(ratio(x, y), '{:.2f}')} |")
    L.append("")
    if COMPARE in agg:
        cmp_ = agg[COMPARE]
        L.append(f"## A/B: {COMPARE} / isoscope")
        L.append("")
        L.append(f"{COMPARE}: {meta['compare']}")
        L.append("")
        L.append(f"| metric | isoscope | {COMPARE} | ratio |")
        L.append("|---|---:|---:|---:|")
        for name, key, fm in (("BPF ns/event, sched_switch program", "sw_ns_per_event", "{:.1f}"),
                              ("BPF ns per sched_switch, all programs", "all_ns_per_switch", "{:.1f}"),
                              ("BPF ns per sched_switch, sched_* programs only", "sched_ns_per_switch", "{:.1f}"),
                              ("total CPU (BPF + user) ns per sched_switch", "total_ns_per_switch", "{:.1f}"),
                              ("user CPU per 1M events (ms)", "user_ms_per_1m", "{:.2f}")):
            L.append(f"| {name} | {f(iso[key], fm)} | {f(cmp_[key], fm)} | {f(ratio(cmp_[key], iso[key]), '{:.2f}')} |")
        ti, tc = iso["ops_per_s"] / base["ops_per_s"], cmp_["ops_per_s"] / base["ops_per_s"]
        L.append(f"| stress-ng ops/s vs baseline | {ti:.3f} | {tc:.3f} | {tc / ti:.2f} |")
        L.append("")
    L.append("## Targets (from the issue)")
    L.append("")
    sw = iso["sw_ns_per_event"]
    L.append(f"- sched_switch path <= 150 ns/event average: {f(sw)} ns -> {verdict(sw is not None and sw <= 150)}"
             + (f" ({sw / 150:.2f}x the target, {sw - 150:+.0f} ns)" if sw is not None and sw > 150 else ""))
    u = iso["user_pct_at_1m"]
    L.append(f"- agent user space <= 1% of one core at 1M events/s: {f(u, '{:.2f}')}% "
             f"({f(iso['user_ms_per_1m'], '{:.2f}')} ms per 1M events, measured at "
             f"{iso['events_per_s'] / 1e6:.2f}M events/s: {iso['user_cpu_pct']:.2f}%) -> "
             f"{verdict(u is not None and u <= 1.0)}")
    tr = ratio(iso["total_ns_per_switch"], bt["total_ns_per_switch"])
    br = ratio(iso["all_ns_per_switch"], bt["all_ns_per_switch"])
    thr_i, thr_b = iso["ops_per_s"] / base["ops_per_s"], bt["ops_per_s"] / base["ops_per_s"]
    sr = ratio(iso["sched_ns_per_switch"], bt["sched_ns_per_switch"])
    L.append(f"- cheaper than runqlat while collecting more (whole agent: every program it loads): BPF ns per "
             f"switch ratio {f(br, '{:.2f}')}, total CPU per switch ratio {f(tr, '{:.2f}')}, throughput "
             f"{thr_i:.3f} vs {thr_b:.3f} of baseline -> {verdict(tr is not None and tr < 1.0 and thr_i >= thr_b)}")
    L.append(f"  - scheduler programs only (like for like with runqlat): BPF ns per switch ratio {f(sr, '{:.2f}')} -> "
             f"{verdict(sr is not None and sr < 1.0)}")
    L.append("")
    L.append("## Per program (summed over rounds)")
    L.append("")
    L.append("| configuration | program | type | run_cnt | run_time_ns | ns/run | xlated / jited bytes |")
    L.append("|---|---|---|---:|---:|---:|---:|")
    for c in [x for x in meta["configs"] if x != "baseline"]:
        for name, v in sorted(agg[c]["per_prog"].items(), key=lambda kv: -kv[1]["run_cnt"]):
            L.append(f"| {c} | {name} | {v['type']} | {v['run_cnt']:,} | {v['run_time_ns']:,} | "
                     f"{f(v['run_time_ns'] / v['run_cnt'] if v['run_cnt'] else None)} | "
                     f"{v['bytes_xlated']:,} / {v['bytes_jited']:,} |")
    L.append("")
    L.append("## Windows and noise")
    L.append("")
    L.append("| round | configuration | window s | stress-ng ops/s | ctxt/s | tracer switch runs/s "
             "| tracer CPU % (stat) | tracer CPU % (schedstat) | other CPU % (approx) | steal % "
             "| foreign BPF runs | waited for quiet s | noisy windows redone |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in windows:
        sw_runs = sum(p["run_cnt"] for p in w.progs.values() if is_switch_prog(p["name"]))
        stress_cpu = w.stress["usr_s"] + w.stress["sys_s"]
        other = max(0.0, w.busy_s - stress_cpu - w.tracer_cpu_s)
        L.append(f"| {w.round} | {w.config} | {w.seconds:.2f} | {w.stress['ops_per_s']:,.0f} | "
                 f"{w.ctxt / w.seconds:,.0f} | {sw_runs / w.seconds:,.0f} | "
                 f"{100 * w.tracer_cpu_s / w.seconds:.2f} | {100 * w.tracer_schedstat_s / w.seconds:.2f} | "
                 f"{100 * other / w.seconds:.1f} | {100 * w.steal_s / w.seconds:.1f} | {w.foreign_runs:,} | "
                 f"{w.quiet_wait_s:.0f}{' (not quiet: ' + w.noisy + ')' if w.noisy else ''} | {w.retries} |")
    L.append("")
    L.append("## Checks")
    L.append("")
    L.extend(f"- {c}" for c in checks)
    L.append("")
    L.append("Notes: BPF numbers come from kernel.bpf_stats (run_time_ns/run_cnt), which time only the "
             "program body; the attach mechanism's own cost (the perf tracepoint buffer that bpftrace's "
             "`tracepoint:` programs need, the tp_btf trampoline-free call for isoscope) is not in them but "
             "is in the stress-ng throughput. bpf_stats adds two clock reads per program run to every "
             "traced configuration. User CPU is utime+stime of the tracer process (/proc/PID/stat); BPF "
             "time is charged to the interrupted task (mostly stress-ng), not to the tracer. 'other CPU' = "
             "machine busy time minus stress-ng and tracer CPU: anything else running on the box.")
    return "\n".join(L) + "\n"


def sanity(agg: dict[str, dict], windows: list[Window], exit_codes: dict[str, list]) -> tuple[list[str], list[str]]:
    """Returns (notes, errors)."""
    notes, errors = [], []
    iso = agg["isoscope"]["per_prog"]
    bt = agg["runqlat"]["per_prog"]
    sw_iso = [n for n in iso if n in ("iso_sched_switch_btf", "iso_sched_switch_raw")]
    if not sw_iso:
        errors.append(f"isoscope: no iso_sched_switch_* program among the agent's programs ({sorted(iso)})")
    elif agg["isoscope"]["sw_cnt"] <= 0:
        errors.append("isoscope: sched_switch program never ran (run_cnt delta 0)")
    else:
        notes.append(f"isoscope programs found by owner pid: {', '.join(sorted(iso))}; "
                     f"sched_switch program {sw_iso[0]} ran {agg['isoscope']['sw_cnt']:,} times")
    bt_sw = [n for n, v in bt.items() if is_switch_prog(n)]
    bt_types = sorted({v["type"] for v in bt.values()})
    if not bt_sw or agg["runqlat"]["sw_cnt"] <= 0:
        errors.append(f"runqlat: no running sched_switch program among bpftrace's programs ({sorted(bt)})")
    else:
        notes.append(f"bpftrace programs found by owner pid: {', '.join(sorted(bt))} (type {', '.join(bt_types)}); "
                     f"sched_switch ran {agg['runqlat']['sw_cnt']:,} times")
    for c in [x for x in agg if x != "baseline"]:
        a = agg[c]
        for name, v in a["per_prog"].items():
            if v["run_cnt"] > 0 and v["run_time_ns"] <= 0:
                errors.append(f"{c}: {name} ran {v['run_cnt']} times with run_time_ns 0: bpf_stats were off")
        if a["sw_cnt"]:
            dev = a["sw_cnt"] / (a["ctxt_per_s"] * a["seconds"]) - 1
            msg = f"{c}: sched_switch runs vs /proc/stat ctxt: {100 * dev:+.1f}%"
            (notes if abs(dev) < 0.10 else errors).append(msg)
        rcs = exit_codes.get(c, [])
        if any(rc not in (0,) for rc in rcs):
            notes.append(f"{c}: tracer exit codes {rcs} (expected 0)")
    for c in agg:
        a = agg[c]
        ops = a["ops_per_s_rounds"]
        spread = (max(ops) - min(ops)) / (sum(ops) / len(ops)) if ops else 0
        notes.append(f"{c}: stress-ng ops/s per round {', '.join(f'{x:,.0f}' for x in ops)} "
                     f"(spread {100 * spread:.1f}%)")
        if a["other_cpu_pct"] > 15:
            notes.append(f"WARNING {c}: other processes used ~{a['other_cpu_pct']:.0f}% of a core during "
                         f"the windows; throughput numbers are disturbed")
        if a["foreign_runs"]:
            notes.append(f"WARNING {c}: BPF programs not owned by the tracer ran {a['foreign_runs']:,} times "
                         f"({a['foreign_ms']:.1f} ms) during the windows (someone else's tracer is loaded)")
    return notes, errors


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isoscope", required=True, help="path to the isoscope binary")
    ap.add_argument("--bt-script", required=True)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per window")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="stress-ng --switch N")
    ap.add_argument("--interval", type=float, default=1.0, help="agent --interval")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between attach and measuring")
    ap.add_argument("--quiet-wait", type=float, default=15.0,
                    help="max seconds to wait before each window for no foreign BPF programs and low other CPU")
    ap.add_argument("--quiet-cpu", type=float, default=15.0,
                    help="'quiet' means other processes use less than this %% of one core")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the load at this nice value (e.g. -20 to shield it from other work on a shared box)")
    ap.add_argument("--retries", type=int, default=1,
                    help="measure a window again when other processes used more than --quiet-cpu during it")
    ap.add_argument("--compare", help="a second isoscope binary, measured as an extra configuration (A/B)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--command", default=" ".join(shlex.quote(a) for a in sys.argv))
    ap.add_argument("--stats-prev", default="?")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    bpftool = bpftool_path()
    for tool in ("stress-ng", "bpftrace"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found")
    stats_fd = enable_stats_fd()
    with open("/proc/sys/kernel/bpf_stats_enabled") as fh:
        if fh.read().strip() != "1" and stats_fd is None:
            raise SystemExit("bench: kernel.bpf_stats_enabled is not 1 (run through bench/run.sh)")

    tmp = tempfile.mkdtemp(prefix="isoscope-bench-")
    yaml_path = os.path.join(tmp, "stress.yaml")
    stress_argv = ["stress-ng", "--switch", str(args.workers), "--switch-method", "pipe",
                   "--timeout", f"{args.duration:g}s", "--metrics-brief", "--yaml", yaml_path]
    port = free_port()
    agent_argv = [os.path.abspath(args.isoscope), "agent", "--metrics-addr", f"127.0.0.1:{port}",
                  "--interval", f"{args.interval:g}"]
    bt_argv = [shutil.which("bpftrace"), os.path.abspath(args.bt_script)]

    configs = CONFIGS + ([COMPARE] if args.compare else [])
    cmp_argv = ([os.path.abspath(args.compare)] + agent_argv[1:]) if args.compare else []
    order: list[str] = []
    for r in range(args.rounds):
        order += configs if r % 2 == 0 else list(reversed(configs))

    windows: list[Window] = []
    exit_codes: dict[str, list] = {c: [] for c in configs}
    tracer: Tracer | None = None
    failed = False
    try:
        for i, c in enumerate(order):
            rnd = i // len(configs) + 1
            tracer = None
            if c in ("isoscope", COMPARE):
                tracer = Tracer(f"{c} agent", agent_argv if c == "isoscope" else cmp_argv,
                                os.path.join(tmp, f"agent-{i}.log"),
                                stop_signal=signal.SIGTERM, metrics_url=f"http://127.0.0.1:{port}/metrics")
            elif c == "runqlat":
                tracer = Tracer("bpftrace runqlat", bt_argv, os.path.join(tmp, f"bpftrace-{i}.log"),
                                stop_signal=signal.SIGINT)
            print(f"bench: round {rnd}: {c} ...", file=sys.stderr, flush=True)
            if tracer:
                tracer.start(ready_timeout=60)
            time.sleep(args.settle)
            waited, noisy = wait_quiet(bpftool, tracer.prog_ids if tracer else set(),
                                       tracer.proc.pid if tracer else None, args.quiet_wait,
                                       args.quiet_cpu)
            if noisy:
                print(f"bench:   measuring anyway after {waited:.0f}s: {noisy}", file=sys.stderr, flush=True)
                if waited >= args.quiet_wait and args.quiet_wait > 0:
                    print("bench:   the machine stays busy; not waiting for it again (noisy windows are "
                          "measured again, see --retries)", file=sys.stderr, flush=True)
                    args.quiet_wait = 0.0
            w = measure(c, rnd, tracer, bpftool, stress_argv, tmp, yaml_path, args.duration, args.nice)
            tries = 0
            while w.other_pct() > args.quiet_cpu and tries < args.retries:
                tries += 1
                print(f"bench:   other processes used {w.other_pct():.0f}% of a core during the window; "
                      f"measuring it again ({tries}/{args.retries})", file=sys.stderr, flush=True)
                w = measure(c, rnd, tracer, bpftool, stress_argv, tmp, yaml_path, args.duration, args.nice)
            w.retries = tries
            w.quiet_wait_s, w.noisy = waited, noisy
            windows.append(w)
            if tracer:
                if c in ("isoscope", COMPARE):
                    body = tracer.scrape()
                    if "isoscope_cause_seconds_total" not in body:
                        raise RuntimeError("agent /metrics has no isoscope_cause_seconds_total")
                tracer.stop()
                exit_codes[c].append(tracer.exit_code)
                if c == "runqlat" and "@usecs" not in open(tracer.log_path).read():
                    raise RuntimeError(f"bpftrace printed no @usecs histogram; log:\n{tracer.tail()}")
                tracer = None
            time.sleep(args.settle)
    except (Terminated, KeyboardInterrupt) as e:
        print(f"bench: interrupted ({e}); cleaning up", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        print(f"bench: FAILED: {e}", file=sys.stderr)
        failed = True
        return 1
    finally:
        if tracer:
            tracer.stop(timeout=5)
        if stats_fd is not None:
            os.close(stats_fd)
        if failed or args.keep_logs:
            print(f"bench: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    agg = {c: aggregate([w for w in windows if w.config == c]) for c in configs}
    notes, errors = sanity(agg, windows, exit_codes)
    now = dt.datetime.now()
    uname = os.uname()
    meta = {
        "date": now.strftime("%Y-%m-%d %H:%M:%S"),
        "command": args.command,
        "stress": " ".join(shlex.quote(a) for a in stress_argv[:-2])
                  + (f" (process and autogroup nice {args.nice})" if args.nice else ""),
        "agent": " ".join(agent_argv).replace(str(port), "PORT"),
        "bpftrace": "bpftrace " + os.path.relpath(args.bt_script),
        "machine": f"{uname.sysname} {uname.release}, {os.cpu_count()} CPUs, "
                   f"{subprocess.run(['stress-ng', '--version'], capture_output=True, text=True).stdout.strip()}, "
                   f"{subprocess.run(['bpftrace', '--version'], capture_output=True, text=True).stdout.strip()}",
        "binary": binary_info(args.isoscope),
        "configs": configs,
        "compare": binary_info(args.compare) if args.compare else "",
        "rounds": args.rounds,
        "duration": args.duration,
        "order": ", ".join(order),
        "stats_prev": args.stats_prev,
    }
    checks = [f"ERROR: {e}" for e in errors] + notes
    md = render(meta, agg, windows, checks)
    os.makedirs(args.out_dir, exist_ok=True)
    out = os.path.join(args.out_dir, f"sched-{now.strftime('%Y-%m-%d')}.md")
    with open(out, "w") as fh:
        fh.write(md)
    with open(out[:-3] + ".json", "w") as fh:
        json.dump({"meta": meta, "aggregate": agg, "checks": checks}, fh, indent=1, default=str)
    sys.stdout.write(md)
    print(f"\nbench: written {out} (and .json)", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
