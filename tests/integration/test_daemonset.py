"""The DaemonSet, run by a real container runtime: the agent's image (scripts/build-image.py, what
`make image` builds) started as a container through containerd's CRI with the pod settings that
`kubectl kustomize deploy/` renders (hostPID, hostNetwork, capabilities, read-only root, seccomp
and AppArmor, resources, every volume), read from the rendered YAML. No kubelet runs here, so the
test translates the pod spec into CRI calls the way a kubelet would (tests/integration/
cri_harness.py). Where this machine cannot be the cluster, the test changes only this, and says so:
  - hostPath /run/containerd -> the test runtime's own directory (its socket is not in /run);
  - hostPath /run/crio -> an empty directory (no CRI-O here);
  - --otlp-endpoint -> a collector on this host (tests/otlp/collector.js), not the cluster Service;
  - NODE_NAME (downward API) -> a literal.

Beside it, through the same CRI: a CPU-limited busy pod, a healthy pod, and an OpenTelemetry-traced
HTTP server pod (node with the real JS SDK, tests/otlp/http_server.js) exporting OTLP to the agent
at the node's address (the bridge gateway, as status.hostIP would give). Checked: `isoscope trace
<pod> -n <ns>` exec'd in the agent's container names the pod and blames container.cpu_throttle, the
healthy pod gets none; /metrics carries namespace/pod/container; the forwarded spans carry
k8s.pod.name, k8s.namespace.name, k8s.container.name and k8s.node.name.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
import uuid
from pathlib import Path

import isoscope_harness as h

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cri_harness  # noqa: E402  pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[2]
THROTTLE = "container.cpu_throttle"
SPIN = "while :; do :; done"
SLEEP = "while :; do sleep 0.2; done"
NODE_NAME = "isoscope-test-node"


def render_daemonset():
    import yaml  # pylint: disable=import-outside-toplevel

    out = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy")], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "DaemonSet":
            return doc
    raise AssertionError("kubectl kustomize deploy/ rendered no DaemonSet")


# Capability numbers (linux/capability.h) of those the DaemonSet may add.
CAP_BITS = {"SYS_ADMIN": 21, "SYS_RESOURCE": 24, "PERFMON": 38, "BPF": 39, "NET_ADMIN": 12,
            "SYS_PTRACE": 19}


def bounding_caps():
    """Capabilities this machine's root may hand to a container (CapBnd of this process)."""
    with open("/proc/self/status", encoding="ascii") as f:
        bnd = int(next(l for l in f if l.startswith("CapBnd:")).split()[1], 16)
    return {name for name, bit in CAP_BITS.items() if bnd >> bit & 1}


def quantity_cpu_millis(q):
    q = str(q)
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def quantity_bytes(q):
    q = str(q)
    for suffix, mult in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if q.endswith(suffix):
            return int(q[: -len(suffix)]) * mult
    return int(q)


