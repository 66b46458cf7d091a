"""Checks of the deployment artefacts in deploy/ with the real tools.

Needs no root and no BPF: promtool validates and unit-tests the alert rules, kubectl renders the
Kustomize tree, and the Grafana dashboard is parsed as JSON. A check is skipped only when the tool
it needs is not installed (promtool: package `prometheus`; kubectl: package `kubernetes-client`).
Without a tool, the sources are also checked against each other: every isoscope_* metric the
rules and the dashboard name is registered by the agent (exporters/, agent/), every flag the
DaemonSet passes is defined in agent/main.cpp, and the dashboard's panels have unique ids and do
not overlap.

Run by ctest as `python3 test_deploy.py -v` from the build directory; paths are taken from this
file's location, not from the working directory.
"""

import json
import re
import shutil
import subprocess
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "alerts" / "isoscope-rules.yaml"
RULE_TESTS = DEPLOY / "alerts" / "isoscope-rules.test.yaml"
DASHBOARD = DEPLOY / "dashboards" / "isoscope.json"
COLLECTOR_CONFIG = DEPLOY / "otel-collector.yaml"
# Where the agent's metric families and command-line flags are defined.
METRIC_SOURCES = [REPO / "exporters", REPO / "agent"]
AGENT_MAIN = REPO / "agent" / "main.cpp"

PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl")

ALERTS = [
    "IsoscopeCpuThrottleHigh",
    "IsoscopeRunqueueHigh",
    "IsoscopeMemoryReclaimStalls",
    "IsoscopeRecordsLost",
    "IsoscopeProbeDown",
    "IsolationLayerBlamedForSlowRequests",
    "IsoscopeEvidenceLost",
    "NetworkSliceBlamedForSlowRequests",
    "NetworkRetransmitsHigh",
    "NetworkDropsHigh",
]

DASHBOARD_PANELS = [
    "Share of thread time by cause",
    "Throttle seconds/s",
    "Run-queue seconds/s",
    "Verdicts by cause",
    "Records lost",
    "BPF ns per event",
    "Network delay seconds/s by slice and mechanism",
    "p99 network delay by cause",
    "Retransmits/s by slice",
    "Drops/s by reason",
    "Span verdicts/s by layer and cause",
    "p99 per-request delay by cause",
    "Spans enriched by binding",
]

DASHBOARD_ROWS = ["Network", "Requests"]

# The agent's arguments in deploy/daemonset.yaml.
AGENT_ARGS = [
    "agent",
    "--metrics-addr", "0.0.0.0:9464",
    "--otlp-listen", "0.0.0.0:4317",
    "--otlp-http-listen", "0.0.0.0:4318",
    "--otlp-endpoint", "otel-collector.observability.svc:4317",
    "--otlp-metrics-interval", "0",
]

METRIC_TOKEN = re.compile(r"\bisoscope_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def agent_metric_names():
    """Every metric family name the agent registers: the "isoscope_..." string literals of the
    C++ sources that define them (prometheus-cpp names are registered as written)."""
    names = set()
    for root in METRIC_SOURCES:
        for path in sorted(root.rglob("*.cpp")) + sorted(root.rglob("*.hpp")):
            names.update(re.findall(r'"(isoscope_[a-z0-9_]+)"', path.read_text()))
    return names


def unknown_metrics(text, known):
    """The isoscope_* names in `text` that are neither a known family nor a known family plus a
    histogram series suffix."""
    unknown = set()
    for token in METRIC_TOKEN.findall(text):
        if token in known:
            continue
        if any(token.endswith(s) and token[: -len(s)] in known for s in HISTOGRAM_SUFFIXES):
            continue
        unknown.add(token)
    return sorted(unknown)


def run(args):
    """Runs a tool from the repository root; returns the CompletedProcess (text mode)."""
    return subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def describe(proc):
    return (
        f"command {proc.args!r} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def split_documents(text):
    """Splits a multi-document YAML stream into its documents' texts."""
    docs, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            docs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current))
    return [d for d in docs if d.strip()]


