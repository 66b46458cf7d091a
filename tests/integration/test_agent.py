"""isoscope agent on real cgroups: Prometheus /metrics content, promtool, clean SIGTERM."""

import re
import shutil
import signal
import subprocess
import time
import unittest
import urllib.request

import isoscope_harness as h

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, float)] of every sample in a text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            out.append((m.group(1), dict(LABEL.findall(m.group(3) or "")), float(m.group(4))))
    return out


def value(samples, name, **labels):
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items()))


def setUpModule():
    h.require_bpf()


def agent_args(metrics_addr):
    # These tests are about the container layer only: no OTLP receiver.
    return [str(h.BIN), "agent", "--metrics-addr", metrics_addr, "--interval", "1",
            "--otlp-listen", ""]


class AgentTest(unittest.TestCase):
    def start_agent(self, port):
        proc = subprocess.Popen(agent_args(f"127.0.0.1:{port}"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stderr.close()

        self.addCleanup(stop)
        return proc

    def scrape(self, port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    def test_throttled_cgroup_shows_in_metrics_and_sigterm_exits_cleanly(self):
        port = h.free_port()
        with h.cgroup("cpu") as cg, h.Processes() as procs:
            cg.set_cpu_quota(20000, 100000)
            procs.start(["spin", "60"], cgroups=[cg])
            agent = self.start_agent(port)
            labels = {"cgroup": cg.relative}
            deadline = time.monotonic() + 30
            samples = []
            while time.monotonic() < deadline:
                time.sleep(1)
                self.assertIsNone(agent.poll(), agent.stderr.read() if agent.poll() is not None else "")
                try:
                    samples = parse_metrics(self.scrape(port))
                except OSError:
                    continue
                if value(samples, "isoscope_cause_seconds_total", cause="container.cpu_throttle", **labels) > 2.0:
                    break
            throttle = value(samples, "isoscope_cause_seconds_total", cause="container.cpu_throttle", **labels)
            total = value(samples, "isoscope_thread_seconds_total", **labels)
            h.log(f"agent: {cg.relative} throttle {throttle:.2f} s of {total:.2f} thread-s")
            self.assertGreater(throttle, 2.0, "no throttle time for the throttled cgroup in /metrics")
            self.assertGreaterEqual(throttle / total, 0.5)
            layer = [l for n, l, v in samples if n == "isoscope_cause_seconds_total"
                     and l.get("cause") == "container.cpu_throttle" and l.get("cgroup") == cg.relative]
            self.assertEqual(layer[0].get("layer"), "container")
            self.assertGreaterEqual(value(samples, "isoscope_verdicts_total", cause="container.cpu_throttle"), 1)
            self.assertGreater(value(samples, "isoscope_records_received_total", kind="snapshot"), 0)
            self.assertEqual(value(samples, "isoscope_probe_up", program="iso_sched_switch_btf"), 1)
            self.assertEqual(value(samples, "isoscope_probe_up", program="iso_unthrottle_kprobe"), 0)
            for reason in ("ringbuf_full", "tasks_map_full", "invalid", "net_skb_map_full",
                           "net_sock_map_full", "blk_reqs_map_full", "kvm_exits_map_full"):
                self.assertTrue(any(n == "isoscope_records_lost_total" and l.get("reason") == reason
                                    for n, l, _ in samples), reason)

            text = self.scrape(port)
            if shutil.which("promtool"):
                check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                                       text=True, timeout=30)
                self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

            agent.send_signal(signal.SIGTERM)
            try:
                rc = agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.fail("agent did not exit within 20 s of SIGTERM")
            self.assertEqual(rc, 0, agent.stderr.read())

    def test_unusable_metrics_address_is_a_clear_usage_error(self):
        proc = subprocess.run(agent_args("256.1.1.1:1"), capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("256.1.1.1:1", proc.stderr)


if __name__ == "__main__":
    unittest.main()
