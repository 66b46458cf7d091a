"""Checks of the deployment artefacts in deploy/ with the real tools.

Needs no root and no BPF: promtool validates and unit-tests the alert rules and the latency SLO
rules (deploy/slo/, docs/slo.md), kubectl renders the Kustomize tree (the SLO rules ConfigMap
included), and the Grafana dashboard is parsed as JSON. A check is skipped only when the tool
it needs is not installed (promtool: package `prometheus`; kubectl: package `kubernetes-client`).
Without a tool, the sources are also checked against each other: every isoscope_* metric the
rules and the dashboard name is registered by the agent (exporters/, agent/), every flag the
DaemonSet passes is defined in agent/main.cpp, the dashboard's panels have unique ids and do
not overlap, and every declared SLO's threshold is a bucket bound of the agent's request
histogram.

Run by ctest as `python3 test_deploy.py -v` from the build directory; paths are taken from this
file's location, not from the working directory.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "alerts" / "isoscope-rules.yaml"
RULE_TESTS = DEPLOY / "alerts" / "isoscope-rules.test.yaml"
DASHBOARD = DEPLOY / "dashboards" / "isoscope.json"
COLLECTOR_CONFIG = DEPLOY / "otel-collector.yaml"
# Latency SLOs (docs/slo.md): the SLOs as data, the generic rules, their promtool tests and the
# SLOs those tests declare.
SLO_DIR = DEPLOY / "slo"
SLO_DATA = SLO_DIR / "isoscope-slos.yaml"
SLO_RULES = SLO_DIR / "isoscope-slo-rules.yaml"
SLO_RULE_TESTS = SLO_DIR / "isoscope-slo-rules.test.yaml"
SLO_TEST_DATA = SLO_DIR / "testdata" / "isoscope-slos.yaml"
SLO_CONFIGMAP = "isoscope-slo-rules"
# The bucket bounds of isoscope_request_duration_seconds.
REQUEST_METRICS = REPO / "exporters" / "prometheus" / "request_metrics.cpp"
# Where the agent's metric families and command-line flags are defined.
METRIC_SOURCES = [REPO / "exporters", REPO / "agent"]
AGENT_MAIN = REPO / "agent" / "main.cpp"

PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl")

ALERTS = [
    "IsoscopeCpuThrottleHigh",
    "IsoscopeRunqueueHigh",
    "IsoscopeMemoryReclaimStalls",
    "IsoscopeIoThrottleHigh",
    "IsoscopeHypervisorStealHigh",
    "IsoscopeParavirtHigh",
    "IsoscopeRecordsLost",
    "IsoscopeProbeDown",
    "IsolationLayerBlamedForSlowRequests",
    "IsoscopeEvidenceLost",
    "NetworkSliceBlamedForSlowRequests",
    "NetworkRetransmitsHigh",
    "NetworkDropsHigh",
]

SLO_ALERTS = [
    "IsoscopeLatencySLOFastBurn",
    "IsoscopeLatencySLOSlowBurn",
]
# The rules of isoscope-slo-rules.yaml: 9 recording rules and the 2 alerts.
SLO_RECORDS = [
    "isoscope:slo_requests:rate5m",
    "isoscope:slo_requests_good:rate5m",
    "isoscope:slo_verdicts:rate5m",
    "isoscope:slo_burn_rate:5m",
    "isoscope:slo_burn_rate:30m",
    "isoscope:slo_burn_rate:1h",
    "isoscope:slo_burn_rate:6h",
    "isoscope:slo_dominant_cause:1h",
    "isoscope:slo_dominant_cause:6h",
]
SLO_OBJECTIVE = "isoscope:slo_objective:ratio"

DASHBOARD_PANELS = [
    "Share of thread time by cause",
    "Throttle seconds/s",
    "Run-queue seconds/s",
    "Verdicts by cause",
    "vCPU seconds/s by state",
    "VM exits/s by reason",
    "Steal seconds/s per CPU",
    "Steal seconds/s attributed",
    "Block I/O wait seconds/s by cause",
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

DASHBOARD_ROWS = ["Hypervisor and paravirt layers", "Network", "Requests"]

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


def request_buckets():
    """The bucket bounds of the agent's request histograms as the agent writes them in `le`:
    RequestMetrics::Buckets() in request_metrics.cpp, formatted like prometheus-cpp (an ostream
    with 16 significant digits: 0.25 -> "0.25", 1 -> "1")."""
    body = re.search(r"kBuckets\s*=\s*\{([^}]*)\}", REQUEST_METRICS.read_text())
    if body is None:
        raise AssertionError(f"no kBuckets = {{...}} in {REQUEST_METRICS}")
    return [format(float(v), ".16g") for v in re.findall(r"[0-9][0-9.eE+-]*", body.group(1))]


def load_yaml():
    """PyYAML, or None (package python3-yaml)."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return yaml


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
    yaml = load_yaml()
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

    def test_check_slo_rules(self):
        # Checked one file at a time: "N rules found" is per file.
        expected = [
            (SLO_RULES, len(SLO_RECORDS) + len(SLO_ALERTS)),
            (SLO_DATA, None),  # as many as SLOs are declared
            (SLO_TEST_DATA, 3),
        ]
        for path, count in expected:
            with self.subTest(file=path.name):
                proc = run([PROMTOOL, "check", "rules", str(path)])
                self.assertEqual(proc.returncode, 0, describe(proc))
                self.assertIn("SUCCESS", proc.stdout + proc.stderr, describe(proc))
                if count is not None:
                    self.assertIn(f"{count} rules found", proc.stdout + proc.stderr, describe(proc))

    def test_slo_rule_unit_tests(self):
        # Fires on a burn with the dominant layer and cause, stays quiet when healthy, on a short
        # spike and once a burn stopped, and for another workload's burn (docs/slo.md, "Tests").
        proc = run([PROMTOOL, "test", "rules", str(SLO_RULE_TESTS)])
        self.assertEqual(proc.returncode, 0, describe(proc))
        self.assertIn("SUCCESS", proc.stdout + proc.stderr, describe(proc))


