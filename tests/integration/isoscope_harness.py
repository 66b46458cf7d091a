"""Helpers for isoscope's integration tests: real BPF, real processes, real cgroups.

What is here:
  - require_bpf(): exit 77 (ctest "skipped") when BPF truly cannot work here (not root, or
    `isoscope doctor` reports the container layer unavailable because BPF itself is
    unavailable); anything else that is wrong fails instead of skipping.
  - Cgroup / cgroup(): a throw-away cgroup for one controller (cpu, memory, cpuset) on cgroup v1
    (hybrid or legacy hierarchies) or, where the controller is only on cgroup v2, under the v2
    root (cpu.max, memory.max, cpuset.cpus). On exit every process left in it is killed and the
    directory removed.
  - Processes: starts workloads, optionally inside one or more cgroups from their first
    instruction (the child joins the cgroups before exec), and kills all of them on exit.
  - run_isoscope() / trace(): runs the CLI with bounded timeouts; trace() streams `--json` lines
    and calls a callback as each line arrives (so a test can read kernel counters at interval
    boundaries).
  - small parsers for the trace JSON lines.

Environment: ISOSCOPE_BIN (the isoscope binary) and ISOSCOPE_WORKLOADS (the directory holding the
compiled tests/workloads/*.c); both are set by ctest (tests/CMakeLists.txt). Without them the
defaults point into <repo>/build.
"""

import atexit
import ctypes
import errno
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ISOSCOPE_BIN") or REPO / "build" / "isoscope")
WORKLOADS = Path(os.environ.get("ISOSCOPE_WORKLOADS") or REPO / "build" / "workloads")
# The OTLP test peers (tests/otlp) and the npm packages they run with, installed once per build
# tree by tests/otlp/node_env.py.
OTLP_DIR = REPO / "tests" / "otlp"
NODE_DIR = Path(os.environ.get("ISOSCOPE_OTLP_NODE_DIR") or BIN.parent / "otlp-node")

SKIP_EXIT_CODE = 77

CAUSES = (
    "app.on_cpu",
    "app.blocked_io",
    "app.blocked_other",
    "container.runqueue",
    "container.cpu_throttle",
    "container.memory_reclaim",
)


def log(msg):
    """Progress and measured numbers, on stderr (shown by `-v` runs and in ctest logs)."""
    print(f"[harness] {msg}", file=sys.stderr, flush=True)


def skip_module(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP_EXIT_CODE)


def workload(name):
    """Path of a compiled workload (tests/workloads/<name>.c); fails loudly if missing."""
    path = WORKLOADS / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"workload {path} not found: build the project (workloads are compiled from "
            f"tests/workloads/{name}.c) or set ISOSCOPE_WORKLOADS"
        )
    return str(path)


# ---- is BPF usable at all? ------------------------------------------------------------------

_BPF_SYSCALL_X86_64 = 321
_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_ARRAY = 2


