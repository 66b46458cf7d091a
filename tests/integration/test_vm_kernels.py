"""The agent on a second kernel, for real: each kernel in tests/vm/kernels.txt boots under QEMU.

For every kernel listed in tests/vm/kernels.txt (today Debian's cloud kernel 6.1: pure cgroup v2,
kprobes, fentry, the pre-6.18 CFS throttling), tests/vm/run_vm.py fetches the Debian package into
the build tree's cache (<build>/vm-cache, or $ISOSCOPE_VM_CACHE), builds a busybox initramfs with
this build's agent and workloads, boots it under QEMU (software emulation) and runs the guest
scenarios in tests/vm/guest/scenarios. The assertions are the host tests' verdicts and tolerances:

  doctor     exit 0, cgroup_mode v2, container layer and all its causes available, every
             program group loaded (nothing failed to load or verify), the kernel's declared
             features (fentry, kprobe) available and then the optional unthrottle program on
  throttle   spin in a cgroup with cpu.max "20000 100000": every interval's verdict
             container.cpu_throttle with share >= 0.6; throttle seconds within 15% of the
             kernel's own cpu.stat throttled_usec delta over the same intervals
  unthrottle the same spin traced at the same time with and without --no-optional-probes:
             with the unthrottle program, throttle + run-queue equal the tracepoint-only
             throttle + run-queue (same off-CPU time, within 10%), split into both causes
  runqueue   spin pinned to CPU 1 with two spinning competitors there: container.runqueue,
             share 0.67 +- 0.1
  sleeper    a mostly sleeping process: verdict none, throttle + run-queue < 0.05
  identity   a process in kubepods.slice/.../kubepods-burstable-pod<uid>.slice/
             cri-containerd-<id>.scope: the trace target carries pod_uid (dashed) and
             container_id, by --pid and by --cgroup
  virtio     a TCP ping-pong client (tests/workloads/pingpong.c, 100-byte requests 20 ms
             apart) to the host's echo server over each of two virtio-net NICs on QEMU's user
             network, one of them with QEMU's TX timer (the device model flushes its TX
             virtqueue only 20 ms after the guest's notification: run_vm.VIRTIO_NICS): the slow
             NIC's round trip is >= 5 ms longer (else the set-up is broken); its trace has
             network.virtio.queue rows (slice virtio, mechanism queue) whose seconds per
             request match the round-trip excess over the fast NIC (0.7x to 1.3x); the fast
             NIC's trace has network.virtio.queue < 0.10 of the interval (TCG's own
             device-model latency)
  kvm        nested KVM (the guest's CPU is qemu64,+svm; kvm-amd loaded): tests/workloads/
             tinyvmm.c, one vCPU on its main thread pinned to CPU 1, makes N = 20 port-I/O
             exits, each handled in user space with a 5 ms busy wait, then a CPU loop, one
             loop-end port exit and HLT; it starts only once the agent (--pid) printed its first
             line. Run a (no competitor, HLT kept in the kernel for 300 ms by an in-kernel
             irqchip): the vcpus exit rows of kind kernel, reason io, sum to exactly the VMM's
             own count of I/O exits (N + the loop-end exit), and so do those of kind vmm;
             paravirt.vmm_exit summed over the run is 0.8x-1.25x the VMM's measured handling
             time and 0.8x-1.25x N x 5 ms; vcpus halted_s is 0.8x-1.25x the VMM's measured
             halt; no interval has the verdict hypervisor.steal. Run b (the same, a longer
             loop, a spinning hog pinned to CPU 1 while the loop runs): the same exit and
             vmm_exit checks; every undisturbed interval inside the hog's window has the
             verdict hypervisor.steal with a share within +-0.1 of the vCPU thread's own
             run-queue wait in that interval (/proc/PID/schedstat run_delay, sampled as each
             line arrived, divided by the interval: ~0.5 with one equal-weight hog)
  virtioblk  O_DIRECT 4 KiB random reads (tests/workloads/directread.c) of two virtio-blk
             disks (run_vm.VIRTIO_DISKS), traced by --pid: the slow disk (QEMU throttling,
             50 IOPS: ~20 ms a read) has paravirt.virtio_blk seconds per read 0.7x-1.3x the
             reader's measured mean read latency and that verdict; the fast disk, read every
             10 ms, has a paravirt.virtio_blk share < 0.2 of each interval; the fast disk read
             back to back from a cgroup with io.max riops=50 has the verdict
             container.io_throttle and io_throttle seconds within 20% of the reader's excess
             wait (its total read time minus reads x the fast run's mean read latency)

The guest boots with both NICs (left down by every scenario but virtio), both disks, the
virtio-net, virtio-blk and KVM modules of kernels.txt; a threaded echo server on the host's
127.0.0.1 (run_vm.EchoServer) runs while the guest boots, its port on the kernel command line
(isoscope.echo_port=).

Emulation on a busy host: the guest runs only when QEMU's threads get host CPU. Now and then the
VM stalls for seconds; inside the guest, time jumps while nothing ran, which corrupts that one
interval for the kernel's own accounting as much as for the agent. The agent runs pinned to the
otherwise idle guest CPU 0, so such a stall shows as a stretched interval (> 1.2 s for 1 s asked).
Stretched intervals are left out of the assertions (and logged); a scenario with too few
undisturbed intervals left, or a boot where a CPU failed to come up, is booted again (MAX_BOOTS
in all). The kvm scenario has one more sign of a stall: the VMM's busy waits (each ends at its
CLOCK_MONOTONIC deadline) took more than 10% longer in all than N x delay; such a run is booted
again too. A scenario that fails without those signs fails at once.

Exit 77 (skipped) only when QEMU or the kernel cannot be obtained for a reason outside the
project: qemu-system-x86_64 not installed, or no way to reach the Debian mirror and no cached
kernel. Everything else, a guest that does not boot included, is a failure. Needs no root.
Environment: ISOSCOPE_BIN, ISOSCOPE_WORKLOADS (set by ctest), ISOSCOPE_VM_CACHE (optional).
"""

