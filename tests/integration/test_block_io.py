"""The block path of issue #12, on the real kernel: O_DIRECT 4 KiB reads of a file on this VM's
own virtio-blk disk, traced by --pid, and the same reads held back by a blk-throttle limit of the
reader's cgroup (v1 blkio.throttle.read_iops_device here; v2 io.max on a pure v2 host).

What the agent must report (the contract): a thread's blocked-on-block-I/O time is split into
the part its requests spent in a virtio-blk device (paravirt.virtio_blk), the part the cgroup's
blk-throttle held them back before dispatch (container.io_throttle), and the rest
(app.blocked_io). Those three causes are always listed in the breakdown.

Ground truth, measured by the reader itself (this file run with `--reader`, a Python process
that waits for "go" on stdin, so the trace is attached before the first read):
  - each read's wall time (time.monotonic_ns around os.preadv): "measured read time";
  - the thread's own kernel accounting over the read loop (/proc/self/task/TID/schedstat: time
    on CPU and time waiting on a run queue): loop wall time - on-CPU - run-queue wait is the time
    the thread slept, i.e. blocked in its reads (nothing else in the loop can sleep):
    "kernel-counted blocked time". With CONFIG_PARAVIRT_TIME_ACCOUNTING (this kernel) the
    on-CPU time excludes steal, so that figure is an upper bound; minus all steal of the
    reader's CPU during the loop (/proc/stat, rounded up a tick; the reader is pinned to the last
    CPU) it is a lower bound. The checks use the pair (lo..hi): tight when the host steals
    nothing, honest when it does (0.42 s of node steal during a 1.5 s loop was seen on a busy
    2026-12-03);
  - the disk's own statistics over the loop (/sys/block/DISK/stat): reads completed and their
    time in the block layer (request allocation -> completion, every reader of the disk).

Why the checks use the kernel-counted blocked time, not only the measured read time: on this
host a 4 KiB O_DIRECT read of the virtio-blk disk (cached on the host) takes ~35-60 us, of
which ~35-50% is spent ON the CPU (measured 2026-12-03: a C reader 38 us/read with 36% on-CPU,
this Python reader 40-100 us/read, depending on the box's load, with 45-50% on-CPU): the
submission path, the virtqueue kick (an exit to the hypervisor, charged to the reading thread)
and the completion path. The device interval (issue -> completion; ~44 us/read with bpftrace)
covers most of the syscall, but the thread sleeps for only ~50-55% of it, and the agent splits
*sleep*. "virtio_blk within 0.6-1.1x of the measured read time" would fail here for a correct
agent. And of the sleep, the part after the completion is not device time: vda has one queue
whose interrupt is on CPU 1, so a reader on CPU 0 is woken by an IPI to an idle vCPU, which
takes microseconds in a VM (the agent gave virtio_blk 0.73-0.85x of the blocked time for a
reader on CPU 0, 0.81-0.90x on CPU 1). Hence:
  (a) unthrottled: virtio_blk >= 0.6x the blocked time (lo) and <= 1.05x of it (hi): it is a
      part of the sleep; also <= the measured read time and <= the disk's block-layer time
      (diskstats), both of which contain it; blocked_io + virtio_blk + io_throttle within
      0.85x lo .. 1.15x hi (the three causes split exactly the sleep); io_throttle < 5% of the
      measured read time. On a disk that is not virtio-blk: virtio_blk ~ 0.
  (b) throttled (40 read IOPS): verdict container.io_throttle (share >= 0.7) in every interval
      fully inside the read loop; io_throttle within 20% of the reader's measured excess wait
      (its measured read time minus reads x the unthrottled mean read latency of case a); the
      three causes within 0.9x lo .. 1.1x hi; virtio_blk < 10% of io_throttle (the hold-back is
      not device time) but > 0 on a virtio-blk disk. The kernel's own blk-throttle counters
      (blkio.throttle.io_serviced / io.stat rios) must have moved by the number of reads, and
      the reader's read rate must respect the limit: sanity guards that the scenario is real,
      not the measurement.

Needs root and working BPF (exit 77 otherwise). A missing blk-throttle (no v1 blkio with
blkio.throttle.*, no v2 io controller) fails case b with the reason. Runs in ~20 s.
"""

import json
import mmap
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import unittest

import isoscope_harness as h
from isoscope_harness import Processes, share, verdict