class DaemonSetTest(unittest.TestCase):
    ctrd = None
    collector = None

    @classmethod
    def setUpClass(cls):
        h.require_bpf()
        reason = cri_harness.skip_reason()
        if not reason and not shutil.which("kubectl"):
            reason = "kubectl not installed (it renders deploy/)"
        if reason:
            h.skip_module(reason)
        sys.path.insert(0, str(h.OTLP_DIR))
        import node_env  # pylint: disable=import-outside-toplevel

        node_env.ensure(h.NODE_DIR)
        cls.env = node_env.node_env(h.NODE_DIR)
        cls.tmp = tempfile.mkdtemp(prefix="isoscope-ds-")
        cls.ds = render_daemonset()
        cls.spec = cls.ds["spec"]["template"]["spec"]
        cls.ctrd = cri_harness.Containerd()
        try:
            cls._set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _set_up(cls):
        c = cls.ctrd
        c.start()
        # The upstream collector (stands in for the cluster's OpenTelemetry Collector).
        cls.collector_port = h.free_port()
        cls.collector_out = os.path.join(cls.tmp, "upstream.jsonl")
        cls.collector = h.start_collector(cls.env, cls.collector_out, cls.collector_port)
        cls.image = c.build_agent_image(h.BIN)
        cls.agent_pod, cls.agent = cls._start_agent_pod()
        cls._wait_agent()
        # The workloads.
        cls.busy_pod = c.run_pod("busy", "shop")
        cls.busy_ctr = c.create_container(cls.busy_pod, "app", "busybox", ["sh", "-c", SPIN],
                                          cpu_quota_us=20000)
        cls.idle_pod = c.run_pod("idle", "shop")
        c.create_container(cls.idle_pod, "app", "busybox", ["sh", "-c", SLEEP])
        cls.web_pod, cls.web_port = cls._start_web_pod()

    @classmethod
    def tearDownClass(cls):
        if cls.ctrd is not None:
            if getattr(cls, "agent", None) and os.environ.get("ISOSCOPE_KEEP_LOGS"):
                h.log(cls.ctrd.log_tail(80))
            cls.ctrd.stop()
        if cls.collector is not None:
            h.stop(cls.collector)
        shutil.rmtree(getattr(cls, "tmp", "/nonexistent"), ignore_errors=True)

    # ---- the agent's pod, from the rendered DaemonSet ------------------------------------------

    @classmethod
    def _start_agent_pod(cls, without_cap=None, command=None):
        spec = cls.spec
        ctr = spec["containers"][0]
        annotations = cls.ds["spec"]["template"]["metadata"].get("annotations", {})
        cls.pod_name = "isoscope-" + uuid.uuid4().hex[:5]
        pod = cls.ctrd.run_pod(
            cls.pod_name, cls.ds["metadata"]["namespace"],
            host_network=bool(spec.get("hostNetwork")), host_pid=bool(spec.get("hostPID")),
            labels=cls.ds["spec"]["template"]["metadata"].get("labels", {}),
            annotations=annotations)
        # Volumes: hostPath -> CRI mounts (the two runtime directories mapped, see the docstring).
        crio = os.path.join(cls.tmp, "crio")
        os.makedirs(crio, exist_ok=True)
        host_paths = {"/run/containerd": str(cls.ctrd.tmp), "/run/crio": crio}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = []
        for vm in ctr.get("volumeMounts", []):
            vol = volumes[vm["name"]]
            assert "hostPath" in vol, f"volume {vm['name']}: only hostPath volumes are run here"
            path = vol["hostPath"]["path"]
            mounts.append({"host_path": host_paths.get(path, path),
                           "container_path": vm["mountPath"],
                           "readonly": bool(vm.get("readOnly", False))})
        sc = ctr.get("securityContext", {})
        caps = sc.get("capabilities", {})
        seccomp = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
        apparmor = annotations.get(f"container.apparmor.security.beta.kubernetes.io/{ctr['name']}",
                                   "runtime/default")
        # A runtime cannot grant what its own root lacks (here: SYS_RESOURCE, see
        # shared/MACHINE-NOTES.md); such a capability is left out, and said.
        have = bounding_caps()
        add = [cap for cap in caps.get("add", []) if cap not in CAP_BITS or cap in have]
        for cap in sorted(set(caps.get("add", [])) - set(add)):
            h.log(f"DaemonSet capability {cap} is not in this machine's bounding set: not added")
        if without_cap is not None:
            add = [cap for cap in add if cap != without_cap]
        security = {
            "capabilities": {"add_capabilities": add,
                             "drop_capabilities": caps.get("drop", [])},
            "privileged": bool(sc.get("privileged", False)),
            "readonly_rootfs": bool(sc.get("readOnlyRootFilesystem", False)),
            "run_as_user": {"value": int(sc.get("runAsUser", 0))},
            "no_new_privs": not sc.get("allowPrivilegeEscalation", True),
            "seccomp": {"profile_type": "Unconfined" if seccomp == "Unconfined"
                        else "RuntimeDefault"},
            "apparmor": {"profile_type": "Unconfined" if apparmor == "unconfined"
                         else "RuntimeDefault"},
        }
        args = list(ctr.get("args", []))
        i = args.index("--otlp-endpoint")
        args[i + 1] = f"127.0.0.1:{cls.collector_port}"
        limits = ctr.get("resources", {}).get("limits", {})
        envs = {}
        for e in ctr.get("env", []):
            envs[e["name"]] = NODE_NAME if e["name"] == "NODE_NAME" else e.get("value", "")
        image = ctr["image"]
        cls.assert_image_is_imported(image)
        if command is not None:  # the same container, running another command
            args = command
        cid = cls.ctrd.create_container(
            pod, ctr["name"], cls.image, ctr.get("command", []), args,
            cpu_quota_us=quantity_cpu_millis(limits["cpu"]) * 100 if "cpu" in limits else None,
            memory_limit_bytes=quantity_bytes(limits["memory"]) if "memory" in limits else None,
            mounts=mounts, security_context=security, envs=envs)
        if command is not None:
            return pod, cid
        cls.metrics_port = next(p["containerPort"] for p in ctr["ports"] if p["name"] == "metrics")
        cls.otlp_port = next(p["containerPort"] for p in ctr["ports"] if p["name"] == "otlp-grpc")
        return pod, cid

    @classmethod
    def assert_image_is_imported(cls, image):
        # `isoscope:latest` in the DaemonSet is docker.io/library/isoscope:latest to the runtime.
        name = image if "/" in image else "docker.io/library/" + image
        if name != cls.image:
            raise AssertionError(f"the DaemonSet runs {image} ({name}), the image built is "
                                 f"{cls.image}")

    @classmethod
    def _wait_agent(cls):
        deadline = time.monotonic() + 90
        last = ""
        while time.monotonic() < deadline:
            status = cls.ctrd.container_status(cls.agent)
            state = json.dumps(status)[:2000]
            if "CONTAINER_EXITED" in state:
                raise RuntimeError(f"the agent container exited: {state}\n"
                                   f"{cls.container_log()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{cls.metrics_port}/metrics", timeout=2) as r:
                    if "isoscope_records_received_total" in r.read().decode():
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.5)
        raise RuntimeError(f"the agent container did not serve /metrics in 90 s ({last}):\n"
                           f"{json.dumps(cls.ctrd.container_status(cls.agent))[:3000]}\n"
                           f"{cls.container_log()}")

    @classmethod
    def container_log(cls):
        logs = list(Path(cls.ctrd.tmp, "pods").rglob("*.log"))
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-4000:]}" for p in logs
                         if "isoscope-" in str(p))

    # ---- the traced web pod ---------------------------------------------------------------------

    @classmethod
    def _start_web_pod(cls):
        c = cls.ctrd
        node = shutil.which("node")
        image = c.build_image("localhost/isoscope-test/node:latest", {"/usr/bin/node": node},
                              entrypoint=["/usr/bin/node"], dirs=["/tmp"])
        pod = c.run_pod("web", "shop")
        port = 8080
        c.create_container(
            pod, "server", image,
            ["/usr/bin/node", "/otlp/http_server.js", "--host", "0.0.0.0", "--port", str(port),
             "--endpoint", f"{c.gateway}:{cls.otlp_port}", "--service", "web", "--work-ms", "5"],
            mounts=[(str(h.OTLP_DIR), "/otlp", True),
                    (str(Path(h.NODE_DIR) / "node_modules"), "/node_modules", True)],
            envs={"NODE_PATH": "/node_modules"})
        ip = c.pod_ip(pod)
        h.wait_until(lambda: cls._http_ok(ip, port), timeout=60, interval=0.5,
                     what=f"the web pod listening on {ip}:{port}")
        cls.web_ip = ip
        return pod, port

    @staticmethod
    def _http_ok(ip, port, headers=None):
        try:
            req = urllib.request.Request(f"http://{ip}:{port}/work", headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return None

    # ---- tests ------------------------------------------------------------------------------------

    def exec_trace(self, args):
        r = self.ctrd.exec(self.agent, ["isoscope", "trace"] + [str(a) for a in args] + ["--json"],
                           timeout=60)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        return r, lines

    def test_a_trace_in_the_agent_container_names_the_pod_and_blames_throttle(self):
        r, lines = self.exec_trace(["busy", "-n", "shop", "--duration", 3])
        self.assertEqual(r.exit_code, 0, r.stderr)
        self.assertGreaterEqual(len(lines), 3, r)
        for line in lines:
            self.assertEqual(line["target"]["pod"], "busy")
            self.assertEqual(line["target"]["namespace"], "shop")
        for line in lines[1:]:
            self.assertEqual(h.verdict(line), THROTTLE, h.summary(line))
            self.assertGreaterEqual(h.seconds(line, THROTTLE), 0.6 * line["interval_s"],
                                    h.summary(line))

    def test_b_healthy_pod_gets_none_in_the_container_and_from_the_host(self):
        r, lines = self.exec_trace(["idle", "-n", "shop", "--duration", 3])
        self.assertEqual(r.exit_code, 0, r.stderr)
        for line in lines[1:]:
            self.assertEqual(h.verdict(line), "none", h.summary(line))
        host = h.trace(["busy", "-n", "shop", "--duration", 2, "--interval", 1,
                        "--cri-endpoint", self.ctrd.socket])
        self.assertEqual(host.returncode, 0, repr(host))
        self.assertEqual(host.lines[-1]["target"]["pod"], "busy")
        self.assertEqual(h.verdict(host.lines[-1]), THROTTLE, h.summary(host.lines[-1]))

    def test_c_errors_in_the_container(self):
        r, _ = self.exec_trace(["bussy", "-n", "shop", "--duration", 1])
        self.assertEqual(r.exit_code, 2, r.stderr)
        self.assertIn("did you mean shop/busy", r.stderr)
        self.assertIn(NODE_NAME, r.stderr)

    def test_d_metrics_carry_namespace_pod_container(self):
        def scrape():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=5) as r:
                return r.read().decode()

        want = (f'container="app",container_id="{self.busy_ctr}",layer="container",'
                'namespace="shop",pod="busy"')
        h.wait_until(lambda: want in scrape(), timeout=30, interval=0.5,
                     what="the busy pod's series with its names")
        text = scrape()
        line = next(l for l in text.splitlines()
                    if l.startswith("isoscope_cause_seconds_total{") and want in l
                    and f'cause="{THROTTLE}"' in l)
        self.assertGreater(float(line.rsplit(" ", 1)[1]), 0.0, line)

    def test_e_forwarded_spans_carry_kubernetes_names(self):
        sent = []
        for i in range(20):
            trace_id = uuid.uuid4().hex
            parent = uuid.uuid4().hex[:16]
            got = self._http_ok(self.web_ip, self.web_port,
                                {"traceparent": f"00-{trace_id}-{parent}-01"})
            self.assertIsNotNone(got, f"request {i} failed")
            sent.append(got["traceId"])
            time.sleep(0.05)

        def forwarded():  # collector.js: one decoded span per line, with its resource
            return {s["traceId"]: s for s in h.read_jsonl(self.collector_out)
                    if s.get("kind") == 2}  # SPAN_KIND_SERVER

        h.wait_until(lambda: sum(t in forwarded() for t in sent) == len(sent), timeout=30,
                     interval=0.5, what="all spans forwarded to the collector")
        spans = forwarded()
        bound = 0
        for t in sent:
            names = spans[t]["resource"]
            if names.get("k8s.pod.name") is None:
                continue
            bound += 1
            self.assertEqual(names["k8s.pod.name"], "web", names)
            self.assertEqual(names["k8s.namespace.name"], "shop", names)
            self.assertEqual(names["k8s.container.name"], "server", names)
            self.assertEqual(names["k8s.node.name"], NODE_NAME, names)
        h.log(f"spans forwarded {len(sent)}, with k8s names {bound}")
        # Every span whose request the kernel saw is named; allow the first one or two to race
        # the pod's first index (a cgroup the background rebuild has not named yet).
        self.assertGreaterEqual(bound, len(sent) - 2, spans[sent[0]])

    def test_f_each_added_capability_is_needed(self):
        """Least privilege, measured: the DaemonSet's container runs `isoscope doctor --json` with
        its capabilities, then without each added one in turn: each must be needed (fewer
        programs load without it). The spec adds no SYS_ADMIN: every program loads without it."""
        added = [c for c in self.spec["containers"][0]["securityContext"]["capabilities"]["add"]
                 if c in bounding_caps()]
        full = self._doctor(None)
        self.assertTrue(full["ok"], full)
        results = {}
        for cap in added:
            results[cap] = self._doctor(cap)
        h.log("doctor without each capability: " + ", ".join(
            f"{cap}: {r['loaded']}/{full['loaded']} programs" for cap, r in results.items()))
        for cap, r in results.items():
            self.assertLess(r["loaded"], full["loaded"],
                            f"without {cap} the agent still loads every program: drop {cap}")
        self.assertNotIn("SYS_ADMIN", added)
        self.assertGreater(full["loaded"], 15, full)

    def _doctor(self, without_cap):
        pod, cid = self._start_agent_pod(without_cap=without_cap,
                                         command=["doctor", "--json"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.dumps(self.ctrd.container_status(cid))
            if "CONTAINER_EXITED" in status:
                break
            time.sleep(0.3)
        text = "".join(p.read_text(errors="replace")
                       for p in Path(self.ctrd.tmp, "pods").rglob("*.log")
                       if f"_{self.pod_name}_" in str(p))
        self.ctrd.stop_pod(pod)
        self.ctrd.remove_pod(pod)
        doc = None
        pending = ""
        # CRI log lines: "<time> stdout P|F <text>"; P is a part of a longer line, F its end.
        for line in text.splitlines():
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] != "stdout":
                continue
            pending += parts[3] if len(parts) == 4 else ""
            if parts[2] == "F":
                if pending.startswith("{"):
                    doc = json.loads(pending)
                pending = ""
        if doc is None:
            return {"ok": False, "loaded": 0, "log": text[-2000:]}
        loaded = sum(1 for p in doc["programs"] if p.get("available"))
        return {"ok": True, "loaded": loaded}


if __name__ == "__main__":
    unittest.main()