import json
import os
import sys
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "vm"))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import run_vm  # noqa: E402  pylint: disable=wrong-import-position

ISOSCOPE = Path(os.environ.get("ISOSCOPE_BIN", REPO / "build" / "isoscope"))
WORKLOADS = Path(os.environ.get("ISOSCOPE_WORKLOADS", REPO / "build" / "workloads"))
CACHE = run_vm.default_cache(ISOSCOPE)
KERNELS = run_vm.load_kernels()

# Filled by main() before the tests run: kernel name -> (kernel_dir, initrd).
PREPARED = {}
QEMU = None

THROTTLE = "container.cpu_throttle"
RUNQUEUE = "container.runqueue"
MAX_BOOTS = 4
INTERVAL_S = 1.0  # --interval of every guest trace
STRETCH = 0.2  # an interval this much longer than asked: the VM stalled during it
# Trace runs of the guest scenarios: name -> intervals asked for (--duration / --interval).
TRACES = {"throttle.opt": 4, "throttle.tp": 4, "runqueue": 4, "sleeper": 3,
          "identity.pid": 2, "identity.cgroup": 2, "virtio.fast": 4, "virtio.slow": 4}
VIRTIO = "network.virtio.queue"
# Causes of the hypervisor and paravirt layers (the kvm and virtioblk scenarios).
STEAL = "hypervisor.steal"
VMM_EXIT = "paravirt.vmm_exit"
VIRTIO_BLK = "paravirt.virtio_blk"
IO_THROTTLE = "container.io_throttle"
KVM_EXITS = 20  # KVM_N in tests/vm/guest/scenarios/70-kvm.sh
KVM_DELAY_S = 0.005  # KVM_DELAY_US


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def seconds(line, cause):
    return sum(b["seconds"] for b in line["breakdown"] if b["cause"] == cause)


def trace_lines(results, name):
    out = []
    for raw in results.get(f"{name}.trace", "").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            pass
    return out


def virtio_seconds(line):
    """Seconds of the interval's network rows of slice virtio, mechanism queue."""
    return sum(b["seconds"] for b in line["breakdown"]
               if b.get("slice") == "virtio" and b.get("mechanism") == "queue"
               and b["cause"] == VIRTIO)


def rtt_stats(text):
    """pingpong's "rtt_ms p50=.. mean=.. max=.. n=.. elapsed_s=.." line as a dict of floats
    (empty when there is none)."""
    for line in text.splitlines():
        if line.startswith("rtt_ms "):
            return {k: float(v) for k, v in (w.split("=", 1) for w in line.split()[1:])}
    return {}


def stretched(line):
    return line["interval_s"] > INTERVAL_S * (1 + STRETCH)


def cpustat_rows(results, name):
    """[(uptime_ms, throttled_usec, nr_throttled)]: at the start, then after each line."""
    rows = []
    for raw in results.get(f"{name}.cpustat", "").splitlines():
        try:
            rows.append(tuple(int(x) for x in raw.split()))
        except ValueError:
            pass
    return rows


def bracketed(results, name):
    """(interval line, kernel throttled seconds) for the undisturbed intervals after the first:
    cpu.stat was read as each line arrived, so rows i and i+1 bracket interval i (0-based,
    i >= 1). An interval counts when the agent's interval was not stretched and the two reads
    are as far apart as the interval is long (no stall between a line and its read either)."""
    lines, rows = trace_lines(results, name), cpustat_rows(results, name)
    out = []
    for i in range(1, min(len(lines), len(rows) - 1)):
        dt = (rows[i + 1][0] - rows[i][0]) / 1000
        if not stretched(lines[i]) and abs(dt - lines[i]["interval_s"]) <= STRETCH:
            out.append((lines[i], (rows[i + 1][1] - rows[i][1]) / 1e6))
    return out


def usable(results, name):
    """The undisturbed intervals after the first (the first one includes the agent's start)."""
    if name.startswith("throttle."):
        return [l for l, _ in bracketed(results, name)]
    return [l for l in trace_lines(results, name)[1:] if not stretched(l)]


def json_block(results, name):
    """The one JSON object a result block holds (a workload's --json line), or None."""
    for raw in results.get(name, "").splitlines():
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return None


def number_rows(results, name):
    """Whitespace-separated integer rows of a result block (rows may be shorter once the
    sampled process has exited)."""
    rows = []
    for raw in results.get(name, "").splitlines():
        try:
            rows.append(tuple(int(x) for x in raw.split()))
        except ValueError:
            pass
    return [r for r in rows if r]


def hog_window_ms(results, name):
    """(start, end) uptime ms of the kvm scenario's hog, or None when it did not run."""
    kv = dict(l.split(None, 1) for l in results.get(f"{name}.hog", "").splitlines() if l.strip())
    if "start" not in kv or "end" not in kv:
        return None
    return int(kv["start"]), int(kv["end"])