VIRTIO_BLK = "paravirt.virtio_blk"
IO_THROTTLE = "container.io_throttle"
BLOCKED_IO = "app.blocked_io"
NEW_CAUSES = (VIRTIO_BLK, IO_THROTTLE)

BLOCK = 4096
FILE_MB = 64
THROTTLE_IOPS = 40

# (a): reads until COUNT or MAX_S (bounded on a slow box), inside a 4 s trace (go after line 1).
A_COUNT, A_MAX_S, A_TRACE_S = 20000, 1.5, 4
# (b): ~4 s of reads at 40 IOPS inside a 7 s trace: 2-3 intervals fully inside the loop.
B_COUNT, B_MAX_S, B_TRACE_S = 400, 4.0, 7
# The reader is pinned (so the steal that can hide in its loop is that of one CPU, and its
# completions always take the same path): the last CPU, as test_container_layer does.
READER_CPU = max(os.sched_getaffinity(0))
# How late a trace line may arrive after its interval ended (for "fully inside the loop").
LINE_LAG_S = 0.25


# ---- the reader (this file run with --reader) ------------------------------------------------


def _schedstat():
    """(on-CPU ns, run-queue wait ns) of the calling thread, from the kernel."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat", encoding="ascii") as f:
        fields = f.read().split()
    return int(fields[0]), int(fields[1])


def _steal_ticks(cpu=None):
    """The kernel's steal (USER_HZ ticks) of one CPU, or summed over CPUs, from /proc/stat."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == name:
                return int(fields[8])
    raise RuntimeError(f"no {name} line in /proc/stat")


def _disk_reads(disk):
    """(reads completed, read ticks in ms) of a disk, from /sys/block/DISK/stat: the kernel's
    own time of its read requests in the block layer (allocation to completion)."""
    if not disk:
        return 0, 0
    fields = _sysfs_read(f"/sys/block/{disk}/stat").split()
    return int(fields[0]), int(fields[3])