class RuleFilesTest(unittest.TestCase):
    RULE_SETS = [(RULES, RULE_TESTS, ALERTS), (SLO_RULES, SLO_RULE_TESTS, SLO_ALERTS)]

    def test_every_alert_is_unit_tested(self):
        for rules_path, tests_path, alerts in self.RULE_SETS:
            rules = rules_path.read_text()
            tests = tests_path.read_text()
            with self.subTest(file=rules_path.name):
                # The list above is the rule file's alerts, no more and no fewer.
                self.assertEqual(sorted(re.findall(r"(?m)^\s+- alert: (\S+)$", rules)),
                                 sorted(alerts))
            for alert in alerts:
                with self.subTest(alert=alert):
                    self.assertIn(f"- alert: {alert}\n", rules)
                    self.assertIn(f"alertname: {alert}\n", tests)
                    # Two-sided: a case where it fires and one where it must not.
                    self.assertRegex(tests, rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels:")
                    self.assertRegex(tests, rf"alertname: {alert}\n\s+exp_alerts: \[\]")


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
        for path in (RULES, RULE_TESTS, SLO_DATA, SLO_RULES, SLO_RULE_TESTS, SLO_TEST_DATA):
            with self.subTest(file=path.name):
                self.assertEqual(unknown_metrics(path.read_text(), self.known), [])

    def test_dashboard_uses_agent_metrics(self):
        self.assertEqual(unknown_metrics(DASHBOARD.read_text(), self.known), [])


class SloTest(unittest.TestCase):
    # The SLOs are data (deploy/slo/isoscope-slos.yaml): each entry is checked here, since promtool
    # accepts any label value and a threshold that is not a bucket bound matches no series.

    @classmethod
    def setUpClass(cls):
        cls.buckets = request_buckets()

    def test_bucket_bounds_are_found(self):
        self.assertEqual(self.buckets[0], "0.0001")
        self.assertIn("0.25", self.buckets)
        self.assertEqual(self.buckets[-1], "10")

    def test_thresholds_are_bucket_bounds(self):
        # Without PyYAML: every `le:` of the SLO files is a bucket bound.
        for path in (SLO_DATA, SLO_TEST_DATA):
            for le in re.findall(r"(?m)^\s+le: (.*)$", path.read_text()):
                with self.subTest(file=path.name, le=le):
                    self.assertRegex(le, r'^"[^"]+"$', "quote le: a YAML number would be accepted "
                                                        "but 1.0 is not the agent's \"1\"")
                    self.assertIn(le.strip('"'), self.buckets)

    def test_data_file_lists_the_bucket_bounds(self):
        # The comment that tells the admin which thresholds exist matches the agent's buckets.
        listed = re.search(r"writes them:(.*?)\(a", SLO_DATA.read_text(), re.S)
        self.assertIsNotNone(listed)
        self.assertEqual(re.findall(r'"([0-9.]+)"', listed.group(1)), self.buckets)

    def test_slo_entries(self):
        yaml = load_yaml()
        if yaml is None:
            self.skipTest("PyYAML not installed (package python3-yaml)")
        for path in (SLO_DATA, SLO_TEST_DATA):
            doc = yaml.safe_load(path.read_text())
            names = []
            for group in doc["groups"]:
                for rule in group.get("rules") or []:
                    with self.subTest(file=path.name, rule=rule):
                        self.assertEqual(sorted(rule), ["expr", "labels", "record"])
                        self.assertEqual(rule["record"], SLO_OBJECTIVE)
                        objective = re.fullmatch(r"vector\(([0-9.]+)\)", rule["expr"].strip())
                        self.assertIsNotNone(objective, "expr: vector(<objective>)")
                        self.assertTrue(0 < float(objective.group(1)) < 1)
                        labels = rule["labels"]
                        for key in ("slo", "namespace", "owner", "le"):
                            self.assertIsInstance(labels.get(key), str, key)
                        self.assertIn(labels["le"], self.buckets)
                        self.assertRegex(labels["namespace"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
                        self.assertRegex(labels["owner"], r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
                        # The alerts set these; an SLO label would be overwritten or clash.
                        self.assertFalse({"severity", "layer", "cause", "alertname"} & set(labels))
                        names.append(labels["slo"])
            with self.subTest(file=path.name):
                self.assertEqual(len(names), len(set(names)), f"duplicate slo names: {names}")

    def test_rules_are_generic(self):
        # Nothing in the generic rules names a workload, a threshold or an objective: they come
        # from the objective series.
        rules = SLO_RULES.read_text()
        for record in SLO_RECORDS:
            self.assertIn(f"- record: {record}\n", rules)
        self.assertNotRegex(rules, r'(namespace|owner|pod)\s*=~?\s*"')
        self.assertNotRegex(rules, r'\ble\s*=~?\s*"')
        self.assertNotIn("0.99", rules)

    def test_owner_rule_is_the_same_everywhere(self):
        # The same four label_replace calls derive `owner` in each rule that reads agent metrics.
        chains = re.findall(r'((?:\s+"owner", "\$1", "pod", "[^"]+"\),?\n)+)',
                            SLO_RULES.read_text())
        self.assertEqual(len(chains), 3)
        normalized = {re.sub(r"\s+", " ", c).strip().rstrip(",") for c in chains}
        self.assertEqual(len(normalized), 1, normalized)
        self.assertEqual(len(re.findall(r'"pod"', chains[0])), 4)

    def test_burn_thresholds(self):
        # The SRE workbook's pairs: 14.4 over 1h and 5m (page), 6 over 6h and 30m (ticket).
        rules = SLO_RULES.read_text()
        self.assertRegex(rules, r"isoscope:slo_burn_rate:1h > 14\.4\s+and\s+"
                                r"isoscope:slo_burn_rate:5m > 14\.4\s")
        self.assertRegex(rules, r"isoscope:slo_burn_rate:6h > 6\s+and\s+"
                                r"isoscope:slo_burn_rate:30m > 6\s")


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
        self.assertEqual(kinds, ["ConfigMap", "DaemonSet", "Namespace", "Service"])

    def rendered_slo_configmap(self, docs):
        maps = [d for d in docs if d.get("kind") == "ConfigMap"]
        self.assertEqual(len(maps), 1)
        if "_text" in maps[0]:
            self.skipTest("PyYAML not installed (package python3-yaml)")
        return maps[0]

    def test_slo_rules_configmap(self):
        # The SLO files as they are, under a fixed name (Prometheus mounts it by name), and still
        # valid rule files once rendered.
        cm = self.rendered_slo_configmap(self.render())
        self.assertEqual(cm["metadata"]["name"], SLO_CONFIGMAP)
        self.assertEqual(cm["metadata"]["namespace"], "isoscope")
        self.assertEqual(cm["metadata"]["labels"]["app.kubernetes.io/component"], "slo-rules")
        self.assertEqual(cm["data"], {SLO_DATA.name: SLO_DATA.read_text(),
                                      SLO_RULES.name: SLO_RULES.read_text()})
        if PROMTOOL is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for key, text in cm["data"].items():
                Path(tmp, key).write_text(text)
            proc = run([PROMTOOL, "check", "rules"] + sorted(str(p) for p in Path(tmp).iterdir()))
            self.assertEqual(proc.returncode, 0, describe(proc))

    def test_slo_overlay_replaces_the_slos(self):
        # docs/slo.md: a cluster's own SLO file in an overlay of deploy/slo, in Prometheus'
        # namespace; the generic rules come along unchanged.
        with tempfile.TemporaryDirectory() as tmp:
            own = "groups:\n  - name: isoscope-slo-objectives\n    rules: []\n"
            Path(tmp, "isoscope-slos.yaml").write_text(own)
            Path(tmp, "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\n"
                "kind: Kustomization\n"
                "namespace: monitoring\n"
                "resources:\n"
                f"  - {os.path.relpath(SLO_DIR, tmp)}\n"
                "configMapGenerator:\n"
                f"  - name: {SLO_CONFIGMAP}\n"
                "    behavior: merge\n"
                "    files:\n"
                "      - isoscope-slos.yaml\n")
            proc = run([KUBECTL, "kustomize", tmp])
            self.assertEqual(proc.returncode, 0, describe(proc))
            cm = self.rendered_slo_configmap(parse_documents(proc.stdout))
        self.assertEqual(cm["metadata"]["name"], SLO_CONFIGMAP)
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")
        self.assertEqual(cm["data"], {SLO_DATA.name: own, SLO_RULES.name: SLO_RULES.read_text()})

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
        # BPF + PERFMON, not SYS_ADMIN (measured by test_daemonset.py through a real runtime).
        self.assertTrue({"BPF", "PERFMON"} <= set(caps["add"]))
        self.assertNotIn("SYS_ADMIN", caps["add"])
        self.assertFalse(agent["securityContext"]["allowPrivilegeEscalation"])
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