def steal_intervals(results, name="kvm.b"):
    """(interval line, expected steal share) for the intervals of run `name` that lie inside
    the hog's window (and before the guest loop's end), undisturbed.

    The scenario sampled the vCPU thread's /proc/PID/schedstat (run_delay: its time runnable
    but not running) at the start and as each line arrived, so rows j and j+1 bracket line j
    (j >= 1). An interval counts when its window [arrival - interval_s, arrival] starts at
    least 50 ms after the hog started and ends before the hog stopped and before the guest
    loop ended, the interval is not stretched and the bracket is as long as the interval. The
    expected share is the bracket's run_delay growth over the bracket's length: what the
    vCPU thread itself waited for CPU 1 in that interval (the loop never sleeps, so its thread
    time is the interval)."""
    lines, rows = trace_lines(results, name), number_rows(results, f"{name}.sched")
    hog, vmm = hog_window_ms(results, name), json_block(results, f"{name}.vmm")
    if not hog or not vmm:
        return []
    stop_ms = min(hog[1], vmm["t_loop_end"] * 1000)
    out = []
    for j in range(1, min(len(lines), len(rows) - 1)):
        r0, r1, line = rows[j], rows[j + 1], lines[j]
        if len(r0) < 3 or len(r1) < 3 or stretched(line):
            continue
        dt_ms = r1[0] - r0[0]
        if dt_ms <= 0 or abs(dt_ms / 1000 - line["interval_s"]) > STRETCH:
            continue
        start_ms = r1[0] - line["interval_s"] * 1000
        if start_ms < hog[0] + 50 or r1[0] > stop_ms:
            continue
        out.append((line, (r1[2] - r0[2]) / 1e6 / dt_ms))
    return out


def delays_disturbed(vmm):
    """True when tinyvmm's busy waits (each ends at its deadline on CLOCK_MONOTONIC) took more
    than 10% longer in all than KVM_EXITS x KVM_DELAY_S: the VM stalled (QEMU's vCPU thread
    lost the host CPU) during one of them, so N x delay is not what the VMM spent."""
    nominal = KVM_EXITS * KVM_DELAY_S
    return bool(vmm) and abs(vmm.get("delay_s", nominal) - nominal) > 0.1 * nominal


def reading_intervals(results, name):
    """The virtioblk run's undisturbed intervals after the first (which ends when the reader
    is released) in which the reader lived at least 0.2 s."""
    return [l for l in trace_lines(results, name)[1:]
            if not stretched(l) and l["thread_seconds"] >= 0.2]


def starvation(results, scenario):
    """Reasons to run a scenario again: one of its traces has too few undisturbed intervals
    (at least min(2, asked - 1) after the first; for kvm, two judged steal intervals; for
    virtioblk, one reading interval per run). Empty when the run can be judged."""
    reasons = []
    # kvm and virtioblk: only a stall (a stretched interval) is a reason to boot again; too
    # few intervals without one is the agent's failure, for the test to report.
    if scenario == "kvm":
        long = [round(l["interval_s"], 2) for l in trace_lines(results, "kvm.b") if stretched(l)]
        if long and len(steal_intervals(results)) < 2:
            reasons.append(f"kvm.b: {len(steal_intervals(results))} undisturbed intervals in the "
                           f"hog's window (stretched: {long})")
        for run in ("kvm.a", "kvm.b"):
            if delays_disturbed(json_block(results, f"{run}.vmm")):
                reasons.append(f"{run}: the VMM's busy waits took "
                               f"{json_block(results, f'{run}.vmm')['delay_s']:.4f} s for "
                               f"{KVM_EXITS} x {KVM_DELAY_S} s (VM stall)")
    if scenario == "virtioblk":
        for run in ("virtioblk.slow", "virtioblk.fast", "virtioblk.throttle"):
            long = [round(l["interval_s"], 2) for l in trace_lines(results, run) if stretched(l)]
            if long and not reading_intervals(results, run):
                reasons.append(f"{run}: no undisturbed interval with the reader in it "
                               f"(stretched: {long})")
    for name, asked in TRACES.items():
        if name.split(".")[0] != scenario or f"{name}.trace" not in results:
            continue
        lines = trace_lines(results, name)
        long = [round(l["interval_s"], 2) for l in lines if stretched(l)]
        got, need = len(usable(results, name)), min(2, asked - 1)
        if got < need:
            reasons.append(f"{name}: {got} undisturbed intervals of {len(lines)} "
                           f"(stretched: {long})")
    return reasons