def parse_documents(text):
    """Parses rendered manifests; uses PyYAML when present, else a minimal line-based reader
    that is enough for the few fields checked here."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        yaml = None
    if yaml is not None:
        return [d for d in yaml.safe_load_all(text) if d]
    return [{"_text": d, "kind": _top_level(d, "kind")} for d in split_documents(text)]


def _top_level(doc_text, key):
    for line in doc_text.splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    return None


class PromtoolTest(unittest.TestCase):
    def setUp(self):
        if PROMTOOL is None:
            self.skipTest("promtool not installed (package prometheus)")

    def test_check_rules(self):
        proc = run([PROMTOOL, "check", "rules", str(RULES)])
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertIn("SUCCESS", proc.stdout + proc.stderr, describe(proc))
        self.assertIn(f"{len(ALERTS)} rules found", proc.stdout + proc.stderr, describe(proc))

    def test_rule_unit_tests(self):
        proc = run([PROMTOOL, "test", "rules", str(RULE_TESTS)])
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertIn("SUCCESS", proc.stdout + proc.stderr, describe(proc))


class RuleFilesTest(unittest.TestCase):
    def test_every_alert_is_unit_tested(self):
        rules = RULES.read_text()
        tests = RULE_TESTS.read_text()
        for alert in ALERTS:
            with self.subTest(alert=alert):
                self.assertIn(f"- alert: {alert}\n", rules)
                self.assertIn(f"alertname: {alert}\n", tests)


class MetricNamesTest(unittest.TestCase):
    # Every isoscope_* metric the alerts, their unit tests and the dashboard name (in queries,
    # annotations and descriptions alike) is one the agent exports.

    @classmethod
    def setUpClass(cls):
        cls.known = agent_metric_names()

    def test_metric_list_is_found(self):
        for name in ("isoscope_span_verdicts_total", "isoscope_net_drops_total",
                     "isoscope_records_lost_total"):
            self.assertIn(name, self.known)

    def test_rules_use_agent_metrics(self):
        for path in (RULES, RULE_TESTS):
            with self.subTest(file=path.name):
                self.assertEqual(unknown_metrics(path.read_text(), self.known), [])

    def test_dashboard_uses_agent_metrics(self):
        self.assertEqual(unknown_metrics(DASHBOARD.read_text(), self.known), [])


class AgentFlagsTest(unittest.TestCase):
    def test_daemonset_flags_exist(self):
        # Each --flag the DaemonSet passes is an option the agent's command line defines.
        main = AGENT_MAIN.read_text()
        for flag in (a for a in AGENT_ARGS if a.startswith("--")):
            with self.subTest(flag=flag):
                self.assertIn(f'add_option("{flag}"', main)


class KustomizeTest(unittest.TestCase):
    def setUp(self):
        if KUBECTL is None:
            self.skipTest("kubectl not installed (package kubernetes-client)")

    def render(self):
        proc = run([KUBECTL, "kustomize", str(DEPLOY)])
        self.assertEqual(proc.returncode, 0, describe(proc))
        return parse_documents(proc.stdout)

    def test_renders_namespace_daemonset_service(self):
        kinds = sorted(d.get("kind") for d in self.render())
        self.assertEqual(kinds, ["DaemonSet", "Namespace", "Service"])

    def test_daemonset_host_pid_and_metrics_port(self):
        daemonsets = [d for d in self.render() if d.get("kind") == "DaemonSet"]
        self.assertEqual(len(daemonsets), 1)
        ds = daemonsets[0]
        if "_text" in ds:  # no PyYAML: check the rendered text
            text = ds["_text"]
            self.assertRegex(text, r"(?m)^\s+hostPID: true$")
            self.assertRegex(text, r"(?m)^\s+- containerPort: 9464\n\s+name: metrics$")
            self.assertRegex(text, r"(?m)^  namespace: isoscope$")
            return
        self.assertEqual(ds["metadata"]["namespace"], "isoscope")
        pod = ds["spec"]["template"]["spec"]
        self.assertIs(pod.get("hostPID"), True)
        ports = [p for c in pod["containers"] for p in c.get("ports", [])]
        self.assertIn(9464, [p["containerPort"] for p in ports if p.get("name") == "metrics"])
        agent = pod["containers"][0]
        self.assertEqual(agent["args"], AGENT_ARGS)

    def test_daemonset_host_network_and_otlp(self):
        # The network slice needs the host netns; the node's applications reach the agent's OTLP
        # receiver on port 4317 of their node, and it forwards to the example collector.
        ds = [d for d in self.render() if d.get("kind") == "DaemonSet"][0]
        if "_text" in ds:
            text = ds["_text"]
            self.assertRegex(text, r"(?m)^\s+hostNetwork: true$")
            self.assertRegex(text, r"(?m)^\s+dnsPolicy: ClusterFirstWithHostNet$")
            self.assertRegex(text, r"(?m)^\s+- containerPort: 4317\n\s+name: otlp-grpc$")
            self.assertRegex(text, r"(?m)^\s+- containerPort: 4318\n\s+name: otlp-http$")
            self.assertRegex(text, r"(?m)^\s+- --otlp-listen\n\s+- 0\.0\.0\.0:4317$")
            self.assertRegex(text, r"(?m)^\s+- --otlp-endpoint\n\s+- \S+:4317$")
            return
        pod = ds["spec"]["template"]["spec"]
        self.assertIs(pod.get("hostNetwork"), True)
        self.assertEqual(pod.get("dnsPolicy"), "ClusterFirstWithHostNet")
        agent = pod["containers"][0]
        ports = {p["name"]: p for p in agent["ports"]}
        self.assertEqual(ports["otlp-grpc"]["containerPort"], 4317)
        self.assertEqual(ports["otlp-grpc"].get("protocol", "TCP"), "TCP")
        self.assertEqual(ports["otlp-http"]["containerPort"], 4318)
        # NET_ADMIN is not needed (tracepoints only) and would reach the host netns.
        caps = agent["securityContext"]["capabilities"]
        self.assertEqual(caps["drop"], ["ALL"])
        self.assertNotIn("NET_ADMIN", caps["add"])
        self.assertTrue({"BPF", "PERFMON", "SYS_ADMIN"} <= set(caps["add"]))
        args = agent["args"]
        self.assertEqual(args[args.index("--otlp-listen") + 1], "0.0.0.0:4317")
        self.assertEqual(args[args.index("--otlp-http-listen") + 1], "0.0.0.0:4318")
        endpoint = args[args.index("--otlp-endpoint") + 1]
        # host:port without a scheme, on the port the example collector's OTLP/gRPC receiver uses.
        self.assertRegex(endpoint, r"^[a-z0-9.-]+:\d+$")
        collector_port = re.search(
            r"(?ms)^receivers:.*?grpc:.*?endpoint: \S+:(\d+)$", COLLECTOR_CONFIG.read_text())
        self.assertIsNotNone(collector_port)
        self.assertEqual(endpoint.rsplit(":", 1)[1], collector_port.group(1))

    def test_service_is_headless_on_metrics_port(self):
        services = [d for d in self.render() if d.get("kind") == "Service"]
        self.assertEqual(len(services), 1)
        svc = services[0]
        if "_text" in svc:
            self.assertRegex(svc["_text"], r"(?m)^\s+clusterIP: None$")
            self.assertRegex(svc["_text"], r"(?m)^\s+- name: metrics$")
            return
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertIn("metrics", [p["name"] for p in svc["spec"]["ports"]])
        # OTLP is node-local (status.hostIP), never load-balanced across agents.
        self.assertNotIn(4317, [p["port"] for p in svc["spec"]["ports"]])


class DashboardTest(unittest.TestCase):
    def test_dashboard_is_json_with_the_panels(self):
        dashboard = json.loads(DASHBOARD.read_text())
        titles = [p["title"] for p in dashboard["panels"] if p.get("type") != "row"]
        for title in DASHBOARD_PANELS:
            with self.subTest(panel=title):
                self.assertIn(title, titles)
        rows = [p["title"] for p in dashboard["panels"] if p.get("type") == "row"]
        for title in DASHBOARD_ROWS:
            with self.subTest(row=title):
                self.assertIn(title, rows)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                self.assertIn("isoscope_", target["expr"])

    def test_dashboard_layout(self):
        # Unique panel ids, panels inside the 24-column grid and not overlapping, the dashboard's
        # datasource variable and the $instance filter on every query.
        dashboard = json.loads(DASHBOARD.read_text())
        panels = dashboard["panels"]
        ids = [p["id"] for p in panels]
        self.assertEqual(len(ids), len(set(ids)), ids)
        cells = {}
        for panel in panels:
            g = panel["gridPos"]
            self.assertGreaterEqual(g["x"], 0)
            self.assertLessEqual(g["x"] + g["w"], 24, panel["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        self.fail(f"{panel['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}")
                    cells[(x, y)] = panel["title"]
        for panel in panels:
            if panel.get("type") == "row":
                continue
            with self.subTest(panel=panel["title"]):
                self.assertEqual(panel["datasource"]["uid"], "${datasource}")
                for target in panel["targets"]:
                    self.assertIn('instance=~"$instance"', target["expr"])


if __name__ == "__main__":
    unittest.main()
