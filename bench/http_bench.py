#!/usr/bin/env python3
"""HTTP request-path overhead of the isoscope agent (issue #4; docs/benchmarks.md, "Horizontal
axis (OTLP) benchmark").

  bench/http_bench.py --isoscope BUILD/isoscope [--node-dir BUILD/otlp-node] [--out-dir DIR]

A real HTTP server under wrk at a paced rate, in rounds alternating agent off / agent on
(off on on off off on ..., so drift hits both alike):

  server  BENCH_HTTP_SERVER=otel (default): tests/otlp/http_server.js, node:http with the
          OpenTelemetry JS SDK (BatchSpanProcessor, OTLP/gRPC exporter) and --work-ms
          BENCH_HTTP_WORK_MS (default 0). Agent on: it exports to the agent's --otlp-listen
          port; agent off: to the same kind of port with nothing listening (the exporter fails
          fast, the SDK drops the batch) -- the application is configured the same in both.
          BENCH_HTTP_SERVER=plain: bench/plain_http_server.js (no OpenTelemetry; only the
          agent's kernel-side cost is on the request path).
  agent   `isoscope agent --metrics-addr 127.0.0.1:M --otlp-listen 127.0.0.1:P` (no
          --otlp-endpoint: spans are enriched, counted and dropped), started for each "on"
          round and stopped after it. M is a free port (not :0) so /metrics can be scraped.
  load    wrk -t2 -cC -dD -s bench/wrk_traceparent.lua: a fresh random traceparent per request,
          paced by the script's delay() (wrk has no rate control; see the script). The delay is
          calibrated once, agent off, so the offered rate is the same in every round; the
          achieved rate is measured per round (requests / wrk's own duration).

Each round starts a fresh server (the OTLP exporter's reconnect back-off must not carry over),
warms it up for BENCH_HTTP_WARMUP s with the same load, then measures BENCH_HTTP_DURATION s.

Per round: wrk's p50/p99/p99.9 latency and achieved req/s; the server's CPU (utime+stime from
/proc/PID/stat) per request; agent on: the agent's utime+stime (and the ns-precise sum of
/proc/PID/task/*/schedstat) over the wrk window plus a 1 s tail for the last export batch, per
request; the agent's BPF run time (kernel.bpf_stats_enabled, programs the agent owns, found
through /proc/PID/fdinfo) per request; the same three measured for BENCH_HTTP_IDLE s with the
server idle just before the window, so the marginal cost per request (loaded minus idle rate,
divided by requests) separates what requests add from the agent's fixed per-second work; spans received and enriched (isoscope_otlp_* counters of
/metrics; every received span goes through the enricher).

Prints a Markdown report and writes it to DIR/http-<date>.md (+ .json). bench/run.sh owns
kernel.bpf_stats_enabled; run alone, this script holds a BPF_ENABLE_STATS fd for the run.

Knobs (environment): BENCH_HTTP_RATE (req/s offered, 2000), BENCH_HTTP_CONNECTIONS (wrk -c,
default rate/100, at least 4), BENCH_HTTP_DURATION (s per measured window, 10),
BENCH_HTTP_WARMUP (s, 2), BENCH_HTTP_ROUNDS (windows per configuration, 3), BENCH_HTTP_SERVER
(otel|plain), BENCH_HTTP_WORK_MS (0), BENCH_HTTP_IDLE (s of agent-on idle measurement before
each on window, 3; 0 skips), BENCH_HTTP_NICE (0; e.g. -20 runs server, wrk and agent
alike at nice -20, process and autogroup, to shield the measurement from other work on a shared
machine), BENCH_KEEP_LOGS=1. Defaults take about 2 minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "otlp"))

import sched_bench as sb  # noqa: E402  (helpers: /proc CPU, bpf_stats, ports, children)

TARGET_P99_INCREASE = 0.02
TARGET_US_PER_REQUEST = 5.0
NICE = 0  # BENCH_HTTP_NICE: server, wrk and agent alike (process and autogroup)


def env_num(name, default, cast=float):
    v = os.environ.get(name, "")
    return cast(v) if v.strip() else default


def metrics(port: int) -> dict[str, float]:
    """isoscope_otlp_* samples of /metrics (labels folded into the key)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("isoscope_otlp_"):
            continue
        m = re.match(r"^(\S+?)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = out.get(m.group(1) + (m.group(2) or ""), 0) + float(m.group(3))
    return out


def msum(m: dict[str, float], name: str) -> float:
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


class Child:
    """A child in its own session that dies with the harness; stop() ends it and its group."""

    def __init__(self, argv, log_path, env=None, stdout=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=stdout or self.log, stderr=self.log, env=env,
                                     start_new_session=True, preexec_fn=sb._load_setup(NICE),
                                     text=True)

    def text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()


def start_agent(isoscope: str, tmp: str, rnd: int):
    mport, oport = sb.free_port(), sb.free_port()
    a = Child([isoscope, "--log-level", "info", "agent", "--metrics-addr", f"127.0.0.1:{mport}",
               "--otlp-listen", f"127.0.0.1:{oport}"],
              f"{tmp}/agent-{rnd}.log")
    deadline = time.monotonic() + 90
    while True:
        if a.proc.poll() is not None:
            raise RuntimeError(f"isoscope agent exited {a.proc.returncode}:\n{a.text()}")
        if "agent running" in a.text():
            try:
                metrics(mport)
                return a, mport, oport
            except OSError:
                pass
        if time.monotonic() > deadline:
            a.stop()
            raise RuntimeError(f"isoscope agent not ready in 90 s:\n{a.text()}")
        time.sleep(0.2)


def start_server(kind: str, node_env: dict, tmp: str, rnd: int, otlp_port: int, work_ms: float):
    if kind == "plain":
        argv = ["node", str(HERE / "plain_http_server.js"), "--port", "0"]
    else:
        argv = ["node", str(ROOT / "tests/otlp/http_server.js"), "--port", "0",
                "--endpoint", f"127.0.0.1:{otlp_port}", "--work-ms", str(work_ms),
                "--service", "isoscope-http-bench"]
    s = Child(argv, f"{tmp}/server-{rnd}.log", env=node_env, stdout=subprocess.PIPE)
    line = s.proc.stdout.readline()
    try:
        info = json.loads(line)
    except ValueError as e:
        s.stop()
        raise RuntimeError(f"server did not start: {line!r}\n{s.text()}") from e
    return s, info["listening"], info["pid"]


def run_wrk(port: int, connections: int, seconds: float, delay_ms: float) -> dict:
    env = dict(os.environ, WRK_DELAY_MS=f"{delay_ms:.3f}")
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
            "-s", str(HERE / "wrk_traceparent.lua"), f"http://127.0.0.1:{port}/work"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60,
                       start_new_session=True, preexec_fn=sb._load_setup(NICE))
    for line in r.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            out = json.loads(line[len("WRK_JSON "):])
            out["rate"] = out["requests"] / (out["duration_us"] / 1e6)
            out["errors"] = sum(out[k] for k in out if k.startswith("errors_"))
            return out
    raise RuntimeError(f"wrk printed no WRK_JSON line (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")