class VmKernelChecks:
    """The checks; one unittest.TestCase per kernel is generated from this below."""

    kernel = None
    results = None
    boot_error = None
    hangs = ()

    @classmethod
    def setUpClass(cls):
        # The virtio scenario's peer: reached from the guest through either NIC.
        cls.echo = run_vm.EchoServer().start()
        try:
            cls.boot_all()
        except BaseException:
            cls.echo.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.echo.stop()

    @classmethod
    def boot_all(cls):
        kernel_dir, initrd = PREPARED[cls.kernel.name]
        cls.kernel_dir = kernel_dir
        cls.results, cls.hangs = {}, []
        append = " ".join(x for x in (cls.kernel.append, f"isoscope.echo_port={cls.echo.port}")
                          if x)
        release = (kernel_dir / "release").read_text().strip()
        pending, t0 = None, time.monotonic()
        for attempt in range(1, MAX_BOOTS + 1):
            suffix = "" if attempt == 1 else str(attempt)
            log_path = CACHE / "logs" / f"{cls.kernel.name}.console{suffix}.log"
            try:
                vm = run_vm.boot(QEMU, kernel_dir, initrd, scenarios=pending, timeout_s=750,
                                 boot_timeout_s=120, log_path=log_path,
                                 modules=cls.kernel.modules, append=append,
                                 nics=run_vm.VIRTIO_NICS, disks=run_vm.VIRTIO_DISKS)
            except run_vm.GuestDisturbed as e:
                log(f"[{cls.kernel.name}] boot {attempt} disturbed: {e}")
                continue
            except run_vm.GuestHung as e:
                # A whole-VM freeze (no output, not even the guest's own watchdog) has been
                # seen about once in 30 boots on a loaded host, at no fixed place; booted again,
                # but reported loudly with where the vCPUs were.
                log(f"\n[{cls.kernel.name}] WARNING: boot {attempt}: the whole guest hung; "
                    f"booting again. {e}")
                cls.hangs.append(str(e))
                continue
            except run_vm.VmError as e:
                cls.boot_error = str(e)
                return
            ran = [n.removesuffix(".scenario") for n in vm.results if n.endswith(".scenario")]
            for name in [n for n in cls.results if n.split(".")[0] in ran]:
                del cls.results[name]
            for name, text in vm.results.items():
                if pending is None or name.split(".")[0] in pending:
                    cls.results[name] = text
            times = []
            for s in ran:
                kv = dict(l.split(None, 1) for l in vm.lines(f"{s}.scenario"))
                times.append(f"{s} {int(kv.get('ms', 0)) / 1000:.1f} s")
            log(f"\n[{cls.kernel.name}] {release}, boot {attempt}: guest up in {vm.boot_s:.1f} s, "
                f"VM run {vm.wall_s:.1f} s ({', '.join(times)}); console log {log_path}")
            if vm.kernel_messages:
                log(f"[{cls.kernel.name}] kernel messages inside result blocks: "
                    f"{vm.kernel_messages}")
            starved = {s: r for s in ran if (r := starvation(vm.results, s))}
            if not starved:
                pending = []
                break
            pending = sorted(starved)
            log(f"[{cls.kernel.name}] the VM stalled during {pending}: {starved}"
                + ("; booting again for those" if attempt < MAX_BOOTS else ""))
        log(f"[{cls.kernel.name}] all VM runs: {time.monotonic() - t0:.1f} s")
        if pending is None:
            cls.boot_error = (f"none of {MAX_BOOTS} boots ran the scenarios (a CPU missing or "
                              f"the whole guest hung); hangs:\n" + "\n".join(cls.hangs))

    # ---- helpers --------------------------------------------------------------------------
    def setUp(self):
        if self.boot_error:
            self.fail(f"{self.kernel.name}: {self.boot_error}")

    def lines(self, name):
        return [l for l in self.results.get(name, "").splitlines() if l.strip()]

    def block(self, name):
        self.assertIn(name, self.results,
                      f"guest printed no result block {name!r}; blocks: {sorted(self.results)}"
                      f"\n{self.scenario_log(name.split('.')[0])}")
        return self.results[name]

    def scenario_log(self, scenario):
        return self.results.get(f"{scenario}.scenario_stderr", "")

    def assert_scenario_ok(self, scenario):
        kv = dict(l.split(None, 1) for l in self.lines(f"{scenario}.scenario"))
        hang = self.results.get(f"{scenario}.hang", "")
        self.assertEqual(kv.get("rc"), "0",
                         f"guest scenario {scenario} failed: {kv}\n{self.scenario_log(scenario)}"
                         f"\n{hang}")

    def trace(self, name):
        """All interval lines of trace run `name`, checked for exit 0 and count, and the
        undisturbed ones (stretched intervals left out, with a note in the log)."""
        rc = self.block(f"{name}.rc").strip()
        stderr = self.results.get(f"{name}.stderr", "")
        self.assertEqual(rc, "0", f"isoscope trace ({name}) exited {rc}: {stderr}")
        lines = trace_lines(self.results, name)
        self.assertEqual(len(lines), len(self.lines(f"{name}.trace")),
                         f"{name}: lines that are not JSON:\n{self.results[f'{name}.trace']}")
        asked = TRACES[name]
        clean = [l for l in lines if not stretched(l)]
        if len(clean) < len(lines) or len(lines) < asked:
            # A stall before the first interval leaves fewer lines; one inside stretches one.
            log(f"[{self.kernel.name}] {name}: VM stall, judged on {len(clean)} of {len(lines)} "
                f"intervals (asked for {asked}):\n{self.describe(lines)}")
        self.assertGreaterEqual(len(usable(self.results, name)), min(2, asked - 1),
                                f"{name}: too few undisturbed intervals in {MAX_BOOTS} boots "
                                f"(host overloaded?):\n{self.describe(lines)}")
        return lines, clean

    def describe(self, lines):
        return "\n".join(
            f"  {l['interval_s']:.3f} s: verdict {l['verdict']['cause']} "
            f"{l['verdict']['share']:.3f}; "
            + ", ".join(f"{b['cause']} {b['seconds']:.3f}" for b in l["breakdown"] if b["seconds"])
            + ("   <- stretched: VM stall, not judged" if stretched(l) else "")
            for l in lines)

    # ---- scenarios ------------------------------------------------------------------------
    def test_doctor(self):
        self.assert_scenario_ok("doctor")
        debug = self.results.get("doctor.debug", "")
        rc = self.block("doctor.rc").strip()
        self.assertEqual(rc, "0", f"doctor exit {rc}: {self.results.get('doctor.stderr')}\n"
                                  f"{debug}")
        doc = json.loads(self.block("doctor.json"))
        release = (self.kernel_dir / "release").read_text().strip()
        self.assertEqual(doc["kernel"]["release"], release)
        self.assertEqual(doc["kernel"]["cgroup_mode"], "v2")
        self.assertTrue(doc["kernel"]["btf"])
        features = {f["name"]: f for f in doc["features"]}
        for name in ["btf", "ringbuf", "tp_btf", "raw_tp", *self.kernel.features]:
            self.assertTrue(features[name]["available"],
                            f"feature {name} unavailable: {features[name]['reason']}\n{debug}")
        container = next(l for l in doc["layers"] if l["layer"] == "container")
        self.assertTrue(container["available"], json.dumps(container))
        for c in container["causes"]:
            self.assertTrue(c["available"], f"{c['cause']}: {c['reason']}")
        groups = {}
        for p in doc["programs"]:
            groups.setdefault(p["group"], []).append(p)
        failed = {g: [(p["name"], p["reason"]) for p in ps]
                  for g, ps in groups.items() if not any(p["available"] for p in ps)}
        self.assertEqual(failed, {}, f"program groups with no program loaded:\n{debug}")
        if {"fentry", "kprobe"} & set(self.kernel.features):
            self.assertIn("unthrottle", groups)
            on = [p["name"] for p in groups["unthrottle"] if p["available"]]
            log(f"[{self.kernel.name}] doctor: unthrottle program {on}")

    def test_throttle(self):
        self.assert_scenario_ok("throttle")
        self.assertEqual(self.block("throttle.cpumax").strip(), "20000 100000")
        for run in ("throttle.tp", "throttle.opt"):
            lines, clean = self.trace(run)
            text = self.describe(lines)
            for l in lines:
                self.assertEqual(l["target"]["cgroup"], "/vmtest/throttle")
            for l in clean:
                self.assertEqual(l["verdict"]["cause"], THROTTLE, f"{run}:\n{text}")
                self.assertGreaterEqual(l["verdict"]["share"], 0.6, f"{run}:\n{text}")
            # The kernel's own throttled time over the same intervals.
            pairs = bracketed(self.results, run)
            kernel_s = sum(k for _, k in pairs)
            agent_s = sum(seconds(l, THROTTLE) for l, _ in pairs)
            log(f"[{self.kernel.name}] {run}: throttle {agent_s:.3f} s vs cpu.stat "
                f"throttled_usec delta {kernel_s:.3f} s over {len(pairs)} intervals; per "
                f"interval:\n{text}")
            self.assertGreater(kernel_s, 0.25 * len(pairs),
                               f"{run}: the kernel barely throttled: "
                               f"{cpustat_rows(self.results, run)}")
            self.assertLessEqual(abs(agent_s - kernel_s), 0.15 * kernel_s,
                                 f"{run}: agent {agent_s:.3f} s vs kernel {kernel_s:.3f} s\n{text}")

    def test_unthrottle_split(self):
        """With the optional unthrottle program the throttled off-CPU time is split at the
        unthrottle into throttle and run-queue wait; the total stays the same."""
        self.assert_scenario_ok("throttle")
        if not {"fentry", "kprobe"} & set(self.kernel.features):
            self.skipTest(f"{self.kernel.name} declares neither fentry nor kprobe")
        (opt_all, opt), (tp_all, tp) = self.trace("throttle.opt"), self.trace("throttle.tp")

        def shares(lines):
            thread = sum(l["thread_seconds"] for l in lines)
            return (sum(seconds(l, THROTTLE) for l in lines) / thread,
                    sum(seconds(l, RUNQUEUE) for l in lines) / thread)

        (o_thr, o_rq), (t_thr, t_rq) = shares(opt), shares(tp)
        log(f"[{self.kernel.name}] unthrottle split (shares of thread time): with the program "
            f"throttle {o_thr:.3f} + runqueue {o_rq:.3f} = {o_thr + o_rq:.3f}; tracepoints only "
            f"throttle {t_thr:.3f} + runqueue {t_rq:.3f} = {t_thr + t_rq:.3f}")
        self.assertLessEqual(abs((o_thr + o_rq) - (t_thr + t_rq)), 0.1 * (t_thr + t_rq),
                             f"off-CPU totals differ:\nopt:\n{self.describe(opt_all)}\n"
                             f"tp:\n{self.describe(tp_all)}")
        self.assertLess(t_rq, 0.01, f"tracepoints only: run-queue share {t_rq:.3f}")
        # The two agents watch the same spin over slightly different windows, so their throttle
        # shares differ by about as much as the split moves (a few ms per period on an idle
        # CPU); what must hold is that the split happened at all.
        self.assertGreater(o_rq, 0.0, "the unthrottle program split nothing off the throttle")

    def test_runqueue(self):
        self.assert_scenario_ok("runqueue")
        lines, clean = self.trace("runqueue")
        text = self.describe(lines)
        log(f"[{self.kernel.name}] runqueue:\n{text}")
        for l in clean:
            self.assertEqual(l["verdict"]["cause"], RUNQUEUE, text)
            self.assertAlmostEqual(l["verdict"]["share"], 0.67, delta=0.1, msg=text)

    def test_sleeper(self):
        self.assert_scenario_ok("sleeper")
        lines, clean = self.trace("sleeper")
        text = self.describe(lines)
        log(f"[{self.kernel.name}] sleeper:\n{text}")
        for l in clean:
            self.assertEqual(l["verdict"]["cause"], "none", text)
            blamed = (seconds(l, THROTTLE) + seconds(l, RUNQUEUE)) / l["thread_seconds"]
            self.assertLess(blamed, 0.05, text)

    def test_identity(self):
        self.assert_scenario_ok("identity")
        expected = dict(l.split(None, 1) for l in self.lines("identity.expected"))
        for run in ("identity.pid", "identity.cgroup"):
            lines, clean = self.trace(run)
            for l in lines:
                t = l["target"]
                self.assertEqual(t.get("pod_uid"), expected["pod_uid"], f"{run}: {t}")
                self.assertEqual(t.get("container_id"), expected["container_id"], f"{run}: {t}")
                self.assertEqual(t.get("cgroup"), expected["cgroup"], f"{run}: {t}")
                self.assertGreaterEqual(l["threads"], 1, f"{run}: no thread accounted: {l}")
            for l in clean:
                self.assertGreater(l["thread_seconds"], 0.5, f"{run}: {l}")
            if run == "identity.pid":
                self.assertEqual(str(lines[0]["target"]["pid"]), expected["pid"])
        log(f"[{self.kernel.name}] identity: pod_uid {expected['pod_uid']}, container_id "
            f"{expected['container_id'][:12]}… by --pid and --cgroup")

    def test_virtio(self):
        """The virtio slice (net_dev_start_xmit on a virtio_net device → the driver's TX
        completion) against a device queue that really is slow.

        The slow NIC's device model (QEMU tx=timer, 20 ms) holds every transmitted packet until
        its timer fires, up to 20 ms after the first notification; only then does the guest
        driver reclaim the skb. The client's round trip grows by that hold of its request (the
        echo comes back on the RX queue, which is not delayed), so the RTT excess of the slow
        NIC over the fast one (p50s; about 20.5 ms measured) is the device-queue wait per
        request, seen from outside the agent. The agent's network.virtio.queue seconds over the
        usable intervals, divided by the requests sent in them (interval_s × pingpong's
        n / elapsed_s), must be 0.7× to 1.3× that excess. Measured: 0.97× to 1.00× in five
        boots. The margin is for what moves only one side: a request sent while the timer
        already runs (started by an ACK) waits less than a full period; a pure ACK that is not
        piggybacked waits in the same queue and adds to the agent's sum; TCG's timer and
        scheduling slack moves both by a few ms. Double counting (≈ 2×) or missing half the
        packets (≈ 0.5×) falls outside.

        The fast NIC's queue is flushed by QEMU as soon as its main loop runs, which under TCG
        takes 0.2 to 1.3 ms per request (measured; more when the host is busy), so its
        network.virtio.queue share of the interval is small but not zero: 0.009 to 0.054
        measured, asserted < 0.10 (the slow NIC's is about 0.47)."""
        self.assert_scenario_ok("virtio")
        fast_rtt = rtt_stats(self.block("virtio.fast.rtt"))
        slow_rtt = rtt_stats(self.block("virtio.slow.rtt"))
        links = self.results.get("virtio.links", "")
        self.assertTrue(fast_rtt and slow_rtt,
                        f"pingpong printed no statistics: fast {self.results['virtio.fast.rtt']!r}"
                        f", slow {self.results['virtio.slow.rtt']!r}\n{links}")
        excess_ms = slow_rtt["p50"] - fast_rtt["p50"]
        self.assertGreaterEqual(
            excess_ms, 5.0,
            f"test set-up broken: the slow NIC (QEMU tx=timer) adds only {excess_ms:.2f} ms to "
            f"the round trip (fast {fast_rtt}, slow {slow_rtt})\n{links}")

        slow_all, _ = self.trace("virtio.slow")
        fast_all, _ = self.trace("virtio.fast")
        slow, fast = usable(self.results, "virtio.slow"), usable(self.results, "virtio.fast")
        text = f"slow:\n{self.describe(slow_all)}\nfast:\n{self.describe(fast_all)}"
        rate = slow_rtt["n"] / slow_rtt["elapsed_s"]  # requests per second of the slow client
        requests = sum(l["interval_s"] for l in slow) * rate
        agent_s = sum(virtio_seconds(l) for l in slow)
        per_request_ms = agent_s / requests * 1e3
        ratio = per_request_ms / excess_ms
        fast_share = sum(virtio_seconds(l) for l in fast) / sum(l["interval_s"] for l in fast)
        log(f"[{self.kernel.name}] virtio: rtt p50 fast {fast_rtt['p50']:.2f} ms, slow "
            f"{slow_rtt['p50']:.2f} ms (excess {excess_ms:.2f} ms); slow trace "
            f"{VIRTIO} {agent_s:.3f} s over {len(slow)} intervals, {requests:.0f} requests "
            f"({rate:.1f}/s): {per_request_ms:.2f} ms per request = {ratio:.2f}x the excess; "
            f"fast trace {VIRTIO} share {fast_share:.4f}\n{text}")
        for l in slow:
            self.assertGreater(virtio_seconds(l), 0,
                               f"slow NIC: an interval without {VIRTIO} rows:\n{text}")
        self.assertTrue(0.7 <= ratio <= 1.3,
                        f"slow NIC: {VIRTIO} {per_request_ms:.2f} ms per request vs the round-trip "
                        f"excess {excess_ms:.2f} ms (ratio {ratio:.2f}, want 0.7..1.3)\n{text}")
        self.assertLess(fast_share, 0.10, f"fast NIC: {VIRTIO} share {fast_share:.4f}\n{text}")


    # ---- hypervisor and paravirt layers (issue #12) ---------------------------------------
    def run_lines(self, name):
        """The agent's interval lines of a run that ends with its target (kvm, virtioblk):
        exit 0, every line JSON, at least the first interval and one more."""
        rc = self.block(f"{name}.rc").strip()
        self.assertEqual(rc, "0", f"isoscope trace ({name}) exited {rc}: "
                                  f"{self.results.get(f'{name}.stderr', '')}")
        lines = trace_lines(self.results, name)
        self.assertEqual(len(lines), len(self.lines(f"{name}.trace")),
                         f"{name}: lines that are not JSON:\n{self.results[f'{name}.trace']}")
        self.assertGreaterEqual(len(lines), 2, f"{name}: {len(lines)} interval lines")
        return lines

    def workload_json(self, name, rc_block, err_block):
        """A workload's --json line, checked for exit 0."""
        rc = self.block(rc_block).strip()
        self.assertEqual(rc, "0", f"{name}: exit {rc}: {self.results.get(err_block, '')}")
        doc = json_block(self.results, name)
        self.assertIsNotNone(doc, f"{name}: no JSON: {self.results.get(name)!r} "
                                  f"{self.results.get(err_block, '')}")
        return doc

    @staticmethod
    def describe_vcpus(lines):
        out = []
        for i, l in enumerate(lines):
            v = l.get("vcpus")
            if not v:
                out.append(f"  [{i}] no vcpus")
                continue
            exits = ", ".join(f"{e.get('kind')}/{e.get('reason')} {e.get('count')} "
                              f"{e.get('seconds', 0):.4f}s" for e in v.get("exits", []))
            out.append(f"  [{i}] threads {v.get('threads')} guest {v.get('guest_s', 0):.3f} "
                       f"vmexit {v.get('vmexit_s', 0):.4f} vmm_exit {v.get('vmm_exit_s', 0):.4f} "
                       f"halted {v.get('halted_s', 0):.3f} steal {v.get('steal_s', 0):.3f}; "
                       f"exits: {exits}")
        return "\n".join(out)

    def check_vmm_run(self, name):
        """The checks both kvm runs share: exact I/O exit counts by kind, the VMM's userspace
        handling against tinyvmm's own measurement and against N x delay."""
        vmm = self.workload_json(f"{name}.vmm", f"{name}.vmmrc", f"{name}.vmmerr")
        self.assertEqual(vmm["io_exits"], KVM_EXITS, f"tinyvmm itself: {vmm}")
        # N exits to port 0x10 and the loop-end exit to port 0x11: all KVM_EXIT_IO.
        io = vmm["exit_reasons"]["io"]
        lines = self.run_lines(name)
        text = f"{self.describe(lines)}\nvcpus:\n{self.describe_vcpus(lines)}"
        with_vcpus = [l for l in lines if l.get("vcpus")]
        self.assertTrue(with_vcpus, f"{name}: no interval has vcpus (the VMM's vCPU thread was "
                                    f"not recognised)\n{text}")
        rows = [e for l in with_vcpus for e in l["vcpus"].get("exits", [])]
        kernel_io = sum(e["count"] for e in rows if e["kind"] == "kernel" and e["reason"] == "io")
        vmm_io = sum(e["count"] for e in rows if e["kind"] == "vmm" and e["reason"] == "io")
        isas = sorted({e.get("isa") for e in rows if e["kind"] == "kernel"})
        tids = {t.get("tid") for l in with_vcpus for t in l["vcpus"].get("per_thread", [])}
        agent = sum(seconds(l, VMM_EXIT) for l in lines)
        by_handling = agent / vmm["vmm_handling_s"]
        by_delay = agent / (KVM_EXITS * KVM_DELAY_S)
        log(f"[{self.kernel.name}] {name}: I/O exits kernel {kernel_io}, vmm {vmm_io} (tinyvmm: "
            f"{io} = {KVM_EXITS} + loop end; isa {isas}); {VMM_EXIT} {agent:.4f} s = "
            f"{by_handling:.2f}x tinyvmm's handling {vmm['vmm_handling_s']:.4f} s = "
            f"{by_delay:.2f}x N x delay {KVM_EXITS * KVM_DELAY_S:.3f} s\n{text}")
        self.assertEqual(kernel_io, io, f"{name}: kernel (kvm_exit) io exits\n{text}")
        self.assertEqual(vmm_io, io, f"{name}: vmm (kvm_userspace_exit) io exits\n{text}")
        self.assertEqual(isas, ["svm"], f"{name}: kernel exit rows' isa\n{text}")
        self.assertIn(vmm["tid"], tids, f"{name}: the vCPU thread is not in per_thread\n{text}")
        self.assertTrue(0.8 <= by_handling <= 1.25,
                        f"{name}: {VMM_EXIT} {agent:.4f} s vs tinyvmm's handling "
                        f"{vmm['vmm_handling_s']:.4f} s (ratio {by_handling:.2f})\n{text}")
        self.assertTrue(0.8 <= by_delay <= 1.25,
                        f"{name}: {VMM_EXIT} {agent:.4f} s vs N x delay "
                        f"{KVM_EXITS * KVM_DELAY_S:.3f} s (ratio {by_delay:.2f}; the VMM's own "
                        f"delays took {vmm['delay_s']:.4f} s"
                        + (": a VM stall in every boot" if delays_disturbed(vmm) else "")
                        + f")\n{text}")
        return vmm, lines, text

    def test_kvm(self):
        """Run a: exits, VMM handling and halt of a vCPU with its CPU to itself; no steal."""
        self.assert_scenario_ok("kvm")
        vmm, lines, text = self.check_vmm_run("kvm.a")
        halted = sum(l["vcpus"].get("halted_s", 0) for l in lines if l.get("vcpus"))
        log(f"[{self.kernel.name}] kvm.a: halted {halted:.3f} s vs tinyvmm's halt "
            f"{vmm['halt_s']:.3f} s (in-kernel irqchip: {vmm['irqchip']})")
        self.assertTrue(vmm["irqchip"] and vmm["halt_s"] > 0.2, f"tinyvmm: {vmm}")
        self.assertTrue(0.8 * vmm["halt_s"] <= halted <= 1.25 * vmm["halt_s"],
                        f"kvm.a: halted_s {halted:.3f} vs tinyvmm's halt {vmm['halt_s']:.3f}\n"
                        f"{text}")
        for l in lines:
            self.assertNotEqual(l["verdict"]["cause"], STEAL, f"kvm.a, no competitor:\n{text}")

    def test_kvm_steal(self):
        """Run b: a hog on the vCPU's CPU during the guest loop makes hypervisor.steal the
        verdict, with the share the vCPU thread's own run-queue wait says (schedstat)."""
        self.assert_scenario_ok("kvm")
        vmm, lines, text = self.check_vmm_run("kvm.b")
        judged = steal_intervals(self.results)
        hog = hog_window_ms(self.results, "kvm.b")
        log(f"[{self.kernel.name}] kvm.b: hog {hog} ms, guest loop {vmm['t_loop_start']:.3f}-"
            f"{vmm['t_loop_end']:.3f} s; judged intervals (agent share vs expected): "
            + ", ".join(f"{l['verdict']['cause']} {l['verdict']['share']:.3f} vs {e:.3f}"
                        for l, e in judged))
        self.assertGreaterEqual(len(judged), 2, f"kvm.b: too few intervals in the hog's window "
                                                f"({hog}):\n{text}")
        for l, expected in judged:
            self.assertEqual(l["verdict"]["cause"], STEAL, f"kvm.b:\n{text}")
            self.assertAlmostEqual(l["verdict"]["share"], expected, delta=0.1,
                                   msg=f"kvm.b: expected {expected:.3f}\n{text}")

    def test_virtioblk(self):
        """paravirt.virtio_blk per read against the reader's own latency (slow disk), and a
        small share for a mostly idle reader of the fast disk."""
        self.assert_scenario_ok("virtioblk")
        disks = self.results.get("virtioblk.disks", "")
        slow_r = self.workload_json("virtioblk.slow.reader", "virtioblk.slow.readerrc",
                                    "virtioblk.slow.readerr")
        fast_r = self.workload_json("virtioblk.fast.reader", "virtioblk.fast.readerrc",
                                    "virtioblk.fast.readerr")
        self.assertGreaterEqual(slow_r["mean_s"], max(0.010, 5 * fast_r["mean_s"]),
                                f"test set-up broken: QEMU's throttling did not slow the slow "
                                f"disk (slow {slow_r}, fast {fast_r})\n{disks}")
        slow, fast = self.run_lines("virtioblk.slow"), self.run_lines("virtioblk.fast")
        text = f"slow:\n{self.describe(slow)}\nfast:\n{self.describe(fast)}"
        agent = sum(seconds(l, VIRTIO_BLK) for l in slow)
        per_read = agent / slow_r["reads"]
        ratio = per_read / slow_r["mean_s"]
        fast_shares = [seconds(l, VIRTIO_BLK) / l["thread_seconds"]
                       for l in reading_intervals(self.results, "virtioblk.fast")]
        fast_per_read = sum(seconds(l, VIRTIO_BLK) for l in fast) / fast_r["reads"]
        log(f"[{self.kernel.name}] virtioblk: slow disk mean read {slow_r['mean_s'] * 1e3:.2f} ms "
            f"(p50 {slow_r['p50_s'] * 1e3:.2f}), {VIRTIO_BLK} {per_read * 1e3:.2f} ms per read "
            f"= {ratio:.2f}x; fast disk mean read {fast_r['mean_s'] * 1e3:.3f} ms, {VIRTIO_BLK} "
            f"{fast_per_read * 1e3:.3f} ms per read, shares {[round(x, 4) for x in fast_shares]}"
            f"\n{text}")
        self.assertTrue(0.7 <= ratio <= 1.3,
                        f"slow disk: {VIRTIO_BLK} {per_read * 1e3:.2f} ms per read vs the reader's "
                        f"{slow_r['mean_s'] * 1e3:.2f} ms (ratio {ratio:.2f})\n{text}")
        for l in reading_intervals(self.results, "virtioblk.slow"):
            self.assertEqual(l["verdict"]["cause"], VIRTIO_BLK, f"slow disk:\n{text}")
        self.assertTrue(fast_shares, f"fast disk: no interval with the reader in it\n{text}")
        for share in fast_shares:
            self.assertLess(share, 0.2, f"fast disk: {VIRTIO_BLK} share {share:.4f}\n{text}")

    def test_io_throttle(self):
        """container.io_throttle: the fast disk read from a cgroup with io.max riops=50."""
        self.assert_scenario_ok("virtioblk")
        iomax = self.block("virtioblk.iomax")
        self.assertIn("riops=50", iomax)
        fast_r = self.workload_json("virtioblk.fast.reader", "virtioblk.fast.readerrc",
                                    "virtioblk.fast.readerr")
        thr_r = self.workload_json("virtioblk.throttle.reader", "virtioblk.throttle.readerrc",
                                   "virtioblk.throttle.readerr")
        excess = thr_r["total_s"] - thr_r["reads"] * fast_r["mean_s"]
        self.assertGreater(excess, 0.5 * thr_r["reads"] / 50,
                           f"test set-up broken: io.max did not slow the reader ({thr_r}, "
                           f"unthrottled mean {fast_r['mean_s']:.6f} s)\n{iomax}")
        lines = self.run_lines("virtioblk.throttle")
        text = self.describe(lines)
        agent = sum(seconds(l, IO_THROTTLE) for l in lines)
        log(f"[{self.kernel.name}] io_throttle: reader {thr_r['reads']} reads in "
            f"{thr_r['total_s']:.3f} s, excess over the unthrottled mean {excess:.3f} s; "
            f"{IO_THROTTLE} {agent:.3f} s ({agent / excess:.2f}x)\n{iomax}{text}")
        self.assertLessEqual(abs(agent - excess), 0.2 * excess,
                             f"{IO_THROTTLE} {agent:.3f} s vs excess {excess:.3f} s\n{text}")
        judged = reading_intervals(self.results, "virtioblk.throttle")
        self.assertTrue(judged, f"no interval with the reader in it\n{text}")
        for l in judged:
            self.assertEqual(l["verdict"]["cause"], IO_THROTTLE, text)


for _k in KERNELS:
    _cls = type(f"Kernel_{_k.name.replace('-', '_').replace('.', '_')}",
                (VmKernelChecks, unittest.TestCase), {"kernel": _k})
    globals()[_cls.__name__] = _cls
del _k, _cls


def prepare_all():
    """Fetches every kernel and builds the initramfs; exits 77 on Unavailable."""
    global QEMU  # pylint: disable=global-statement
    try:
        QEMU = run_vm.find_qemu()
        for k in KERNELS:
            t0 = time.monotonic()
            PREPARED[k.name] = run_vm.prepare(k, ISOSCOPE, WORKLOADS, CACHE)
            log(f"[{k.name}] kernel and initramfs ready in {time.monotonic() - t0:.1f} s "
                f"({PREPARED[k.name][0]})")
    except run_vm.Unavailable as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    except run_vm.VmError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    if not ISOSCOPE.exists():
        print(f"FAIL: no agent binary at {ISOSCOPE} (set ISOSCOPE_BIN)", file=sys.stderr)
        sys.exit(1)
    prepare_all()
    unittest.main()
