"""Span correlation end to end: real HTTP servers instrumented with the OpenTelemetry JS SDK,
their SERVER spans sent through `isoscope agent`, joined to kernel evidence of the thread that
read each request (docs/otlp-correlation.md), decoded upstream by an independent collector.

  servers:   tests/otlp/http_server.js (node:http, sdk-trace-node, W3C propagator, OTLP/gRPC
             exporter -> the agent's --otlp-listen), each request burns 15 ms of CPU time
             - "throttled": in a fresh cpu cgroup with quota 20 ms per 100 ms period
             - "healthy":   no quota (both with the largest CPU weight)
  client:    this test, urllib, sequential requests, each with a fresh random `traceparent`
  upstream:  tests/otlp/collector.js (grpc-js + otlp-transformer's generated decoder)

Asserts on the decoded forwarded spans: every SERVER span is bound to its thread
(isoscope.binding == "thread"), its parent span id is the one our traceparent carried, the
throttled server's slow spans (> 50 ms) are blamed on container.cpu_throttle, the healthy
server's are not (verdict "none"), and no cause accounts for more time than the span lasted.

Needs root and BPF; exits 77 when BPF is unavailable. The npm packages come from
ISOSCOPE_OTLP_NODE_DIR, or are installed into <build>/otlp-node by tests/otlp/node_env.py.
"""

import json
import os
import secrets
import subprocess
import sys
import time
import unittest
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import isoscope_harness as h  # noqa: E402

OTLP_DIR = h.OTLP_DIR

REQUESTS = int(os.environ.get("ISOSCOPE_SPAN_REQUESTS", "40"))
WARMUP = 3            # requests per server before the measured ones (JIT, lazy loading)
WORK_MS = 15          # CPU time per request
QUOTA_US, PERIOD_US = 20000, 100000
SLOW_NS = 50_000_000  # a throttled span longer than this must be blamed on the throttle
SERVER_KIND = 2       # SPAN_KIND_SERVER
INTERNAL_KIND = 1     # SPAN_KIND_INTERNAL: isoscope's child spans per cause
CHILD_MIN_MS = 20     # --child-span-min-ms
CAUSE = "container.cpu_throttle"
# Diagnostics: hold every export batch in the servers this long (0: the SDK's own timing).
EXPORT_DELAY_MS = int(os.environ.get("ISOSCOPE_SPAN_EXPORT_DELAY_MS", "0"))


def setUpModule():
    h.require_bpf()


def traceparent():
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, f"00-{trace_id}-{parent_id}-01"