def bpf_ns(owned: set[int]) -> tuple[int, int]:
    st = sb.prog_stats(sb.bpftool_path())
    return (sum(st[i]["run_time_ns"] for i in owned if i in st),
            sum(st[i]["run_cnt"] for i in owned if i in st))


def bpf_progs(owned: set[int]) -> dict[str, tuple[int, int]]:
    st = sb.prog_stats(sb.bpftool_path())
    out: dict[str, tuple[int, int]] = {}
    for i in owned:
        if i in st:
            ns, cnt = out.get(st[i]["name"], (0, 0))
            out[st[i]["name"]] = (ns + st[i]["run_time_ns"], cnt + st[i]["run_cnt"])
    return out


def measure_round(cfg: str, rnd: int, a: argparse.Namespace, node_env: dict, tmp: str,
                  delay_ms: float) -> dict:
    agent = None
    mport = None
    oport = sb.free_port()  # agent off: nothing listens here
    server = None
    try:
        if cfg == "on":
            agent, mport, oport = start_agent(a.isoscope, tmp, rnd)
        server, port, spid = start_server(a.server, node_env, tmp, rnd, oport, a.work_ms)
        run_wrk(port, a.connections, a.warmup, delay_ms)
        owned = sb.owned_prog_ids(agent.proc.pid) if agent else set()
        idle = None
        if agent and a.idle > 0:
            # The agent's cost with the server idle (its per-interval work, the machine's other
            # context switches): subtracted to get the cost the requests add.
            i0 = (sb.proc_cpu_s(agent.proc.pid), sb.proc_schedstat_s(agent.proc.pid), bpf_ns(owned),
                  time.monotonic())
            time.sleep(a.idle)
            i1 = (sb.proc_cpu_s(agent.proc.pid), sb.proc_schedstat_s(agent.proc.pid), bpf_ns(owned),
                  time.monotonic())
            secs = i1[3] - i0[3]
            idle = {"cpu_per_s": (i1[0] - i0[0]) / secs, "sched_per_s": (i1[1] - i0[1]) / secs,
                    "bpf_ns_per_s": (i1[2][0] - i0[2][0]) / secs}
        m0 = metrics(mport) if agent else {}
        ag0 = (sb.proc_cpu_s(agent.proc.pid), sb.proc_schedstat_s(agent.proc.pid)) if agent else None
        b0 = bpf_ns(owned) if agent else (0, 0)
        pr0 = bpf_progs(owned) if agent else {}
        t0 = time.monotonic()
        sv0 = sb.proc_cpu_s(spid)
        sys0 = sb.system_stat()
        w = run_wrk(port, a.connections, a.duration, delay_ms)
        sv1 = sb.proc_cpu_s(spid)
        sys1 = sb.system_stat()
        r = {"config": cfg, "round": rnd, "wrk": w,
             "server_cpu_s": sv1 - sv0,
             "server_us_per_req": (sv1 - sv0) / max(1, w["requests"]) * 1e6,
             "steal_s": sys1["steal"] - sys0["steal"],
             "busy_cores": (sys1["busy"] - sys0["busy"]) / (w["duration_us"] / 1e6)}
        if agent:
            time.sleep(1.0)  # the last export batch (BatchSpanProcessor: 200 ms) reaches the agent
            ag1 = (sb.proc_cpu_s(agent.proc.pid), sb.proc_schedstat_s(agent.proc.pid))
            b1 = bpf_ns(owned)
            pr1 = bpf_progs(owned)
            m1 = metrics(mport)
            span_s = time.monotonic() - t0
            req = max(1, w["requests"])
            r.update({
                "agent_cpu_s": ag1[0] - ag0[0],
                "agent_sched_s": ag1[1] - ag0[1],
                "agent_us_per_req": (ag1[0] - ag0[0]) / req * 1e6,
                "agent_sched_us_per_req": (ag1[1] - ag0[1]) / req * 1e6,
                "agent_bpf_ns": b1[0] - b0[0], "agent_bpf_runs": b1[1] - b0[1],
                "agent_bpf_us_per_req": (b1[0] - b0[0]) / req / 1e3,
                "agent_progs": len(owned),
                "progs": {n: (pr1[n][0] - pr0.get(n, (0, 0))[0], pr1[n][1] - pr0.get(n, (0, 0))[1])
                          for n in pr1},
                "spans_received": msum(m1, "isoscope_otlp_spans_received_total")
                - msum(m0, "isoscope_otlp_spans_received_total"),
                "otlp_requests": msum(m1, "isoscope_otlp_requests_total")
                - msum(m0, "isoscope_otlp_requests_total"),
                "requests_invalid": msum(m1, "isoscope_otlp_requests_invalid_total")
                - msum(m0, "isoscope_otlp_requests_invalid_total"),
            })
            r["spans_per_s"] = r["spans_received"] / (w["duration_us"] / 1e6)
            if idle:
                r["agent_idle_cpu_pct"] = idle["cpu_per_s"] * 100
                r["agent_marginal_us_per_req"] = (r["agent_cpu_s"] - idle["cpu_per_s"] * span_s) / req * 1e6
                r["agent_marginal_sched_us_per_req"] = (r["agent_sched_s"] - idle["sched_per_s"] * span_s) / req * 1e6
                r["agent_marginal_bpf_us_per_req"] = (r["agent_bpf_ns"] - idle["bpf_ns_per_s"] * span_s) / req / 1e3
        return r
    finally:
        if server:
            server.stop()
        if agent:
            agent.stop()


