"""A gVisor pod, for real: `isoscope trace POD` names its sandbox `gvisor`.

containerd 1.6's CRI plugin (tests/integration/cri_harness.py) runs a pod under a RuntimeClass
handler `runsc`: the runc v2 shim (io.containerd.runc.v2) with BinaryName = a wrapper script around
Debian's runsc (release 20221219; no containerd-shim-runsc-v1 ships here). The agent maps the
pod's runtime handler to sandbox `gvisor` (collectors/identity/cri.cpp SandboxOfHandler).

What the wrapper adds, and why (found on this machine, see ../shared/MACHINE-NOTES.md):
  - `--platform=ptrace`: no usable KVM for gVisor here;
  - `--network=none`: with the pod's CNI network namespace runsc refuses to start ("cannot run
    with network enabled in root network namespace");
  - `runsc start` with stdin/stdout/stderr on /dev/null: for a second container of a sandbox,
    runsc hands the start command's own stdio to the application, and the runc shim runs
    `start` with a pipe it reads to EOF; the application keeps that pipe open for good, so
    StartContainer never returned. (The container's output goes to /dev/null: no container log.)
The runc shim also takes the sandbox process as every container's init process (runsc writes the
sandbox pid to each --pid-file), so stopping a container waits on a process that never exits;
the test kills the pod's processes itself before the harness stops the pods. containerd never
marks the app container exited, so the harness's StopPodSandbox/RemovePodSandbox then log
"failed to kill container ...: sandbox is not running" and its cleanup ends the shim by pid:
expected, and nothing is left behind (checked with leftovers()).

Ground truth: the handler the test gave RunPodSandbox, the pod's name and namespace, and the
processes in the pod's cgroup (runsc-sandbox, gofers, the Sentry's stub processes).
"""

import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

import isoscope_harness as h

h.require_bpf()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cri_harness  # noqa: E402  pylint: disable=wrong-import-position

RUNSC = shutil.which("runsc") or (os.access("/usr/bin/runsc", os.X_OK) and "/usr/bin/runsc")
HANDLER = "runsc"
NAMESPACE = "sandboxes"
POD = "gv-busy"
SPIN = "while :; do :; done"
TRACE_S = 3

WRAPPER = """#!/bin/sh
# runsc as the runc v2 shim's BinaryName (see test_gvisor_pod.py). Global flags go first.
set -- --platform=ptrace --network=none {debug}"$@"
for a; do
  if [ "$a" = start ]; then
    exec {runsc} "$@" </dev/null >/dev/null 2>&1
  fi
done
exec {runsc} "$@"
"""


def _pids_under(path):
    out = []
    for dirpath, _, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    return out


class GvisorPodTest(unittest.TestCase):
    ctrd = None
    tmp = None

    @classmethod
    def setUpClass(cls):
        reason = cri_harness.skip_reason()
        if reason:
            h.skip_module(reason)
        if not RUNSC:
            h.skip_module("runsc not found (package runsc)")
        cls.tmp = tempfile.mkdtemp(prefix="isoscope-gvisor-")
        debug = ""
        if os.environ.get("ISOSCOPE_RUNSC_DEBUG"):  # runsc's own logs, for a failing run
            debug = f"--debug --debug-log={cls.tmp}/runsc-logs/ "
        wrapper = os.path.join(cls.tmp, "runsc-wrapper")
        with open(wrapper, "w", encoding="utf-8") as f:
            f.write(WRAPPER.format(runsc=RUNSC, debug=debug))
        os.chmod(wrapper, 0o755)
        cls.ctrd = cri_harness.Containerd(runtimes={HANDLER: {"options": {"BinaryName": wrapper}}})
        try:
            cls.ctrd.start()
            cls.uid = "6c3d0f2e-0000-4000-8000-00000000a0b1"
            cls.pod = cls.ctrd.run_pod(POD, NAMESPACE, uid=cls.uid, runtime_handler=HANDLER)
            cls.ctr = cls.ctrd.create_container(cls.pod, "app", "busybox", ["sh", "-c", SPIN])
        except Exception as e:
            log = cls.ctrd.log_tail(30)
            cls._teardown()
            if "runsc" in str(e) and ("not supported" in str(e) or "cannot" in str(e)):
                h.skip_module(f"runsc cannot run a CRI pod here: {e}")
            raise AssertionError(f"{e}\n--- containerd log ---\n{log}") from e

    @classmethod
    def _teardown(cls):
        if cls.ctrd is not None and getattr(cls, "pod", None):
            # The runc shim waits on the sandbox process as every container's init: end the
            # pod's processes (runsc-sandbox, gofers, stubs) first, or StopPodSandbox hangs.
            try:
                path = cls.ctrd.pod_cgroup(cls.pod, "pids")
            except Exception:  # pylint: disable=broad-except
                path = None
            for _ in range(50):
                pids = _pids_under(path) if path and os.path.isdir(path) else []
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        if cls.ctrd is not None:
            cls.ctrd.close()
            left = cls.ctrd.leftovers()
            if left:
                h.log("gvisor pod: left behind: " + "; ".join(left))
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        cls._teardown()

    def test_pod_runs_under_gvisor(self):
        status = self.ctrd.pod_status(self.pod)
        self.assertEqual(status["status"].get("runtime_handler"), HANDLER, status["status"])
        self.assertEqual(self.ctrd.container_status(self.ctr)["status"]["state"],
                         "CONTAINER_RUNNING")
        pids = _pids_under(self.ctrd.pod_cgroup(self.pod, "pids"))
        comms = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    comms[pid] = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                pass
        h.log(f"gvisor pod processes: {comms}")
        self.assertTrue(pids, "no process in the pod's cgroup")
        self.assertTrue(any("runsc" in c for c in comms.values()), comms)

    def test_trace_names_the_sandbox_gvisor(self):
        result = h.trace([POD, "-n", NAMESPACE, "--duration", TRACE_S,
                          "--cri-endpoint", self.ctrd.socket])
        self.assertEqual(result.returncode, 0, repr(result))
        self.assertGreaterEqual(len(result.lines), 1, repr(result))
        for line in result.lines:
            t = line["target"]
            self.assertEqual(t.get("sandbox"), "gvisor", h.summary(line))
            self.assertEqual(t["pod"], POD)
            self.assertEqual(t["namespace"], NAMESPACE)
            self.assertEqual(t["pod_uid"], self.uid)
        h.log(f"gvisor pod trace: target {result.lines[0]['target']}; threads "
              f"{[line['threads'] for line in result.lines]}")
        self.assertTrue(any(line["threads"] > 0 for line in result.lines),
                        [h.summary(line) for line in result.lines])


if __name__ == "__main__":
    unittest.main()