class SpanCorrelation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Upstream collector and the agent.
        h.start_span_pipeline(cls, "isoscope-spancorr-",
                              ["--interval", "1", "--child-span-min-ms", str(CHILD_MIN_MS)])
        h.log(f"agent ready: OTLP on {cls.otlp_port}, metrics on {cls.metrics_port}")

        # The servers: one throttled (cpu quota), one healthy.
        cls.cg = h.cgroup("cpu")
        cls.addClassCleanup(cls.cg.destroy)
        cls.cg.set_cpu_quota(QUOTA_US, PERIOD_US)
        # Both servers get the largest CPU weight, so that other jobs on the box (CI builds, a
        # neighbour's tests) do not make the healthy server really wait for a CPU: the agent
        # would then rightly report container.runqueue, and this test is about the throttle.
        cls.cg.set_cpu_weight_max()
        cls.healthy_cg = h.cgroup("cpu")
        cls.addClassCleanup(cls.healthy_cg.destroy)
        cls.healthy_cg.set_cpu_weight_max()
        cls.addClassCleanup(cls.procs.kill_all)  # cleanups run last-first: servers die first
        cls.servers = {}
        for name, cgroups in (("throttled", [cls.cg]), ("healthy", [cls.healthy_cg])):
            port = h.free_port()
            proc = cls.procs.start(
                ["/usr/bin/env", "node", str(OTLP_DIR / "http_server.js"), "--port", port,
                 "--endpoint", f"127.0.0.1:{cls.otlp_port}", "--service", f"http-{name}",
                 "--work-ms", WORK_MS, "--export-delay-ms", EXPORT_DELAY_MS],
                cgroups=cgroups, env=cls.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            got = h.wait_json_line(proc, f"http_server.js ({name})", 60)
            if got.get("listening") != port:
                raise RuntimeError(f"{name} server did not start: {got}")
            cls.servers[name] = (port, proc)
            h.log(f"{name} server pid {proc.pid} on {port}")

        # Requests, sequential, each with a fresh traceparent.
        cls.sent = {}  # (traceId) -> {"server", "parent", "response"}
        for name, (port, _) in cls.servers.items():
            for i in range(WARMUP + REQUESTS):
                trace_id, parent_id, tp = traceparent()
                req = urllib.request.Request(f"http://127.0.0.1:{port}/work?i={i}",
                                             headers={"traceparent": tp})
                with urllib.request.urlopen(req, timeout=30) as r:
                    body = json.loads(r.read())
                    status = r.status
                if status != 200:
                    raise RuntimeError(f"{name}: HTTP {status}")
                if i >= WARMUP:
                    cls.sent[trace_id] = {"server": name, "parent": parent_id, "response": body}
        h.log(f"sent {len(cls.sent)} measured requests; throttled cgroup "
              f"throttled_ns={cls.cg.throttled_ns()}")

        # Wait (bounded) until every measured SERVER span arrived upstream.
        deadline = time.monotonic() + 60
        while True:
            cls.spans = {}
            cls.children = {}  # parent span id -> isoscope child spans
            for s in h.read_jsonl(cls.collector_out):
                if s.get("kind") == SERVER_KIND and s.get("traceId") in cls.sent:
                    cls.spans[s["traceId"]] = s
                elif s.get("kind") == INTERNAL_KIND and s.get("name", "").startswith("isoscope "):
                    cls.children.setdefault(s.get("parentSpanId"), []).append(s)
            if len(cls.spans) == len(cls.sent) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        h.log(f"{len(cls.spans)}/{len(cls.sent)} SERVER spans arrived upstream")

    @classmethod
    def log_text(cls):
        return h.read_log(cls.agent_log)

    def of(self, server):
        return [(t, s) for t, s in self.spans.items() if self.sent[t]["server"] == server]

    @staticmethod
    def duration_ns(s):
        return int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])

    @staticmethod
    def describe(s):
        a = s["attributes"]
        lag_ms = s.get("receivedAtMs", 0) - int(s["endTimeUnixNano"]) / 1e6
        return (f"{s['attributes'].get('url.path')} "
                f"{(int(s['endTimeUnixNano']) - int(s['startTimeUnixNano'])) / 1e6:.1f} ms "
                f"(upstream {lag_ms:.0f} ms after its end) "
                f"binding={a.get('isoscope.binding')} cause={a.get('isoscope.verdict.cause')} "
                f"share={a.get('isoscope.verdict.share')} "
                f"throttle_s={a.get('isoscope.cause.' + CAUSE + '.seconds')} "
                f"causes={ {k: v for k, v in a.items() if k.startswith('isoscope.cause.')} }")

    def test_0_all_spans_arrived(self):
        missing = [t for t in self.sent if t not in self.spans]
        self.assertEqual(missing, [], f"{len(missing)} SERVER spans never arrived upstream\n"
                                      f"{self.log_text()[-3000:]}")

    def test_1_parent_is_the_traceparent_sent(self):
        for t, s in self.spans.items():
            self.assertEqual(s["parentSpanId"], self.sent[t]["parent"], t)
            self.assertEqual(s["spanId"], self.sent[t]["response"]["spanId"], t)

    def test_2_bound_to_the_reading_thread(self):
        counts = {}
        for name in self.servers:
            for _, s in self.of(name):
                b = s["attributes"].get("isoscope.binding")
                counts[(name, b)] = counts.get((name, b), 0) + 1
        h.log(f"bindings: {counts}")
        for name in self.servers:
            for _, s in self.of(name):
                if s["attributes"].get("isoscope.binding") != "thread":
                    h.log(f"  {name}, not bound to its thread: " + self.describe(s))
        not_thread = {k: v for k, v in counts.items() if k[1] != "thread"}
        self.assertEqual(not_thread, {}, f"spans not bound to their thread: {counts}")
        for name, (_, proc) in self.servers.items():
            for _, s in self.of(name):
                pid = s["resource"].get("process.pid")
                if pid is not None:
                    self.assertEqual(int(pid), proc.pid, name)

    def test_3_throttled_server_blamed_on_the_throttle(self):
        spans = [s for _, s in self.of("throttled")]
        slow = [s for s in spans if self.duration_ns(s) > SLOW_NS]
        blamed = [s for s in slow if s["attributes"].get("isoscope.verdict.cause") == CAUSE]
        durations = sorted(self.duration_ns(s) / 1e6 for s in spans)
        h.log(f"throttled: {len(spans)} spans, {len(slow)} > 50 ms, {len(blamed)} blamed on {CAUSE}; "
              f"durations ms min={durations[0] if durations else 0:.1f} "
              f"median={durations[len(durations) // 2] if durations else 0:.1f} "
              f"max={durations[-1] if durations else 0:.1f}")
        for s in slow:
            if s not in blamed:
                h.log("  not blamed: " + self.describe(s))
        self.assertGreater(len(slow), 0, "no throttled span lasted more than 50 ms: "
                                         + "; ".join(self.describe(s) for s in spans[:5]))
        self.assertGreaterEqual(len(blamed), 0.8 * len(slow),
                                f"{len(blamed)}/{len(slow)} slow throttled spans blamed on {CAUSE}")
        for s in blamed:
            self.assertEqual(s["attributes"].get("isoscope.verdict.layer"), "container")

    def test_4_healthy_server_not_blamed(self):
        spans = [s for _, s in self.of("healthy")]
        verdicts = {}
        for s in spans:
            v = s["attributes"].get("isoscope.verdict.cause")
            verdicts[v] = verdicts.get(v, 0) + 1
        h.log(f"healthy verdicts: {verdicts}")
        for s in spans:
            if s["attributes"].get("isoscope.verdict.cause") != "none":
                h.log("  healthy, not none: " + self.describe(s))
        self.assertGreater(len(spans), 0)
        self.assertEqual(verdicts.get(CAUSE, 0), 0, f"healthy server blamed on {CAUSE}: {verdicts}")
        self.assertGreaterEqual(verdicts.get("none", 0), 0.95 * len(spans), verdicts)

    def test_5_cause_time_within_span(self):
        for t, s in self.spans.items():
            dur_s = self.duration_ns(s) / 1e9
            for k, v in s["attributes"].items():
                if k.startswith("isoscope.cause.") and k.endswith(".seconds"):
                    self.assertLessEqual(float(v), dur_s + 1e-6, f"{t} {k}: {self.describe(s)}")
            self.assertLessEqual(float(s["attributes"].get(f"isoscope.cause.{CAUSE}.seconds", 0)),
                                 dur_s + 1e-6)


    def test_7_child_span_per_cause_above_the_threshold(self):
        """--child-span-min-ms: each blamable cause of at least that many ms becomes an INTERNAL
        child span of the enriched span, in its trace, named after the cause."""
        with_children = 0
        for t, s in self.spans.items():
            a = s["attributes"]
            want = sorted(k[len("isoscope.cause."):-len(".seconds")] for k, v in a.items()
                          if k.startswith("isoscope.cause.") and k.endswith(".seconds")
                          and not k.startswith("isoscope.cause.app.")
                          and float(v) >= CHILD_MIN_MS / 1e3)
            kids = self.children.get(s["spanId"], [])
            got = sorted(k["attributes"].get("isoscope.cause") for k in kids)
            self.assertEqual(got, want, self.describe(s))
            for k in kids:
                self.assertEqual(k["traceId"], t)
                self.assertEqual(k["name"], "isoscope " + k["attributes"]["isoscope.cause"])
                secs = float(a[f"isoscope.cause.{k['attributes']['isoscope.cause']}.seconds"])
                dur = (int(k["endTimeUnixNano"]) - int(k["startTimeUnixNano"])) / 1e9
                self.assertAlmostEqual(dur, secs, delta=1e-6)
                self.assertGreaterEqual(int(k["startTimeUnixNano"]), int(s["startTimeUnixNano"]))
            with_children += bool(kids)
        h.log(f"{with_children} spans have isoscope child spans")
        # The slow throttled spans (throttled >= 20 ms) have one.
        self.assertGreater(with_children, 0)

    def test_6_trace_shows_the_targets_requests(self):
        """`isoscope trace --pid P --json --otlp-listen`: per-request objects for the target's
        spans, each bound to its thread, with a breakdown and a verdict (slow throttled requests:
        container.cpu_throttle)."""
        trace_port = h.free_port()
        port = h.free_port()
        server = self.procs.start(
            ["/usr/bin/env", "node", str(OTLP_DIR / "http_server.js"), "--port", port,
             "--endpoint", f"127.0.0.1:{trace_port}", "--service", "http-traced",
             "--work-ms", WORK_MS],
            cgroups=[self.cg], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        got = h.wait_json_line(server, "http_server.js (traced)", 60)
        self.assertEqual(got.get("listening"), port)
        trace = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(h.BIN), "trace", "--pid", str(server.pid), "--json", "--interval", "1",
             "--otlp-listen", f"127.0.0.1:{trace_port}", "--duration", "15"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        h._live_processes.add(trace)  # pylint: disable=protected-access
        self.addCleanup(h.stop, trace)
        first = h.wait_json_line(trace, "isoscope trace", 30)
        self.assertIn("breakdown", first)
        sent = {}
        for i in range(WARMUP + 15):
            trace_id, parent_id, tp = traceparent()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/work?i={i}",
                                         headers={"traceparent": tp})
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.loads(r.read())
            if i >= WARMUP:
                sent[trace_id] = body["spanId"]
        out, err = trace.communicate(timeout=60)
        objects = [json.loads(line) for line in out.splitlines() if line.strip()]
        rows = {o["trace_id"]: o for o in objects if "trace_id" in o}
        intervals = [o for o in objects if "interval_s" in o]
        h.log(f"trace printed {len(intervals)} intervals and {len(rows)} requests")
        self.assertGreater(len(intervals), 3, err[-2000:])
        missing = [t for t in sent if t not in rows]
        self.assertEqual(missing, [], f"requests never shown by trace: {err[-2000:]}")
        slow = blamed = 0
        for t, span_id in sent.items():
            row = rows[t]
            self.assertEqual(row["span_id"], span_id)
            self.assertEqual(row["binding"], "thread", row)
            self.assertGreater(row["duration_s"], 0)
            total = sum(e["seconds"] for e in row["breakdown"])
            self.assertAlmostEqual(total, row["duration_s"], delta=1e-3 + 0.01 * row["duration_s"])
            if row["duration_s"] > SLOW_NS / 1e9:
                slow += 1
                blamed += row["verdict"]["cause"] == CAUSE
        h.log(f"trace: {slow} slow requests, {blamed} blamed on {CAUSE}")
        self.assertGreater(slow, 0)
        self.assertGreaterEqual(blamed, 0.8 * slow)
        # The network section is there for a live target (its flows read from /proc).
        self.assertTrue(all("network" in o for o in intervals[1:]), intervals[-1])


if __name__ == "__main__":
    unittest.main(verbosity=2)