def _bpf_syscall_error():
    """Creates and closes a tiny BPF array map; returns None when that works, else the reason."""
    import platform  # pylint: disable=import-outside-toplevel

    if platform.machine() != "x86_64":
        return None  # no syscall number table here; trust doctor
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = _BPF_MAP_TYPE_ARRAY  # map_type
    attr[1] = 4  # key_size
    attr[2] = 4  # value_size
    attr[3] = 1  # max_entries
    fd = libc.syscall(_BPF_SYSCALL_X86_64, _BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        return f"bpf(BPF_MAP_CREATE) failed: {os.strerror(err)} (errno {err})"
    os.close(fd)
    return None


def doctor(timeout=60):
    """Runs `isoscope doctor --json`; returns (CompletedProcess, parsed JSON or None)."""
    proc = run_isoscope(["doctor", "--json"], timeout=timeout)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    return proc, report


def container_layer(report):
    for layer in report.get("layers", []):
        if layer.get("layer") == "container":
            return layer
    return None


def require_bpf():
    """Returns when real BPF tests can run here; exits 77 (skip) when BPF truly cannot.

    Skips only when the process is not root, or when doctor says the container layer is
    unavailable *and* BPF itself does not work (a BPF map cannot be created, or BTF/ring buffer/
    tracepoint program types are missing). A container layer that is unavailable although BPF
    works is a bug to report, so that fails (exit 1) instead of skipping."""
    if os.geteuid() != 0:
        skip_module("needs root to load BPF programs and create cgroups")
    if not os.access(BIN, os.X_OK):
        print(f"FAIL: isoscope binary {BIN} not found (set ISOSCOPE_BIN)", flush=True)
        sys.exit(1)
    proc, report = doctor()
    if report is None:
        print(f"FAIL: `isoscope doctor --json` printed no JSON\n{describe(proc)}", flush=True)
        sys.exit(1)
    layer = container_layer(report)
    if layer is not None and layer.get("available"):
        return
    reason = (layer or {}).get("reason") or "container layer missing from doctor output"
    syscall_error = _bpf_syscall_error()
    missing = [
        f"{f['name']}: {f.get('reason', '')}"
        for f in report.get("features", [])
        if f.get("name") in ("btf", "ringbuf") and not f.get("available")
    ]
    prog_types = [
        f for f in report.get("features", []) if f.get("name") in ("raw_tp", "tp_btf")
    ]
    if prog_types and not any(f.get("available") for f in prog_types):
        missing.append("no tracepoint program type (raw_tp, tp_btf) loads")
    if syscall_error or missing:
        details = "; ".join(([syscall_error] if syscall_error else []) + missing)
        skip_module(f"BPF unavailable on this kernel ({details}); doctor: {reason}")
    print(
        "FAIL: BPF works here but doctor reports the container layer unavailable: "
        f"{reason}\n{describe(proc)}",
        flush=True,
    )
    sys.exit(1)


# ---- cgroups -----------------------------------------------------------------------------------


def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def cgroup_mounts():
    """Parses /proc/self/mountinfo: returns (v1 {controller: mount point}, v2 mount point or None).

    The first mount of a hierarchy's root ("/" in field 4) wins."""
    v1, v2 = {}, None
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            root, mount_point, fstype = fields[3], _unescape_mountinfo(fields[4]), rfields[0]
            if root != "/":
                continue
            if fstype == "cgroup2" and v2 is None:
                v2 = mount_point
            elif fstype == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in ("cpu", "memory", "cpuset", "cpuacct", "pids", "blkio", "io"):
                        v1.setdefault(opt, mount_point)
    return v1, v2


def fs_type(path):
    """File system type of the mount holding `path` (longest mount-point prefix)."""
    path = os.path.realpath(path)
    best, best_type = "", None
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or not rfields:
                continue
            mp = _unescape_mountinfo(fields[4])
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, best_type = mp, rfields[0]
    return best_type


def disk_tempdir(prefix="isoscope-test-"):
    """A new temporary directory on a disk-backed file system (page cache there is reclaimable)."""
    for base in ("/var/tmp", tempfile.gettempdir(), str(BIN.parent)):
        if os.path.isdir(base) and fs_type(base) not in ("tmpfs", "ramfs", None):
            return tempfile.mkdtemp(prefix=prefix, dir=base)
    raise RuntimeError("no disk-backed directory for temporary files (all are tmpfs)")


_cgroup_counter = itertools.count()


class Cgroup:
    """One throw-away cgroup holding one controller. Use via `with cgroup("cpu") as cg:`."""

    def __init__(self, controller):
        self.controller = controller
        v1, v2 = cgroup_mounts()
        name = f"isoscope-test-{os.getpid()}-{next(_cgroup_counter)}"
        if controller in v1:
            self.version = 1
            self.root = v1[controller]
        elif v2 is not None and controller in _read(os.path.join(v2, "cgroup.controllers")).split():
            self.version = 2
            self.root = v2
            self._enable_v2_controller(controller)
        else:
            raise RuntimeError(f"no cgroup hierarchy with the {controller} controller here")
        self.name = name
        self.path = os.path.join(self.root, name)
        self.relative = "/" + name
        os.mkdir(self.path)
        if self.version == 1 and controller == "cpuset":
            # A v1 cpuset cgroup starts with empty cpus/mems: copy the parent's.
            for f in ("cpuset.cpus", "cpuset.mems"):
                self.write(f, _read(os.path.join(self.root, f)).strip())

    def _enable_v2_controller(self, controller):
        control = os.path.join(self.root, "cgroup.subtree_control")
        if controller not in _read(control).split():
            with open(control, "w", encoding="ascii") as f:
                f.write(f"+{controller}")

    def __repr__(self):
        return f"Cgroup({self.path}, v{self.version})"

    # -- files --
    def file(self, name):
        return os.path.join(self.path, name)

    def read(self, name):
        return _read(self.file(name))

    def write(self, name, value):
        with open(self.file(name), "w", encoding="ascii") as f:
            f.write(str(value))

    def add(self, pid):
        self.write("cgroup.procs", pid)

    def pids(self):
        try:
            return [int(x) for x in self.read("cgroup.procs").split()]
        except FileNotFoundError:
            return []

    # -- limits --
    def set_cpu_quota(self, quota_us, period_us=100000):
        if self.version == 1:
            self.write("cpu.cfs_period_us", period_us)
            self.write("cpu.cfs_quota_us", quota_us)
        else:
            self.write("cpu.max", f"{quota_us} {period_us}")

    def set_cpu_weight_max(self):
        """Largest CPU weight (v1 cpu.shares 262144, v2 cpu.weight 10000)."""
        if self.version == 1:
            self.write("cpu.shares", 262144)
        else:
            self.write("cpu.weight", 10000)

    def set_memory_limit(self, limit_bytes):
        if self.version == 1:
            self.write("memory.limit_in_bytes", limit_bytes)
        else:
            self.write("memory.max", limit_bytes)

    def set_cpus(self, cpus):
        self.write("cpuset.cpus", cpus)

    # -- counters --
    def cpu_stat(self):
        stat = {}
        for line in self.read("cpu.stat").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                stat[key] = int(value)
        return stat

    def throttled_ns(self):
        """The kernel's own cumulative throttled time of this cgroup, in ns."""
        stat = self.cpu_stat()
        if "throttled_time" in stat:  # v1: ns
            return stat["throttled_time"]
        return stat["throttled_usec"] * 1000  # v2: us

    def memory_failcnt(self):
        if self.version == 1:
            return int(self.read("memory.failcnt"))
        for line in self.read("memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    # -- teardown --
    def destroy(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"cannot remove cgroup {self.path} (left: {self.pids()}): {e}"
                    ) from e
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False


def cgroup(controller):
    """Context manager: a fresh cgroup for `controller` (cpu, memory, cpuset), removed on exit."""
    return Cgroup(controller)


def _read(path):
    with open(path, encoding="ascii") as f:
        return f.read()


# ---- processes -----------------------------------------------------------------------------

_live_processes = set()


def _kill(proc, grace=0.0):
    if proc.poll() is not None:
        return
    try:
        if grace > 0:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@atexit.register
def _kill_leftovers():
    for proc in list(_live_processes):
        _kill(proc)


def _joiner(cgroup_procs_files):
    def preexec():
        # Runs in the child between fork and exec: the workload's first instruction already
        # runs inside its cgroups.
        me = str(os.getpid())
        for path in cgroup_procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, me.encode())
            finally:
                os.close(fd)

    return preexec


class Processes:
    """Starts processes and kills every one of them on exit (`with Processes() as procs:`)."""

    def __init__(self):
        self.procs = []

    def start(self, argv, cgroups=(), **popen_kwargs):
        """Starts argv (a workload name or a path as argv[0]) inside `cgroups` from its start."""
        argv = [str(a) for a in argv]
        if os.sep not in argv[0]:
            argv[0] = workload(argv[0])
        files = [cg.file("cgroup.procs") for cg in cgroups]
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn,consider-using-with
            argv, preexec_fn=_joiner(files) if files else None, **popen_kwargs
        )
        self.procs.append(proc)
        _live_processes.add(proc)
        for cg in cgroups:
            if proc.pid not in cg.pids():
                self.kill_all()
                raise RuntimeError(f"{argv[0]} (pid {proc.pid}) did not join {cg.path}")
        return proc

    def kill_all(self):
        for proc in self.procs:
            _kill(proc)
            _live_processes.discard(proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill_all()
        return False


# ---- running isoscope --------------------------------------------------------------------------


def describe(proc):
    return (
        f"command {proc.args!r} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )


def run_isoscope(args, timeout=60):
    """Runs isoscope to completion (bounded); returns the CompletedProcess (text mode)."""
    return subprocess.run(
        [str(BIN)] + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class TraceResult:
    def __init__(self, args, returncode, lines, stderr, raw):
        self.args = args
        self.returncode = returncode
        self.lines = lines  # parsed JSON objects, in order
        self.stderr = stderr
        self.raw = raw  # stdout lines as text

    def __repr__(self):
        return (
            f"TraceResult(rc={self.returncode}, {len(self.lines)} lines, args={self.args!r})\n"
            f"--- stderr ---\n{self.stderr}"
        )


def trace(args, on_line=None, timeout=None):
    """Runs `isoscope trace ARGS --json`, streaming: on_line(index, obj) is called as each JSON
    line arrives (before the next one is read). Returns a TraceResult once isoscope exits.

    Bounded: isoscope is killed after `timeout` seconds (default: --duration + 30, or 60), and in
    any case when this function leaves (exception included)."""
    args = [str(a) for a in args]
    if "--json" not in args:
        args.append("--json")
    if timeout is None:
        duration = float(args[args.index("--duration") + 1]) if "--duration" in args else 30
        timeout = duration + 30
    argv = [str(BIN), "trace"] + args
    lines, raw = [], []
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
        )
        _live_processes.add(proc)
        try:
            deadline = time.monotonic() + timeout
            buf = b""
            fd = proc.stdout.fileno()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"isoscope trace did not finish in {timeout} s: {argv}")
                ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode("utf-8", "replace")
                    raw.append(text)
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise AssertionError(f"isoscope printed a non-JSON line: {text!r}") from e
                    lines.append(obj)
                    if on_line is not None:
                        on_line(len(lines) - 1, obj)
            if buf.strip():
                raw.append(buf.decode("utf-8", "replace"))
                lines.append(json.loads(buf))
                if on_line is not None:
                    on_line(len(lines) - 1, lines[-1])
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            _kill(proc, grace=2.0)
            proc.stdout.close()
            _live_processes.discard(proc)
        err.seek(0)
        stderr = err.read()
    return TraceResult(argv, proc.returncode, lines, stderr, raw)


# ---- trace JSON lines --------------------------------------------------------------------------


def seconds(line, cause):
    for b in line["breakdown"]:
        if b["cause"] == cause:
            return b["seconds"]
    return 0.0


def share(line, cause):
    for b in line["breakdown"]:
        if b["cause"] == cause:
            return b["share"]
    return 0.0


def verdict(line):
    return line["verdict"]["cause"]


def _cause_order(cause):
    return CAUSES.index(cause) if cause in CAUSES else len(CAUSES)


def summary(line):
    """One line's numbers, short, for logs and failure messages."""
    causes = ", ".join(
        f"{b['cause'].split('.', 1)[1]}={b['seconds']:.3f}s/{b['share']:.2f}"
        for b in sorted(line["breakdown"], key=lambda b: _cause_order(b["cause"]))
    )
    return (
        f"threads={line['threads']} interval={line['interval_s']:.3f}s "
        f"verdict={verdict(line)}/{line['verdict']['share']:.2f} [{causes}]"
    )


def totals(lines, cause):
    return sum(seconds(line, cause) for line in lines)


def pooled_share(lines, cause):
    """Share of `cause` over several intervals: its seconds over all thread-seconds."""
    thread_s = sum(line["thread_seconds"] for line in lines)
    return totals(lines, cause) / thread_s if thread_s > 0 else 0.0


def wait_until(predicate, timeout, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def unused_pid():
    """A pid that no process has right now (scanned down from pid_max, where pids are rarely
    handed out)."""
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as f:
        pid_max = int(f.read())
    for candidate in range(pid_max - 1, max(pid_max - 10000, 300), -1):
        try:
            os.kill(candidate, 0)
        except ProcessLookupError:
            return candidate
        except PermissionError:
            continue
    raise RuntimeError("no unused pid found")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path):
    """The JSON objects of a file of JSON lines another process may still be writing
    (a partial last line is skipped)."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def wait_agent_ready(proc, log_text, metrics_port, timeout=90):
    """Waits until `isoscope agent` (started with --log-level info) has logged that it runs and
    answers on /metrics; raises with its log (`log_text()`) when it exits or times out."""
    import urllib.request  # pylint: disable=import-outside-toplevel

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"isoscope agent exited {proc.returncode}:\n{log_text()}")
        if "agent running" in log_text():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=5) as r:
                    r.read()
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"isoscope agent not ready in {timeout} s:\n{log_text()}")
        time.sleep(0.2)


# ---- collector, agent and their processes -----------------------------------------------------


def wait_json_line(proc, what, timeout):
    """The first stdout line of proc (started with text=True, stdout and stderr pipes) as JSON,
    within timeout seconds."""
    import selectors  # pylint: disable=import-outside-toplevel
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"{what} printed nothing in {timeout} s")
    finally:
        sel.close()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what} exited {proc.wait(timeout=5)}: {proc.stderr.read()}")
    return json.loads(line)


def stop(proc, grace=10):
    """SIGTERM, up to `grace` seconds to exit, then SIGKILL; forgets proc. None is ignored."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _kill(proc)
    _live_processes.discard(proc)


def start_collector(env, out_path, port, node="node", procs=None, cgroups=(), timeout=60):
    """Starts tests/otlp/collector.js on 127.0.0.1:`port` writing decoded exports to `out_path`
    (with `env` from node_env.node_env()), and waits until it prints {"listening": port}.
    With `procs` (a Processes) it is started through it, inside `cgroups`. Returns the Popen; on
    failure the collector is stopped before the error is raised."""
    argv = [node, str(OTLP_DIR / "collector.js"), "--port", str(port),
            "--out", str(out_path)]
    if procs is not None:
        proc = procs.start(argv, cgroups=cgroups, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    else:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True)
        _live_processes.add(proc)
    try:
        got = wait_json_line(proc, "collector.js", timeout)
        if got.get("listening") != port:
            raise RuntimeError(f"collector did not start: {got}")
    except BaseException:
        stop(proc)
        raise
    return proc


def read_log(log_file):
    """The whole text of a log file another process writes to (`log_file`: an open file)."""
    log_file.flush()
    with open(log_file.name, encoding="utf-8", errors="replace") as f:
        return f.read()


def start_agent(args, log_path, metrics_port, procs=None, cgroups=(), stop_grace=30):
    """Starts `isoscope --log-level info agent ARGS` with its log (stderr) in a new file at
    `log_path`, and waits until it runs and answers on 127.0.0.1:`metrics_port` (the caller puts
    the matching --metrics-addr in ARGS). With `procs` (a Processes) it is started through it,
    inside `cgroups`. Returns (Popen, the open log file: read it with read_log()); on failure
    the agent is stopped (SIGTERM, `stop_grace` s) and the log closed before the error is
    raised."""
    log_file = open(log_path, "w+", encoding="utf-8")  # pylint: disable=consider-using-with
    argv = [str(BIN), "--log-level", "info", "agent"] + [str(a) for a in args]
    log("starting " + " ".join(argv))
    proc = None
    try:
        if procs is not None:
            proc = procs.start(argv, cgroups=cgroups, stdout=subprocess.DEVNULL, stderr=log_file)
        else:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with
                argv, stdout=subprocess.DEVNULL, stderr=log_file, stdin=subprocess.DEVNULL)
            _live_processes.add(proc)
        wait_agent_ready(proc, lambda: read_log(log_file), metrics_port)
    except BaseException:
        stop(proc, stop_grace)
        log_file.close()
        raise
    return proc, log_file


