#!/usr/bin/env python3
"""Network-probe overhead (issue #5): iperf3 over a veth pair between two network namespaces
created here, with nothing traced, with the isoscope agent, and with two bpftrace peers, each
alone, interleaved over rounds (A B C D, D C B A, ...).

  bench/net_bench.py --isoscope BUILD/isoscope [--out-dir DIR]

  baseline      iperf3 alone
  isoscope      `isoscope agent --metrics-addr 127.0.0.1:M --otlp-listen ""` (everything it loads)
  bt-tcpretrans bpftrace, tcpretrans's logic on tracepoint:tcp:tcp_retransmit_skb (no header
                include: this kernel has no headers)
  bt-tcpprobe   bpftrace, a histogram of srtt (µs) from tracepoint:tcp:tcp_probe (one event per
                received segment on an established socket)
  bt-hopcount   bpftrace, a per-CPU count on each of the two hooks a veth hop passes
                (net_dev_start_xmit, netif_receive_skb): the floor of any per-hop BPF program
                on this box (program entry, bpf_stats' own clock reads, one map update)

Per window (BENCH_NET_DURATION s, default 5): iperf3's received bits/s and retransmits (-J);
packets/s on the client's veth (/sys/class/net/*/statistics, rx+tx, read inside the netns);
the tracer's user+system CPU (/proc/PID/stat) as % of one core; with kernel.bpf_stats_enabled,
run_time_ns/run_cnt deltas of the programs the tracer owns (/proc/PID/fdinfo): for isoscope
also of its network programs alone (names starting iso_net or iso_tcp: bpf/network.bpf.c; when the
agent loads none, the report says so), so ns/event per program and BPF ns per packet.

The namespaces are removed on every exit path. Needs root, iperf3, ip, bpftrace, bpftool.
Knobs: BENCH_NET_DURATION (5), BENCH_NET_ROUNDS (2), BENCH_NET_STREAMS (iperf3 -P, 1).
--udp-len N sends N-byte UDP datagrams at full rate instead (one packet per datagram: the packet
rate the issue's 200k packets/s target is about; results in net-udp-DATE.*).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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

TCPRETRANS_BT = r"""
// tcpretrans logic (bpftrace tools/tcpretrans.bt) without its header include.
tracepoint:tcp:tcp_retransmit_skb
{
  if (args->family == 10) {
    printf("%-8s %-7d %-39s %-6d %-39s %-6d %d\n", strftime("%H:%M:%S", nsecs), pid,
           ntop(args->saddr_v6), args->sport, ntop(args->daddr_v6), args->dport, args->state);
  } else {
    printf("%-8s %-7d %-39s %-6d %-39s %-6d %d\n", strftime("%H:%M:%S", nsecs), pid,
           ntop(args->saddr), args->sport, ntop(args->daddr), args->dport, args->state);
  }
  @retrans = count();
}
"""
TCPPROBE_BT = r"""
tracepoint:tcp:tcp_probe
{
  @srtt_us = hist(args->srtt);
}
"""
HOPCOUNT_BT = r"""
tracepoint:net:net_dev_start_xmit { @xmit = count(); }
tracepoint:net:netif_receive_skb { @receive = count(); }
"""
BT_SCRIPTS = {"bt-tcpretrans": TCPRETRANS_BT, "bt-tcpprobe": TCPPROBE_BT, "bt-hopcount": HOPCOUNT_BT}
CONFIGS = ["baseline", "isoscope", "bt-tcpretrans", "bt-tcpprobe", "bt-hopcount"]


def sh(*argv, check=True, ns=None, **kw):
    if ns:
        argv = ("ip", "netns", "exec", ns) + argv
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


class Netns:
    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.a, self.b = f"isob-a{tag}", f"isob-b{tag}"
        self.va, self.vb = f"isova{tag}", f"isovb{tag}"
        self.ip_b = "10.231.77.2"

    def __enter__(self):
        try:
            sh("ip", "netns", "add", self.a)
            sh("ip", "netns", "add", self.b)
            sh("ip", "link", "add", self.va, "netns", self.a, "type", "veth", "peer", "name",
               self.vb, "netns", self.b)
            sh("ip", "addr", "add", "10.231.77.1/24", "dev", self.va, ns=self.a)
            sh("ip", "addr", "add", f"{self.ip_b}/24", "dev", self.vb, ns=self.b)
            for ns, dev in ((self.a, self.va), (self.b, self.vb)):
                sh("ip", "link", "set", "lo", "up", ns=ns)
                sh("ip", "link", "set", dev, "up", ns=ns)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)

    def packets(self) -> int:
        r = sh("cat", f"/sys/class/net/{self.va}/statistics/rx_packets",
               f"/sys/class/net/{self.va}/statistics/tx_packets", ns=self.a)
        return sum(int(x) for x in r.stdout.split())


class Tracer:
    def __init__(self, name, argv, log):
        self.name = name
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, text=True,
                                     start_new_session=True, preexec_fn=sb._child_setup)

    def text(self):
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self, marker, timeout=90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.text()}")
            if marker in self.text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.text()}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()


def start_tracer(cfg, a, tmp, rnd) -> Tracer | None:
    if cfg == "baseline":
        return None
    if cfg == "isoscope":
        t = Tracer(cfg, [a.isoscope, "--log-level", "info", "agent", "--metrics-addr",
                         f"127.0.0.1:{sb.free_port()}", "--otlp-listen", ""], f"{tmp}/{cfg}-{rnd}.log")
        t.wait_ready("agent running")
        time.sleep(1.0)
        return t
    script = f"{tmp}/{cfg}.bt"
    Path(script).write_text(BT_SCRIPTS[cfg])
    t = Tracer(cfg, ["bpftrace", script], f"{tmp}/{cfg}-{rnd}.log")
    t.wait_ready("Attaching")
    time.sleep(1.0)
    return t


def window(cfg, rnd, a, net, tmp, bpftool) -> dict:
    tracer = start_tracer(cfg, a, tmp, rnd)
    try:
        owned = sb.owned_prog_ids(tracer.proc.pid) if tracer else set()
        p0, c0 = sb.prog_stats(bpftool), (sb.proc_cpu_s(tracer.proc.pid) if tracer else 0)
        k0, t0 = net.packets(), time.monotonic()
        udp = ["-u", "-b", "0", "-l", str(a.udp_len)] if a.udp_len else []
        r = sh("iperf3", "-c", net.ip_b, "-t", str(a.duration), "-P", str(a.streams), "-J", *udp,
               ns=net.a, timeout=a.duration + 60)
        k1, t1 = net.packets(), time.monotonic()
        p1, c1 = sb.prog_stats(bpftool), (sb.proc_cpu_s(tracer.proc.pid) if tracer else 0)
    finally:
        if tracer:
            tracer.stop()
    j = json.loads(r.stdout)
    secs = t1 - t0
    progs = {}
    for pid_ in owned:
        if pid_ in p0 and pid_ in p1:
            progs[p1[pid_]["name"]] = {
                "run_time_ns": p1[pid_]["run_time_ns"] - p0[pid_]["run_time_ns"],
                "run_cnt": p1[pid_]["run_cnt"] - p0[pid_]["run_cnt"]}
    pkts = k1 - k0
    bpf_ns = sum(p["run_time_ns"] for p in progs.values())
    net_progs = {n: p for n, p in progs.items() if n.startswith(("iso_net", "iso_tcp"))}
    net_ns = sum(p["run_time_ns"] for p in net_progs.values())
    return {
        "config": cfg, "round": rnd, "seconds": secs,
        # UDP: what the server received (sent minus lost).
        "gbit_s": (j["end"]["sum"]["bits_per_second"] * (1 - j["end"]["sum"].get("lost_percent", 0) / 100)
                   if a.udp_len else j["end"]["sum_received"]["bits_per_second"]) / 1e9,
        "retransmits": 0 if a.udp_len else j["end"]["sum_sent"].get("retransmits", 0),
        "pkts_per_s": pkts / secs,
        "tracer_cpu_pct": (c1 - c0) / secs * 100,
        "bpf_ns": bpf_ns, "bpf_pct": bpf_ns / secs / 1e7,
        "bpf_ns_per_pkt": bpf_ns / pkts if pkts else None,
        "net_progs": net_progs, "net_bpf_ns_per_pkt": net_ns / pkts if pkts and net_progs else None,
        "progs": progs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isoscope", required=True)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--udp-len", type=int, default=0,
                    help="UDP datagrams of this many bytes at full rate (iperf3 -u -b 0 -l N) "
                         "instead of TCP: one packet per datagram, the highest packet rate")
    a = ap.parse_args()
    a.duration = int(os.environ.get("BENCH_NET_DURATION") or 5)
    a.rounds = int(os.environ.get("BENCH_NET_ROUNDS") or 2)
    a.streams = int(os.environ.get("BENCH_NET_STREAMS") or 1)
    for t in ("iperf3", "bpftrace", "ip"):
        if sh("sh", "-c", f"command -v {t}", check=False).returncode != 0:
            print(f"net_bench: {t} not found (scripts/install-deps.sh)", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, sb._on_sigterm)
    signal.signal(signal.SIGHUP, sb._on_sigterm)
    bpftool = sb.bpftool_path()
    stats_path = "/proc/sys/kernel/bpf_stats_enabled"
    stats_prev = Path(stats_path).read_text().strip()
    stats_fd = sb.enable_stats_fd()
    Path(stats_path).write_text("1")
    tmp = tempfile.mkdtemp(prefix="isoscope-net-bench-")
    server = None
    try:
        with Netns() as net:
            server = subprocess.Popen(["ip", "netns", "exec", net.b, "iperf3", "-s"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, preexec_fn=sb._child_setup)
            time.sleep(1.0)
            cfgs = CONFIGS
            order = []
            for i in range(a.rounds):
                order += cfgs if i % 2 == 0 else cfgs[::-1]
            ws = []
            for i, cfg in enumerate(order):
                w = window(cfg, i, a, net, tmp, bpftool)
                print(f"net_bench: {i} {cfg}: {w['gbit_s']:.2f} Gbit/s {w['pkts_per_s']:.0f} pkt/s "
                      f"tracer CPU {w['tracer_cpu_pct']:.2f}% BPF {w['bpf_pct']:.2f}% "
                      f"progs {sorted(w['progs'])[:6]}", file=sys.stderr)
                ws.append(w)
    except sb.Terminated as e:
        print(f"net_bench: stopped ({e})", file=sys.stderr)
        return 143
    finally:
        if server and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
        Path(stats_path).write_text(stats_prev)
        if stats_fd is not None:
            os.close(stats_fd)
        subprocess.run(["rm", "-rf", tmp], check=False)

    def med(cfg, k):
        v = [w[k] for w in ws if w["config"] == cfg and w[k] is not None]
        return statistics.median(v) if v else None

    def f(v, s="{:.2f}"):
        return "n/a" if v is None else s.format(v)

    base = med("baseline", "gbit_s")
    L = [f"# Network-probe overhead: iperf3 over veth between two netns ({dt.date.today()})\n",
         f"Windows: {a.duration} s, {a.rounds} per configuration, order {' '.join(w['config'] for w in ws)}; "
         f"iperf3 -P {a.streams}{f' -u -b 0 -l {a.udp_len}' if a.udp_len else ''}. Medians.\n",
         "| configuration | Gbit/s | vs baseline | packets/s | tracer CPU % of a core | BPF CPU % of a core | BPF ns per packet | network-program BPF ns per packet |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in CONFIGS:
        g = med(cfg, "gbit_s")
        L.append(f"| {cfg} | {f(g)} | {f(g / base if g and base else None, '{:.3f}')} | {f(med(cfg, 'pkts_per_s'), '{:,.0f}')} | "
                 f"{f(med(cfg, 'tracer_cpu_pct')) if cfg != 'baseline' else '-'} | {f(med(cfg, 'bpf_pct'))} | "
                 f"{f(med(cfg, 'bpf_ns_per_pkt'), '{:.1f}')} | {f(med(cfg, 'net_bpf_ns_per_pkt'), '{:.1f}')} |")
    L.append("\nPer program (ns/run, runs; all windows summed):\n")
    agg: dict[tuple, list] = {}
    for w in ws:
        for n, p in w["progs"].items():
            s = agg.setdefault((w["config"], n), [0, 0])
            s[0] += p["run_time_ns"]
            s[1] += p["run_cnt"]
    for (cfg, n), (ns_, cnt) in sorted(agg.items()):
        if cnt:
            L.append(f"- {cfg} `{n}`: {ns_ / cnt:.1f} ns/run, {cnt:,} runs")
    iso_net = [n for (cfg, n) in agg if cfg == "isoscope" and n.startswith(("iso_net", "iso_tcp"))]
    if not iso_net:
        L.append("\nThe agent loaded no program named iso_net*/iso_tcp* (bpf/network.bpf.c not in this "
                 "build yet): the isoscope row is the cost of its other programs under this load.")
    report = "\n".join(L) + "\n"
    print(report)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"net-udp-{dt.date.today()}" if a.udp_len else f"net-{dt.date.today()}"
    (out / f"{stem}.json").write_text(json.dumps(ws, indent=1))
    (out / f"{stem}.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
