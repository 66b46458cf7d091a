"""Checks of the deployment artefacts in deploy/ with the real tools.

Needs no root and no BPF: promtool validates and unit-tests the alert rules, kubectl renders the
Kustomize tree, and the Grafana dashboard is parsed as JSON. A check is skipped only when the tool
it needs is not installed (promtool: package `prometheus`; kubectl: package `kubernetes-client`).

Run by ctest as `python3 test_deploy.py -v` from the build directory; paths are taken from this
file's location, not from the working directory.
"""

import json
import shutil
import subprocess
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "alerts" / "isoscope-rules.yaml"
RULE_TESTS = DEPLOY / "alerts" / "isoscope-rules.test.yaml"
DASHBOARD = DEPLOY / "dashboards" / "isoscope.json"

PROMTOOL = shutil.which("promtool")
KUBECTL = shutil.which("kubectl")

ALERTS = [
    "IsoscopeCpuThrottleHigh",
    "IsoscopeRunqueueHigh",
    "IsoscopeMemoryReclaimStalls",
    "IsoscopeRecordsLost",
    "IsoscopeProbeDown",
]

DASHBOARD_PANELS = [
    "Share of thread time by cause",
    "Throttle seconds/s",
    "Run-queue seconds/s",
    "Verdicts by cause",
    "Records lost",
    "BPF ns per event",
]


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
        self.assertEqual(agent["args"], ["agent", "--metrics-addr", "0.0.0.0:9464"])

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


class DashboardTest(unittest.TestCase):
    def test_dashboard_is_json_with_the_panels(self):
        dashboard = json.loads(DASHBOARD.read_text())
        titles = [p["title"] for p in dashboard["panels"] if p.get("type") != "row"]
        for title in DASHBOARD_PANELS:
            with self.subTest(panel=title):
                self.assertIn(title, titles)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                self.assertIn("isoscope_", target["expr"])


if __name__ == "__main__":
    unittest.main()
