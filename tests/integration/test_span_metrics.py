"""Span metrics end to end (docs/otlp-correlation.md, "Span metrics"): a real HTTP server
instrumented with the OpenTelemetry JS SDK, in a CPU-quota cgroup, sends its SERVER spans through
`isoscope agent`; the agent turns each joined span into per-request metrics, serves them on
/metrics and pushes its metrics over OTLP to an independent upstream collector.

  server:    tests/otlp/http_server.js (node:http, sdk-trace-node, OTLP/gRPC exporter -> the
             agent's --otlp-listen), each request burns 15 ms of CPU time, in a fresh cpu cgroup
             with quota 20 ms per 100 ms period
  client:    this test, sequential requests, each with a fresh random `traceparent`
  upstream:  tests/otlp/collector.js (grpc-js + otlp-transformer's generated decoder), which
             writes every decoded metrics export with its data points

Asserts: /metrics has isoscope_span_verdicts_total and isoscope_request_delay_seconds_bucket
series for the server's cgroup (and isoscope_spans_enriched_total counts the spans), `promtool
check metrics` accepts the scrape, and the collector received isoscope_request_delay_seconds as a
cumulative Histogram with data points for that cgroup; on SIGTERM the agent exits 0 after a
last push.

Needs root and BPF; exits 77 when BPF is unavailable. The npm packages come from
ISOSCOPE_OTLP_NODE_DIR, or are installed into <build>/otlp-node by tests/otlp/node_env.py.
"""

import re
import secrets
import shutil
import signal
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

REQUESTS = 15
WARMUP = 3  # first requests (JIT, lazy loading): sent, not required to bind to their thread
WORK_MS = 15
QUOTA_US, PERIOD_US = 20000, 100000
SERVER_KIND = 2  # SPAN_KIND_SERVER
HISTOGRAM_CUMULATIVE = 2

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def setUpModule():
    h.require_bpf()


def parse_metrics(text):
    """[(name, {label: value}, float)] of every sample in a text exposition."""
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line) if line and not line.startswith("#") else None
        if m:
            out.append((m.group(1), dict(LABEL.findall(m.group(3) or "")), float(m.group(4))))
    return out


class SpanMetrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.start_span_pipeline(cls, "isoscope-spanmetrics-",
                              ["--otlp-metrics-interval", "1", "--interval", "1"])

        cls.cg = h.cgroup("cpu")
        cls.addClassCleanup(cls.cg.destroy)
        cls.cg.set_cpu_quota(QUOTA_US, PERIOD_US)
        cls.cg.set_cpu_weight_max()
        cls.addClassCleanup(cls.procs.kill_all)  # cleanups run last-first: the server dies first
        port = h.free_port()
        cls.server = cls.procs.start(
            ["/usr/bin/env", "node", str(OTLP_DIR / "http_server.js"), "--port", port,
             "--endpoint", f"127.0.0.1:{cls.otlp_port}", "--service", "http-span-metrics",
             "--work-ms", WORK_MS],
            cgroups=[cls.cg], env=cls.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        got = h.wait_json_line(cls.server, "http_server.js", 60)
        if got.get("listening") != port:
            raise RuntimeError(f"server did not start: {got}")

        cls.sent = set()
        for i in range(WARMUP + REQUESTS):
            trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
            req = urllib.request.Request(f"http://127.0.0.1:{port}/work?i={i}",
                                         headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
            cls.sent.add(trace_id)

        # Wait (bounded) until the spans were forwarded upstream (so they were enriched and
        # observed) and a metrics export carrying the request histogram for our cgroup arrived.
        deadline = time.monotonic() + 30
        while True:
            spans = [s for s in h.read_jsonl(cls.collector_out)
                     if s.get("kind") == SERVER_KIND and s.get("traceId") in cls.sent]
            cls.spans = len(spans)
            cls.delay_exports = [
                d for line in h.read_jsonl(cls.collector_out) for d in line.get("detail", [])
                if d["name"] == "isoscope_request_delay_seconds"
                and any(p["attributes"].get("cgroup") == cls.cg.relative for p in d["points"])]
            if (cls.spans == len(cls.sent) and cls.delay_exports) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{cls.metrics_port}/metrics",
                                    timeout=10) as r:
            cls.scrape = r.read().decode()
        cls.samples = parse_metrics(cls.scrape)
        h.log(f"{cls.spans}/{len(cls.sent)} spans upstream; {len(cls.delay_exports)} metrics "
              f"exports with isoscope_request_delay_seconds for {cls.cg.relative}")

    @classmethod
    def log_text(cls):
        return h.read_log(cls.agent_log)

    def ours(self, name):
        return [(l, v) for n, l, v in self.samples
                if n == name and l.get("cgroup") == self.cg.relative]

    def test_0_spans_forwarded(self):
        self.assertEqual(self.spans, len(self.sent), self.log_text()[-3000:])

    def test_1_verdict_counters(self):
        verdicts = self.ours("isoscope_span_verdicts_total")
        h.log(f"verdicts for {self.cg.relative}: {verdicts}")
        self.assertTrue(verdicts, "no isoscope_span_verdicts_total series for the server's cgroup")
        self.assertGreaterEqual(sum(v for _, v in verdicts), REQUESTS, verdicts)
        self.assertLessEqual(sum(v for _, v in verdicts), len(self.sent), verdicts)
        for labels, _ in verdicts:
            self.assertEqual(labels.get("binding"), "thread", labels)
            self.assertIn("layer", labels)
            self.assertIn("cause", labels)
        # EnrichStats are copied into the counters once per agent interval (1 s here).
        def enriched():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=10) as r:
                return sum(v for n, l, v in parse_metrics(r.read().decode())
                           if n == "isoscope_spans_enriched_total" and l.get("binding") == "thread")
        deadline = time.monotonic() + 10
        while enriched() < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.3)
        self.assertGreaterEqual(enriched(), REQUESTS)

    def test_2_delay_histogram(self):
        buckets = self.ours("isoscope_request_delay_seconds_bucket")
        self.assertTrue(buckets, "no isoscope_request_delay_seconds_bucket series for the cgroup")
        causes = {l["cause"] for l, _ in buckets}
        h.log(f"request delay causes for {self.cg.relative}: {sorted(causes)}")
        self.assertIn("app.on_cpu", causes)
        counts = {l["cause"]: v for l, v in buckets if l.get("le") == "+Inf"}
        self.assertGreaterEqual(counts.get("app.on_cpu", 0), REQUESTS, counts)
        verdicts = sum(v for _, v in self.ours("isoscope_span_verdicts_total"))
        durations = sum(v for _, v in self.ours("isoscope_request_duration_seconds_count"))
        self.assertEqual(durations, verdicts)  # one observation per span of the cgroup

    def test_3_promtool_accepts_the_scrape(self):
        if not shutil.which("promtool"):
            self.skipTest("promtool not installed")
        check = subprocess.run(["promtool", "check", "metrics"], input=self.scrape,
                               capture_output=True, text=True, timeout=30, check=False)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_4_histogram_over_otlp(self):
        self.assertTrue(self.delay_exports, "the collector received no isoscope_request_delay_seconds"
                                            f" for {self.cg.relative}\n{self.log_text()[-3000:]}")
        d = self.delay_exports[-1]
        self.assertEqual(d["type"], "histogram")
        self.assertEqual(d["aggregationTemporality"], HISTOGRAM_CUMULATIVE)
        self.assertEqual(d["resource"].get("service.name"), "isoscope")
        self.assertTrue(d["resource"].get("host.name"))
        self.assertEqual(d["scope"], "isoscope")
        points = [p for p in d["points"] if p["attributes"].get("cgroup") == self.cg.relative]
        self.assertTrue(points)
        for p in points:
            self.assertGreater(p["count"], 0, p)
            self.assertEqual(len(p["bucketCounts"]), len(p["explicitBounds"]) + 1, p)
            self.assertEqual(sum(p["bucketCounts"]), p["count"], p)
            self.assertEqual(p["explicitBounds"][0], 0.0001)
            self.assertEqual(p["explicitBounds"][-1], 10)
            self.assertIn(p["attributes"].get("layer"), ("app", "container", "network"), p)
        # Counters arrive as monotonic sums.
        sums = [x for line in h.read_jsonl(self.collector_out) for x in line.get("detail", [])
                if x["name"] == "isoscope_span_verdicts_total"]
        self.assertTrue(sums)
        self.assertEqual(sums[-1]["type"], "sum")
        self.assertTrue(sums[-1]["isMonotonic"])

    def test_9_sigterm_exits_cleanly_after_a_last_push(self):
        exports = sum(1 for line in h.read_jsonl(self.collector_out) if "metricPoints" in line)
        self.agent.send_signal(signal.SIGTERM)
        try:
            rc = self.agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("agent did not exit within 20 s of SIGTERM")
        self.assertEqual(rc, 0, self.log_text()[-3000:])
        after = sum(1 for line in h.read_jsonl(self.collector_out) if "metricPoints" in line)
        self.assertGreater(after, exports, "no metrics export at shutdown")


if __name__ == "__main__":
    unittest.main(verbosity=2)
