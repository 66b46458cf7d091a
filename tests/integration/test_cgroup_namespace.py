"""`isoscope trace` from inside a private cgroup namespace (what `kubectl exec` into the agent's pod
gives on a cgroup v2 node, where containerd makes one per container): the target's /proc/PID/cgroup
then reads "/../<path>" relative to the reader's namespace root, and the target must still resolve
to its real cgroup. Made for real with `unshare --cgroup` from inside a cgroup of its own.
"""

import shutil
import subprocess
import unittest

import isoscope_harness as h
from isoscope_harness import Processes, cgroup

THROTTLE = "container.cpu_throttle"


class CgroupNamespaceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.require_bpf()
        if not shutil.which("unshare"):
            h.skip_module("unshare not installed (package util-linux)")

    def test_trace_pid_from_a_private_cgroup_namespace(self):
        with Processes() as procs, cgroup("cpu") as target, cgroup("cpu") as reader:
            target.set_cpu_quota(20000)
            spin = procs.start(["spin", 30], cgroups=[target])
            # The scenario, checked: inside the namespace the target's path climbs above its root.
            # (It waits for a line on stdin, so it is still there when start() checks that it
            # joined the reader cgroup.)
            seen = procs.start(["/usr/bin/unshare", "--cgroup", "sh", "-c",
                                f"read go; cat /proc/{spin.pid}/cgroup"],
                               cgroups=[reader], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
            out, _ = seen.communicate(input="go\n", timeout=10)
            cpu_line = next(l for l in out.splitlines() if ":cpu" in l.split(":")[1].split(",")
                            or "cpu" in l.split(":")[1].split(","))
            self.assertTrue(cpu_line.split(":", 2)[2].startswith("/.."), out)
            trace = procs.start(["/usr/bin/unshare", "--cgroup", str(h.BIN), "trace", "--pid",
                                 spin.pid, "--duration", 3, "--interval", 1, "--json"],
                                cgroups=[reader], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
            stdout, stderr = trace.communicate(timeout=60)
        self.assertEqual(trace.returncode, 0, stderr)
        import json  # pylint: disable=import-outside-toplevel

        lines = [json.loads(l) for l in stdout.splitlines() if l.strip()]
        self.assertGreaterEqual(len(lines), 3, stdout)
        for line in lines:
            self.assertEqual(line["target"]["cgroup"], target.relative, line["target"])
        for line in lines[1:]:
            self.assertEqual(h.verdict(line), THROTTLE, h.summary(line))
            self.assertEqual(line["threads"], 1, h.summary(line))


if __name__ == "__main__":
    unittest.main()