def med(rs, f):
    vals = [f(r) for r in rs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec="{:.1f}"):
    return "n/a" if v is None else spec.format(v)


def render(meta: dict, rounds: list[dict]) -> tuple[str, dict]:
    off = [r for r in rounds if r["config"] == "off"]
    on = [r for r in rounds if r["config"] == "on"]
    s = {}
    for name, rs in (("off", off), ("on", on)):
        s[name] = {
            "rate": med(rs, lambda r: r["wrk"]["rate"]),
            "p50_us": med(rs, lambda r: r["wrk"]["p50_us"]),
            "p99_us": med(rs, lambda r: r["wrk"]["p99_us"]),
            "p999_us": med(rs, lambda r: r["wrk"]["p999_us"]),
            "server_us_per_req": med(rs, lambda r: r["server_us_per_req"]),
            "errors": sum(r["wrk"]["errors"] for r in rs),
        }
    s["on"].update({
        "agent_us_per_req": med(on, lambda r: r["agent_us_per_req"]),
        "agent_sched_us_per_req": med(on, lambda r: r["agent_sched_us_per_req"]),
        "agent_bpf_us_per_req": med(on, lambda r: r["agent_bpf_us_per_req"]),
        "agent_idle_cpu_pct": med(on, lambda r: r.get("agent_idle_cpu_pct")),
        "agent_marginal_us_per_req": med(on, lambda r: r.get("agent_marginal_us_per_req")),
        "agent_marginal_sched_us_per_req": med(on, lambda r: r.get("agent_marginal_sched_us_per_req")),
        "agent_marginal_bpf_us_per_req": med(on, lambda r: r.get("agent_marginal_bpf_us_per_req")),
        "spans_per_s": med(on, lambda r: r["spans_per_s"]),
        "spans_received": sum(r["spans_received"] for r in on),
        "requests": sum(r["wrk"]["requests"] for r in on),
    })
    ratio = lambda k: (s["on"][k] / s["off"][k]) if s["off"][k] else None  # noqa: E731
    s["ratios"] = {k: ratio(k) for k in ("p50_us", "p99_us", "p999_us", "rate", "server_us_per_req")}
    L = []
    L.append(f"# HTTP request-path overhead: agent off vs on ({meta['date']})\n")
    L.append(f"Command: `{meta['command']}`  ")
    L.append(f"Measured: {meta['binary']}  ")
    L.append(f"Server: {meta['server_desc']}; load: wrk 4.1 -t2 -c{meta['connections']}, "
             f"offered ~{meta['rate']:.0f} req/s (delay() pacing, {meta['delay_ms']:.2f} ms per "
             f"connection, calibrated agent off), {meta['duration']:.0f} s windows after "
             f"{meta['warmup']:.0f} s warm-up, {meta['rounds']} windows per configuration, "
             f"order {' '.join(r['config'] for r in rounds)}; server, wrk and agent at nice {meta['nice']}.  ")
    L.append(f"Machine: {meta['uname']}, {os.cpu_count()} CPUs (shared; other work running).\n")
    L.append("| | agent off | agent on | on / off |")
    L.append("|---|---:|---:|---:|")
    L.append(f"| achieved req/s | {fmt(s['off']['rate'], '{:,.0f}')} | {fmt(s['on']['rate'], '{:,.0f}')} | {fmt(s['ratios']['rate'], '{:.3f}')} |")
    for k, label in (("p50_us", "p50 latency (µs)"), ("p99_us", "p99 latency (µs)"),
                     ("p999_us", "p99.9 latency (µs)")):
        L.append(f"| {label} | {fmt(s['off'][k], '{:,.0f}')} | {fmt(s['on'][k], '{:,.0f}')} | {fmt(s['ratios'][k], '{:.3f}')} |")
    L.append(f"| server CPU per request (µs) | {fmt(s['off']['server_us_per_req'])} | {fmt(s['on']['server_us_per_req'])} | {fmt(s['ratios']['server_us_per_req'], '{:.3f}')} |")
    L.append(f"| wrk errors (all windows) | {s['off']['errors']} | {s['on']['errors']} | |")
    L.append("")
    on_s = s["on"]
    L.append("| agent (on windows, median) | value |")
    L.append("|---|---:|")
    L.append(f"| user+system CPU per request, /proc/PID/stat (µs) | {fmt(on_s['agent_us_per_req'], '{:.2f}')} |")
    L.append(f"| same, per 1k requests (ms) | {fmt(on_s['agent_us_per_req'], '{:.2f}')} |")
    L.append(f"| on-CPU per request, sum of task schedstat (µs) | {fmt(on_s['agent_sched_us_per_req'], '{:.2f}')} |")
    L.append(f"| BPF run time per request, agent's programs (µs) | {fmt(on_s['agent_bpf_us_per_req'], '{:.2f}')} |")
    L.append(f"| agent CPU with the server idle (% of a core; per-interval work, other processes' switches) | {fmt(on_s['agent_idle_cpu_pct'], '{:.2f}')} |")
    L.append(f"| marginal user+system CPU per request, idle rate subtracted, /proc/PID/stat (µs) | {fmt(on_s['agent_marginal_us_per_req'], '{:.2f}')} |")
    L.append(f"| marginal on-CPU per request, schedstat (µs) | {fmt(on_s['agent_marginal_sched_us_per_req'], '{:.2f}')} |")
    L.append(f"| marginal BPF run time per request (µs) | {fmt(on_s['agent_marginal_bpf_us_per_req'], '{:.2f}')} |")
    L.append(f"| spans received and enriched per second | {fmt(on_s['spans_per_s'], '{:,.0f}')} |")
    L.append(f"| spans received / requests sent (all on windows) | {on_s['spans_received']:,.0f} / {on_s['requests']:,} |")
    L.append("")
    agg: dict[str, list] = {}
    for r in on:
        for n, (ns, cnt) in r.get("progs", {}).items():
            t = agg.setdefault(n, [0, 0])
            t[0] += ns
            t[1] += cnt
    if agg:
        L.append("Agent BPF programs over the on windows (server load and the machine's other work "
                 "together; wrk and the server share the machine):\n")
        L.append("| program | runs per request | ns/run | µs per request |")
        L.append("|---|---:|---:|---:|")
        for n, (ns, cnt) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
            if cnt:
                L.append(f"| `{n}` | {cnt / max(1, on_s['requests']):.2f} | {ns / cnt:.0f} | "
                         f"{ns / max(1, on_s['requests']) / 1e3:.2f} |")
        L.append("")
    L.append("Per window:\n")
    L.append("| # | config | req/s | p50 µs | p99 µs | p99.9 µs | server µs/req | agent µs/req (stat) | agent µs/req (schedstat) | BPF µs/req | spans/s | busy cores | steal s |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rounds):
        w = r["wrk"]
        L.append(f"| {i} | {r['config']} | {w['rate']:,.0f} | {w['p50_us']:,} | {w['p99_us']:,} | {w['p999_us']:,} | "
                 f"{r['server_us_per_req']:.1f} | {fmt(r.get('agent_us_per_req'), '{:.2f}')} | "
                 f"{fmt(r.get('agent_sched_us_per_req'), '{:.2f}')} | {fmt(r.get('agent_bpf_us_per_req'), '{:.2f}')} | "
                 f"{fmt(r.get('spans_per_s'), '{:,.0f}')} | {r['busy_cores']:.2f} | {r['steal_s']:.2f} |")
    L.append("")
    p99 = s["ratios"]["p99_us"]
    us = on_s["agent_us_per_req"]
    mus = on_s["agent_marginal_us_per_req"]
    L.append("Targets (issue #4):\n")
    L.append(f"- p99 increase ≤ 2 % at 10k req/s: measured {fmt(None if p99 is None else (p99 - 1) * 100, '{:+.1f}')} % "
             f"at {fmt(s['off']['rate'], '{:,.0f}')} req/s — "
             + ("met at this rate" if p99 is not None and p99 - 1 <= TARGET_P99_INCREASE else "not met at this rate")
             + ("" if meta["rate"] >= 10000 else " (10k req/s not offered: see the notes)"))
    L.append(f"- ≤ 5 µs agent CPU per request: {fmt(us, '{:.2f}')} µs user+system "
             + ("(met)" if us is not None and us <= TARGET_US_PER_REQUEST else "(not met)")
             + f"; marginal (idle rate subtracted) {fmt(mus, '{:.2f}')} µs "
             + ("(met)" if mus is not None and mus <= TARGET_US_PER_REQUEST else "(not met)")
             + f"; BPF time per request, marginal, {fmt(on_s['agent_marginal_bpf_us_per_req'], '{:.2f}')} µs (charged to the server's threads, not in the agent's CPU)")
    return "\n".join(L) + "\n", s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isoscope", required=True)
    ap.add_argument("--node-dir", help="where the OTLP test npm packages are installed "
                    "(default: <dir of isoscope>/otlp-node, installed there by tests/otlp/node_env.py)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--command", default="")
    a = ap.parse_args()
    a.rate = env_num("BENCH_HTTP_RATE", 2000.0)
    a.connections = env_num("BENCH_HTTP_CONNECTIONS", max(4, int(round(a.rate / 100))), int)
    a.duration = env_num("BENCH_HTTP_DURATION", 10.0)
    a.warmup = env_num("BENCH_HTTP_WARMUP", 2.0)
    a.rounds = env_num("BENCH_HTTP_ROUNDS", 3, int)
    a.server = os.environ.get("BENCH_HTTP_SERVER", "otel") or "otel"
    a.work_ms = env_num("BENCH_HTTP_WORK_MS", 0.0)
    a.idle = env_num("BENCH_HTTP_IDLE", 3.0)
    global NICE
    NICE = env_num("BENCH_HTTP_NICE", 0, int)
    if a.server not in ("otel", "plain"):
        print("http_bench: BENCH_HTTP_SERVER must be otel or plain", file=sys.stderr)
        return 64
    if os.geteuid() != 0:
        print("http_bench: needs root (the agent loads BPF)", file=sys.stderr)
        return 1
    for tool in ("wrk", "node"):
        if not any(os.access(os.path.join(p, tool), os.X_OK) for p in os.environ["PATH"].split(":")):
            print(f"http_bench: {tool} not found (scripts/install-deps.sh)", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, sb._on_sigterm)
    signal.signal(signal.SIGHUP, sb._on_sigterm)
    stats_fd = sb.enable_stats_fd()

    import node_env  # tests/otlp/node_env.py
    node_dir = a.node_dir or str(Path(os.path.abspath(a.isoscope)).parent / "otlp-node")
    env = node_env.node_env(node_dir)
    if a.server == "otel":
        node_env.ensure(node_dir)

    tmp = tempfile.mkdtemp(prefix="isoscope-http-bench-")
    try:
        # Calibrate the per-connection delay (agent off) so the offered rate is a.rate.
        server, port, _ = start_server(a.server, env, tmp, -1, sb.free_port(), a.work_ms)
        try:
            period_ms = a.connections * 1000.0 / a.rate
            delay = period_ms
            run_wrk(port, a.connections, 2, delay)  # warm-up
            for _ in range(2):
                w = run_wrk(port, a.connections, 3, delay)
                overhead = a.connections * 1000.0 / w["rate"] - delay
                delay = max(0.0, period_ms - max(0.0, overhead))
        finally:
            server.stop()
        print(f"http_bench: {a.connections} connections, delay {delay:.2f} ms per request "
              f"(calibration: {w['rate']:.0f} req/s achieved)", file=sys.stderr)
        order = []
        for i in range(a.rounds):
            order += ["off", "on"] if i % 2 == 0 else ["on", "off"]
        rounds = []
        for i, cfg in enumerate(order):
            r = measure_round(cfg, i, a, env, tmp, delay)
            w = r["wrk"]
            print(f"http_bench: window {i} agent {cfg}: {w['rate']:.0f} req/s p50 {w['p50_us']} µs "
                  f"p99 {w['p99_us']} µs" + (f", agent {r['agent_us_per_req']:.2f} µs/req, "
                                             f"{r['spans_per_s']:.0f} spans/s" if cfg == "on" else ""),
                  file=sys.stderr)
            rounds.append(r)
        date = dt.date.today().isoformat()
        meta = {
            "date": date,
            "command": a.command or " ".join(sys.argv),
            "binary": sb.binary_info(a.isoscope),
            "server_desc": ("tests/otlp/http_server.js (OpenTelemetry JS SDK, OTLP/gRPC export to "
                            f"the agent; --work-ms {a.work_ms:g})" if a.server == "otel"
                            else "bench/plain_http_server.js (node:http, no OpenTelemetry)"),
            "connections": a.connections, "rate": a.rate, "delay_ms": delay,
            "duration": a.duration, "warmup": a.warmup, "rounds": a.rounds,
            "uname": " ".join(os.uname()[2:3]), "nice": NICE,
        }
        report, summary = render(meta, rounds)
        print(report)
        out = Path(a.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        suffix = "" if a.server == "otel" else f"-{a.server}"
        (out / f"http-{date}{suffix}.md").write_text(report)
        (out / f"http-{date}{suffix}.json").write_text(json.dumps(
            {"meta": meta, "summary": summary, "rounds": rounds}, indent=1))
        print(f"http_bench: wrote {out}/http-{date}{suffix}.md", file=sys.stderr)
        return 0
    except sb.Terminated as e:
        print(f"http_bench: stopped ({e})", file=sys.stderr)
        return 143
    finally:
        if stats_fd is not None:
            os.close(stats_fd)
        if os.environ.get("BENCH_KEEP_LOGS") != "1":
            subprocess.run(["rm", "-rf", tmp], check=False)
        else:
            print(f"http_bench: logs in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