def timed_reads(fd, file_size, count, max_s, seed, disk=None, cpu=None):
    """`count` O_DIRECT preads of BLOCK bytes at random aligned offsets (stops early after
    max_s); returns the measurements as a dict (see the module docstring). `cpu`: the CPU the
    caller is pinned to (its steal bounds the caller's), else the node's steal is used."""
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    rng = random.Random(seed)
    offsets = [rng.randrange(file_size // BLOCK) * BLOCK for _ in range(count)]
    total_ns, done = 0, 0
    steal0, disk0 = _steal_ticks(cpu), _disk_reads(disk)
    cpu0, rq0 = _schedstat()
    start = time.monotonic_ns()
    stop = start + int(max_s * 1e9)
    for off in offsets:
        t0 = time.monotonic_ns()
        n = os.preadv(fd, [buf], off)
        t1 = time.monotonic_ns()
        if n != BLOCK:
            raise OSError(f"short O_DIRECT read: {n} bytes at offset {off}")
        total_ns += t1 - t0
        done += 1
        if t1 >= stop:
            break
    end = time.monotonic_ns()
    cpu1, rq1 = _schedstat()
    steal1, disk1 = _steal_ticks(cpu), _disk_reads(disk)
    loop_ns, cpu_ns, rq_ns = end - start, cpu1 - cpu0, rq1 - rq0
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "reads": done,
        "total_s": total_ns / 1e9,
        "mean_s": total_ns / done / 1e9 if done else 0.0,
        "loop_s": loop_ns / 1e9,
        "cpu_s": cpu_ns / 1e9,
        "runq_s": rq_ns / 1e9,
        # Slept, at most: with CONFIG_PARAVIRT_TIME_ACCOUNTING the on-CPU time excludes steal,
        # so steal while running lands here too. At least: minus all steal of the reader's CPU
        # (or of every CPU) during the loop, rounded up by a tick per CPU.
        "blocked_s": (loop_ns - cpu_ns - rq_ns) / 1e9,
        "steal_s": (steal1 - steal0 + (1 if cpu is not None else os.cpu_count() or 1)) / hz,
        "cpu": -1 if cpu is None else cpu,
        "disk_reads": disk1[0] - disk0[0],
        "disk_read_s": (disk1[1] - disk0[1] + 1) / 1e3,  # ms, truncated: rounded up
        "start": start / 1e9,
        "end": end / 1e9,
    }


def reader_main(argv):
    """--reader PATH COUNT MAX_S SEED DISK CPU: pins itself to CPU, opens PATH with O_DIRECT,
    prints {"ready",...}, waits for a line on stdin, reads, prints the measurements, then waits
    for EOF on stdin and exits. DISK (e.g. vda): also the disk's own read statistics."""
    path, count, max_s, seed = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    disk, cpu = argv[4], int(argv[5])
    os.sched_setaffinity(0, {cpu})
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    size = os.fstat(fd).st_size
    print(json.dumps({"ready": True, "pid": os.getpid(), "tid": threading.get_native_id()}),
          flush=True)
    if not sys.stdin.readline():
        return 1
    print(json.dumps(timed_reads(fd, size, count, max_s, seed, disk, cpu)), flush=True)
    sys.stdin.read()  # stay alive (and traced) until the test is done with the trace
    return 0


# ---- the disk under the file -------------------------------------------------------------------


def _sysfs_read(path):
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def disk_of(path):
    """(disk name, "MAJ:MIN" of the whole disk, is it virtio-blk (or stacked on one)) for the
    block device holding `path`."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sys_dev = os.path.realpath(f"/sys/dev/block/{dev}")
    if not os.path.exists(sys_dev):
        raise RuntimeError(f"{path} is on device {dev}, which is not a block device "
                           f"(no /sys/dev/block/{dev}); the test needs a disk-backed file system")
    if os.path.exists(os.path.join(sys_dev, "partition")):
        sys_dev = os.path.dirname(sys_dev)
    name = os.path.basename(sys_dev)
    return name, _sysfs_read(f"/sys/block/{name}/dev"), _is_virtio_blk(name)


def _is_virtio_blk(name, depth=0):
    driver = os.path.realpath(f"/sys/block/{name}/device/driver")
    if os.path.basename(driver) == "virtio_blk":
        return True
    slaves = f"/sys/block/{name}/slaves"  # dm / md stacked on other disks (or partitions)
    if depth < 4 and os.path.isdir(slaves):
        for slave in os.listdir(slaves):
            real = os.path.realpath(os.path.join(slaves, slave))
            if os.path.exists(os.path.join(real, "partition")):
                real = os.path.dirname(real)
            if _is_virtio_blk(os.path.basename(real), depth + 1):
                return True
    return False


def make_file(directory):
    """A FILE_MB file written once with O_DIRECT (1 MiB aligned writes) and fsync'ed."""
    path = os.path.join(directory, "directread.dat")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(random.Random(12).randbytes(1 << 20))
        for i in range(FILE_MB):
            if os.pwritev(fd, [buf], i << 20) != 1 << 20:
                raise OSError("short O_DIRECT write")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


# ---- blk-throttle: v1 blkio or v2 io -------------------------------------------------------


class Throttle:
    """A throw-away cgroup with a read-IOPS limit on one disk: v1 blkio (hybrid/legacy hosts)
    or v2 io.max (a host whose io controller is on cgroup v2)."""

    def __init__(self, dev, iops):
        v1, v2 = h.cgroup_mounts()
        if "blkio" in v1:
            self.cg = h.cgroup("blkio")
            limit = self.cg.file("blkio.throttle.read_iops_device")
            if not os.path.exists(limit):
                self.cg.destroy()
                raise RuntimeError(
                    f"v1 blkio at {v1['blkio']} has no blkio.throttle.read_iops_device: this "
                    "kernel lacks blk-throttle (CONFIG_BLK_DEV_THROTTLING)")
            self.cg.write("blkio.throttle.read_iops_device", f"{dev} {iops}")
        elif v2 is not None and "io" in _sysfs_read(os.path.join(v2, "cgroup.controllers")).split():
            self.cg = h.cgroup("io")
            if not os.path.exists(self.cg.file("io.max")):
                self.cg.destroy()
                raise RuntimeError("v2 io controller has no io.max: this kernel lacks "
                                   "blk-throttle (CONFIG_BLK_DEV_THROTTLING)")
            self.cg.write("io.max", f"{dev} riops={iops}")
        else:
            raise RuntimeError(
                "no blk-throttle to test: no v1 blkio hierarchy and no v2 io controller "
                f"(v1 controllers mounted: {sorted(v1)}, v2 at {v2})")
        self.dev = dev
        h.log(f"throttle: {self.cg!r}, {dev} limited to {iops} read IOPS")

    def reads_serviced(self):
        """The kernel's count of read bios of this cgroup on the disk."""
        if self.cg.version == 1:
            for line in self.cg.read("blkio.throttle.io_serviced").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == self.dev and parts[1] == "Read":
                    return int(parts[2])
            return 0
        for line in self.cg.read("io.stat").splitlines():
            parts = line.split()
            if parts and parts[0] == self.dev:
                return int(dict(kv.split("=", 1) for kv in parts[1:]).get("rios", 0))
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cg.destroy()
        return False


# ---- the tests --------------------------------------------------------------------------------


def setUpModule():
    h.require_bpf()




def blocked_bounds(m):
    """The reader's blocked time in its read loop, as bounds from the kernel's counters: the loop
    minus time on CPU and on a run queue (an upper bound: steal while running is in it), and that
    minus all steal of the reader's CPU during the loop (a lower bound)."""
    return max(0.0, m["blocked_s"] - m["steal_s"]), m["blocked_s"]




def causes_listed(test, lines):
    for i, line in enumerate(lines, 1):
        listed = {b["cause"] for b in line["breakdown"]}
        for cause in NEW_CAUSES + (BLOCKED_IO,):
            test.assertIn(cause, listed,
                          f"line {i}: breakdown lacks {cause} (listed: {sorted(listed)}); the "
                          "agent must always list the issue #12 causes (0 when unmeasured)")


class BlockIoTest(unittest.TestCase):
    maxDiff = None
    unthrottled = None  # case a's measurements, for case b's excess wait

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.disk_tempdir()
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.path = make_file(cls.tmp)
        cls.disk, cls.dev, cls.virtio = disk_of(cls.path)
        h.log(f"file {cls.path} ({FILE_MB} MiB) on /dev/{cls.disk} ({cls.dev}), "
              f"virtio-blk: {cls.virtio}, scheduler "
              f"{_sysfs_read(f'/sys/block/{cls.disk}/queue/scheduler')}")

    def start_reader(self, procs, count, max_s, seed, cgroups=()):
        reader = procs.start(
            [sys.executable, os.path.abspath(__file__), "--reader", self.path, count, max_s, seed,
             self.disk, READER_CPU],
            cgroups=cgroups, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)
        self.addCleanup(h.close_pipes, reader)
        ready = h.wait_json_line(reader, "reader", 30)
        self.assertTrue(ready.get("ready"), ready)
        return reader

    def run_traced(self, reader, trace_s):
        """Traces the reader by --pid, sends "go" when the first line arrives; returns
        (TraceResult, [arrival monotonic time of each line], reader's measurements)."""
        arrivals = []

        def on_line(i, _line):
            arrivals.append(time.monotonic())
            if i == 0:
                reader.stdin.write("go\n")
                reader.stdin.flush()

        result = h.trace(["--pid", reader.pid, "--duration", trace_s, "--interval", 1],
                         on_line=on_line)
        self.assertEqual(result.returncode, 0, repr(result))
        self.assertGreaterEqual(len(result.lines), trace_s, repr(result))
        measured = h.wait_json_line(reader, "reader (measurements)", 30)
        reader.stdin.close()
        self.assertLess(
            measured["end"], arrivals[-1] - 0.5,
            f"the reader was still reading when the trace ended: {measured}, last line at "
            f"{arrivals[-1]:.3f}")
        self.assertGreater(measured["start"], arrivals[0] - 0.01, measured)
        return result, arrivals, measured

    def log_lines(self, name, lines):
        for i, line in enumerate(lines, 1):
            h.log(f"{name} line {i}: {h.summary(line)}")

    # ---- a. unthrottled: the device's share of the blocked time --------------------------------

    def test_a_unthrottled_reads_virtio_blk(self):
        with Processes() as procs:
            reader = self.start_reader(procs, A_COUNT, A_MAX_S, 1)
            result, _, m = self.run_traced(reader, A_TRACE_S)
        type(self).unthrottled = m
        self.log_lines("unthrottled", result.lines)
        lo, hi = blocked_bounds(m)
        h.log(f"unthrottled reader: {m['reads']} reads, mean {m['mean_s'] * 1e6:.1f} us, measured "
              f"read time {m['total_s']:.4f} s; loop {m['loop_s']:.4f} s = on-CPU "
              f"{m['cpu_s']:.4f} + run queue {m['runq_s']:.4f} + blocked {lo:.4f}..{hi:.4f} "
              f"(kernel schedstat; steal of CPU {m['cpu']} <= {m['steal_s']:.3f} s); "
              f"blocked / measured {hi / m['total_s']:.3f}; /dev/{self.disk}: "
              f"{m['disk_reads']} reads completed, {m['disk_read_s']:.3f} s in the block layer "
              f"(diskstats)")
        causes_listed(self, result.lines)
        for line in result.lines:
            self.assertEqual(line["threads"], 1, h.summary(line))
        virtio = h.totals(result.lines, VIRTIO_BLK)
        throttle = h.totals(result.lines, IO_THROTTLE)
        blocked_io = h.totals(result.lines, BLOCKED_IO)
        split = blocked_io + virtio + throttle
        measured = m["total_s"]
        h.log(f"unthrottled agent: virtio_blk {virtio:.4f} s ({virtio / hi:.3f}x kernel blocked, "
              f"{virtio / measured:.3f}x measured, {virtio / max(m['reads'], 1) * 1e6:.1f} "
              f"us/read), io_throttle {throttle:.4f} s, blocked_io {blocked_io:.4f} s; split sum "
              f"{split:.4f} s ({split / hi:.3f}x kernel blocked)")
        self.assertGreater(m["reads"], 1000, f"too few reads to measure: {m}")
        self.assertGreaterEqual(m["disk_reads"], m["reads"],
                                f"/dev/{self.disk} completed fewer reads than the reader made: "
                                f"{m}")
        self.assertLess(throttle, 0.05 * measured,
                        f"container.io_throttle {throttle:.4f} s for a reader with no I/O limit "
                        f"(measured read time {measured:.4f} s)")
        self.assertGreaterEqual(split, 0.85 * lo,
                                f"blocked_io+virtio_blk+io_throttle {split:.4f} s < 0.85x the "
                                f"kernel-counted blocked time {lo:.4f}..{hi:.4f} s")
        self.assertLessEqual(split, 1.15 * hi,
                             f"blocked_io+virtio_blk+io_throttle {split:.4f} s > 1.15x the "
                             f"kernel-counted blocked time {lo:.4f}..{hi:.4f} s")
        if self.virtio:
            self.assertGreaterEqual(
                virtio, 0.6 * lo,
                f"paravirt.virtio_blk {virtio:.4f} s < 0.6x the reader's kernel-counted blocked "
                f"time {lo:.4f}..{hi:.4f} s (its reads all went to the virtio-blk disk "
                f"/dev/{self.disk})")
            self.assertLessEqual(virtio, 1.05 * hi,
                                 f"paravirt.virtio_blk {virtio:.4f} s > the kernel-counted "
                                 f"blocked time {lo:.4f}..{hi:.4f} s it is a part of")
            self.assertLessEqual(virtio, measured,
                                 f"paravirt.virtio_blk {virtio:.4f} s exceeds the reader's "
                                 f"measured read time {measured:.4f} s, of which it is a part")
            self.assertLessEqual(virtio, m["disk_read_s"],
                                 f"paravirt.virtio_blk {virtio:.4f} s exceeds the time the "
                                 f"kernel's diskstats give all reads of /dev/{self.disk} in the "
                                 f"block layer during the loop ({m['disk_read_s']:.4f} s)")
        else:
            self.assertLess(virtio, 0.01 * measured,
                            f"paravirt.virtio_blk {virtio:.4f} s for reads of /dev/{self.disk}, "
                            "which is not a virtio-blk disk")
        h.check_interval_sums(self, result.lines)

    # ---- b. throttled: blk-throttle's hold-back ------------------------------------------------

    def baseline(self):
        """Unthrottled mean read latency: case a's, else measured here (outside any limit)."""
        if type(self).unthrottled is not None:
            return type(self).unthrottled["mean_s"], "case a"
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        try:
            m = timed_reads(fd, os.fstat(fd).st_size, 2000, 1.0, 7)
        finally:
            os.close(fd)
        return m["mean_s"], f"measured now ({m['reads']} reads)"

    def test_b_throttled_reads_io_throttle(self):
        base_mean, base_from = self.baseline()
        with Processes() as procs, Throttle(self.dev, THROTTLE_IOPS) as thr:
            reader = self.start_reader(procs, B_COUNT, B_MAX_S, 2, cgroups=[thr.cg])
            serviced0 = thr.reads_serviced()
            result, arrivals, m = self.run_traced(reader, B_TRACE_S)
            serviced = thr.reads_serviced() - serviced0
        self.log_lines("throttled", result.lines)
        excess = m["total_s"] - m["reads"] * base_mean
        lo, hi = blocked_bounds(m)
        rate = (m["reads"] - 1) / m["loop_s"] if m["loop_s"] > 0 else float("inf")
        h.log(f"throttled reader: {m['reads']} reads in {m['loop_s']:.3f} s ({rate:.1f}/s, limit "
              f"{THROTTLE_IOPS}), mean {m['mean_s'] * 1e3:.2f} ms, measured read time "
              f"{m['total_s']:.4f} s, excess wait {excess:.4f} s (unthrottled mean "
              f"{base_mean * 1e6:.1f} us from {base_from}); kernel blocked {lo:.4f}..{hi:.4f} s;"
              f" kernel read bios serviced in the cgroup +{serviced}")
        causes_listed(self, result.lines)
        # The scenario is real: the kernel throttled exactly these reads.
        self.assertGreaterEqual(serviced, m["reads"],
                                f"the cgroup's blk-throttle counters saw {serviced} reads of "
                                f"{self.dev}, the reader made {m['reads']}")
        self.assertLessEqual(serviced, m["reads"] + 10, f"{serviced} reads vs {m['reads']}")
        self.assertLessEqual(rate, THROTTLE_IOPS * 1.15, "the read IOPS limit did not hold")
        self.assertGreater(excess, 2.0, f"too little throttled wait to measure: {m}")

        throttle = h.totals(result.lines, IO_THROTTLE)
        virtio = h.totals(result.lines, VIRTIO_BLK)
        blocked_io = h.totals(result.lines, BLOCKED_IO)
        split = blocked_io + virtio + throttle
        h.log(f"throttled agent: io_throttle {throttle:.4f} s ({throttle / excess:.3f}x the "
              f"measured excess), virtio_blk {virtio:.4f} s, blocked_io {blocked_io:.4f} s; split "
              f"sum {split:.4f} s ({split / hi:.3f}x kernel blocked)")

        # Verdict in every interval fully inside the read loop.
        full = [(i, line) for i, (line, t) in enumerate(zip(result.lines, arrivals), 1)
                if t - line["interval_s"] - LINE_LAG_S >= m["start"] and t <= m["end"]]
        self.assertGreaterEqual(len(full), 2,
                                f"fewer than 2 intervals fully inside the read loop "
                                f"[{m['start']:.3f}, {m['end']:.3f}]; line arrivals {arrivals}")
        for i, line in full:
            self.assertEqual(line["threads"], 1, f"line {i}: {h.summary(line)}")
            self.assertEqual(verdict(line), IO_THROTTLE, f"line {i}: {h.summary(line)}")
            self.assertGreaterEqual(share(line, IO_THROTTLE), 0.7, f"line {i}: {h.summary(line)}")
        h.log(f"throttled: verdict {IO_THROTTLE} in full intervals {[i for i, _ in full]}")

        self.assertAlmostEqual(throttle, excess, delta=0.2 * excess,
                               msg=f"container.io_throttle {throttle:.4f} s vs the reader's "
                                   f"measured excess wait {excess:.4f} s (20% allowed)")
        self.assertGreaterEqual(split, 0.9 * lo,
                                f"blocked_io+virtio_blk+io_throttle {split:.4f} s < 0.9x the "
                                f"kernel-counted blocked time {lo:.4f}..{hi:.4f} s")
        self.assertLessEqual(split, 1.1 * hi,
                             f"blocked_io+virtio_blk+io_throttle {split:.4f} s > 1.1x the "
                             f"kernel-counted blocked time {lo:.4f}..{hi:.4f} s")
        self.assertLess(virtio, 0.1 * throttle,
                        f"paravirt.virtio_blk {virtio:.4f} s: the throttle's hold-back "
                        f"({throttle:.4f} s) must not be counted as device time")
        if self.virtio:
            self.assertGreater(virtio, 0.0, "every throttled read still went to the virtio-blk "
                                            f"disk /dev/{self.disk}: paravirt.virtio_blk is 0")
        h.check_interval_sums(self, result.lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        sys.exit(reader_main(sys.argv[2:]))
    unittest.main()