def start_span_pipeline(cls, prefix, agent_args):
    """The span tests' class fixture: the pinned npm packages (cls.env), a temporary directory
    (cls.tmp), a process registry (cls.procs), an independent upstream collector
    (tests/otlp/collector.js on cls.upstream_port, decoded exports in cls.collector_out) and the
    agent with its OTLP/gRPC receiver on cls.otlp_port forwarding to that collector, /metrics on
    cls.metrics_port, plus `agent_args` (cls.agent, cls.agent_log). Everything is stopped by class
    cleanups, also when set-up fails half-way."""
    if str(OTLP_DIR) not in sys.path:
        sys.path.insert(0, str(OTLP_DIR))
    import node_env  # pylint: disable=import-outside-toplevel

    node_env.ensure(NODE_DIR)
    cls.env = node_env.node_env(NODE_DIR)
    cls.tmp = tempfile.mkdtemp(prefix=prefix)
    cls.procs = Processes()
    cls.addClassCleanup(cls.procs.kill_all)
    cls.metrics_port, cls.otlp_port, cls.upstream_port = free_port(), free_port(), free_port()
    cls.collector_out = os.path.join(cls.tmp, "upstream.jsonl")
    cls.collector = start_collector(cls.env, cls.collector_out, cls.upstream_port)
    cls.addClassCleanup(stop, cls.collector)
    cls.agent, cls.agent_log = start_agent(
        ["--metrics-addr", f"127.0.0.1:{cls.metrics_port}",
         "--otlp-listen", f"127.0.0.1:{cls.otlp_port}",
         "--otlp-endpoint", f"127.0.0.1:{cls.upstream_port}"] + list(agent_args),
        os.path.join(cls.tmp, "agent.log"), cls.metrics_port)
    cls.addClassCleanup(cls.agent_log.close)
    cls.addClassCleanup(stop, cls.agent, 30)



def check_interval_sums(test, lines):
    """Each interval's causes split its threads' time: the causes (network rows, which overlap
    them, aside) add up to thread_seconds, and that is at most threads x interval_s (no thread
    lives longer than the interval: time moved in from another interval would show here)."""
    for i, line in enumerate(lines, 1):
        thread_s, cap = line["thread_seconds"], line["threads"] * line["interval_s"]
        total = sum(b["seconds"] for b in line["breakdown"] if "slice" not in b)
        test.assertAlmostEqual(total, thread_s, delta=0.01 * thread_s + 0.002,
                               msg=f"line {i}: causes add up to {total:.4f} s, not the "
                                   f"interval's {thread_s:.4f} thread-s: {summary(line)}")
        test.assertLessEqual(thread_s, cap * 1.01 + 0.002,
                             f"line {i}: {thread_s:.4f} thread-s in an interval of "
                             f"{line['interval_s']:.4f} s with {line['threads']} thread(s): "
                             f"{summary(line)}")


def close_pipes(proc):
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            try:
                pipe.close()
            except OSError:
                pass
