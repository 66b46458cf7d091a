"""A private containerd with its CRI plugin, for tests that need real Kubernetes-shaped pods.

No kubelet runs here; a test plays the kubelet's part over the CRI gRPC API (through
tests/integration/cri_tool.py, run with /usr/bin/python3, the only python3 with grpcio here):

    from cri_harness import Containerd, skip_reason
    if skip_reason(): skip_module(skip_reason())
    with Containerd() as cri:
        pod = cri.run_pod("web", "shop")
        ctr = cri.create_container(pod, "busy", "busybox", ["sh", "-c", "while :; do :; done"],
                                   cpu_quota_us=20000)
        cri.container_cgroup(ctr, "cpu")   # /sys/fs/cgroup/cpu/kubepods/burstable/pod<uid>/<id>
        cri.container_pids(ctr), cri.exec(ctr, ["echo", "hi"]), cri.pod_ip(pod)

What Containerd does (settings from ../shared/MACHINE-NOTES.md, "Containers and Kubernetes pieces"):
  - a fresh temp dir holds containerd's config.toml, root, state, socket, log (containerd.log),
    runc's state root, the CNI config, the host-local IPAM state and the pods' log directories;
  - config: CRI plugin with restrict_oom_score_adj (runc cannot lower oom_score_adj here),
    netns_mounts_under_state_dir, the runc v2 shim with SystemdCgroup = false (cgroupfs names:
    /kubepods/burstable/pod<uid>/<container id>), CNI bin_dir /usr/lib/cni, and a local
    sandbox_image (the static pause of tests/workloads/pause.c, compiled with `gcc -static`);
    plugins nothing here needs (opt: it writes /opt/containerd; aufs, btrfs, zfs, devmapper) off;
  - network: its own Linux bridge (isocri<N>) holding 10.88.<N>.1/24, N picked so that the /24
    overlaps no route or address on this machine; the CNI conflist is bridge (isGateway false, no
    masquerade, no iptables) + host-local IPAM on 10.88.<N>.0/24 with a default route via
    10.88.<N>.1 + loopback. Host <-> pod and pod <-> pod traffic works; nothing is forwarded
    (ip_forward is left as it is), so nothing routes off this machine;
  - images, built by scripts/build-image.py's build_image() and imported with
    `ctr -a SOCK -n k8s.io images import`: `pause` (PAUSE_IMAGE) and `busybox` (BUSYBOX_IMAGE:
    /bin/busybox from busybox-static and a /bin symlink per applet), plus any OCI archive
    (import_image(), e.g. the agent image from `scripts/build-image.py`);
  - on close (also after an exception, at interpreter exit, and on SIGTERM where the test did not
    install its own handler): stops and removes every pod the runtime has; removes the pod-level
    cgroups containerd leaves behind (StopPodSandbox/RemovePodSandbox keep them: a kubelet removes
    them) in every v1 hierarchy and in v2, and the parents that are left empty: those this
    instance created and any under /kubepods (no kubelet runs here, so the last instance out
    removes the QoS tree); stops containerd, kills any shim, runc or container process of this
    instance left (by pid: processes whose command line names its temp dir, and those in its
    cgroups); unmounts whatever is left under the temp dir (rootfs overlays, /dev/shm, netns);
    deletes the bridge, the shims' sockets in /run/containerd/s (containerd 1.6 puts them there
    whatever its state dir), libcni's cached results in /var/lib/cni/results (and those
    directories when empty); removes the temp dir, only once nothing is mounted under it.
    leftovers() lists what remains (the self-check expects nothing). Instances in several
    processes at once are fine: own socket, bridge, subnet, dirs; shared parents are made and
    removed under an flock on /sys/fs/cgroup.

Public API (Containerd):
    Containerd(start_timeout=60.0, keep_on_failure=False, log_level="info", runtimes=None)
    start(), close() (= stop()), leftovers(), log_tail(lines=40); attributes tmp, socket, log_path, bridge,
      subnet, gateway, images {"pause", "busybox": reference}, version, timings
    cri(*args) -> stdout, cri_json(*args) -> parsed: any cri_tool.py command
    build_image(name, files, entrypoint, cmd=None, links=None, dirs=(), env=None) -> name
    build_agent_image(binary, name=None) -> name;  import_image(archive) -> [names]
    run_pod(name, namespace="default", uid=None, cgroup_parent=None, host_network=False,
            host_pid=False, host_ipc=False, runtime_handler="", labels=None, annotations=None,
            privileged=False, hostname=None, sysctls=None, attempt=0) -> pod id
    create_container(pod_id, name, image, command, args=(), cpu_quota_us=None,
                     cpu_period_us=100000, cpu_shares=None, memory_limit_bytes=None, mounts=(),
                     security_context=None, envs=None, labels=None, annotations=None,
                     working_dir="", start=True, attempt=0) -> container id
    start_container(id), stop_container(id, timeout=0), remove_container(id), stop_pod(id),
    remove_pod(id), exec(id, cmd, timeout=0) -> ExecResult(exit_code, stdout, stderr),
    pod_status(id), container_status(id), list_pods(**labels), list_containers(pod_id=None),
    pod_ip(id), container_cgroups_path(id), container_cgroup(id, controller="cpu"),
    pod_cgroup(id, controller="cpu"), container_pids(id)
Module: skip_reason() -> str or None, CriError, ExecResult, PAUSE_IMAGE, BUSYBOX_IMAGE.
JSON from cri_tool keeps protobuf's JSON mapping: int64 values are strings ("created_at").

`python3 tests/integration/cri_harness.py` (root) runs the self-check: a busybox pod with a
CPU-limited busy container, its cgroup and quota, list/exec/pod IP through cri_tool, then cleanup
and a check that nothing is left.
"""

import atexit
import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import ipaddress
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
import weakref
from collections import namedtuple
from pathlib import Path

from isoscope_harness import _unescape_mountinfo as _unescape  # mountinfo octal escapes

REPO = Path(__file__).resolve().parents[2]
CRI_TOOL = Path(__file__).resolve().parent / "cri_tool.py"
PROTO = REPO / "tests" / "cri" / "cri_test.proto"
PAUSE_SOURCE = REPO / "tests" / "workloads" / "pause.c"
BUILD_IMAGE_SCRIPT = REPO / "scripts" / "build-image.py"
SYSTEM_PYTHON = "/usr/bin/python3"
CNI_BIN_DIR = "/usr/lib/cni"
CNI_PLUGINS = ("bridge", "host-local", "loopback")
NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses
PAUSE_IMAGE = "localhost/isoscope-test/pause:latest"
BUSYBOX_IMAGE = "localhost/isoscope-test/busybox:latest"
SHIM_SOCKET_DIR = "/run/containerd/s"  # containerd 1.6 shims put their sockets here, whatever root
# libcni's result cache: containerd 1.6 cannot move it (go-cni keeps libcni's default). libcni
# makes these on demand; empty, they go at close (nothing else on this machine uses CNI).
CNI_CACHE_DIRS = ("/var/lib/cni", "/var/lib/cni/results")
# The kubelet's QoS cgroup tree (cgroupfs names). No kubelet runs here, so whatever empty parent
# of it (/kubepods, /kubepods/burstable, /kubepods/besteffort) is left at close was made for these
# tests, by this instance or by one that ran beside it: the last one out removes it.
KUBEPODS = "/kubepods"

ExecResult = namedtuple("ExecResult", "exit_code stdout stderr")


class CriError(RuntimeError):
    """A cri_tool call that failed (its stderr carries the gRPC status)."""


def log(msg):
    print(f"[cri] {msg}", file=sys.stderr, flush=True)


# ---- can this run here? ----------------------------------------------------------------------


_skip_cache = []


def skip_reason():
    """Why a private containerd + CRI cannot run here (a sentence), or None when it can."""
    if _skip_cache:
        return _skip_cache[0]
    reason = _skip_reason()
    _skip_cache.append(reason)
    return reason


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (containerd, runc, cgroups, network namespaces)"
    for tool, package in (("containerd", "containerd"), ("ctr", "containerd"),
                          ("containerd-shim-runc-v2", "containerd"), ("runc", "runc"),
                          ("gcc", "gcc"), ("protoc", "protobuf-compiler"), ("ip", "iproute2"),
                          ("busybox", "busybox-static")):
        if not _which(tool):
            return f"{tool} not found (package {package})"
    for plugin in CNI_PLUGINS:
        if not os.access(os.path.join(CNI_BIN_DIR, plugin), os.X_OK):
            return f"CNI plugin {CNI_BIN_DIR}/{plugin} not found (package containernetworking-plugins)"
    if _elf_interp(_which("busybox")) is not None:
        return f"{_which('busybox')} is not static (package busybox-static)"
    libc_a = subprocess.run(["gcc", "-print-file-name=libc.a"], capture_output=True, text=True,
                            check=False).stdout.strip()
    if not os.path.isabs(libc_a):
        return "no static libc for `gcc -static` (package libc6-dev)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (Debian's python3, with python3-grpcio)"
    proc = subprocess.run([SYSTEM_PYTHON, "-c", "import grpc, google.protobuf"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"{SYSTEM_PYTHON} lacks grpc/protobuf (packages python3-grpcio python3-protobuf)"
    if not _cgroup_mounts():
        return "no cgroup file system mounted"
    return None


def _which(tool):
    return shutil.which(tool, path=_PATH)


_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
     "/sbin", "/bin"])


def _elf_interp(path):
    return _build_image_module().elf_info(Path(path).read_bytes())[1]


_build_image_mod = []


def _build_image_module():
    """scripts/build-image.py as a module (its name has a dash: importlib from the path)."""
    if not _build_image_mod:
        spec = importlib.util.spec_from_file_location("isoscope_build_image", BUILD_IMAGE_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _build_image_mod.append(module)
    return _build_image_mod[0]


# ---- mounts and cgroups ------------------------------------------------------------------------


def _mountinfo():
    """(mount point, fs type, super options) of every mount, in /proc/self/mountinfo order."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            out.append((_unescape(fields[4]), rfields[0], rfields[2], fields[3]))
    return out


def _cgroup_mounts():
    """{mount point: [controllers]} of every cgroup hierarchy's root mount; v2 as ["unified"]
    (hybrid: /sys/fs/cgroup/unified; pure v2: /sys/fs/cgroup)."""
    out = {}
    for mp, fstype, opts, root in _mountinfo():
        if root != "/" or mp in out:
            continue
        if fstype == "cgroup2":
            out[mp] = ["unified"]
        elif fstype == "cgroup":
            out[mp] = [o for o in opts.split(",") if o not in ("rw", "ro") and "=" not in o or
                       o.startswith("name=")]
    return out


def _hierarchy(controller):
    """The mount point holding `controller` (v1), or the v2 mount for "unified" or a controller
    only v2 has."""
    mounts = _cgroup_mounts()
    for mp, ctrls in mounts.items():
        if controller in ctrls:
            return mp
    for mp, ctrls in mounts.items():
        if ctrls == ["unified"]:
            return mp
    return None


def _mounts_under(root):
    root = os.path.realpath(root).rstrip("/") + "/"
    return [mp for mp, _, _, _ in _mountinfo() if (mp + "/").startswith(root)]


def _read_pids(path):
    try:
        with open(path, encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _kill_cgroup_tree(path):
    """SIGKILLs every process in cgroup directory `path` and below; True if they all went."""
    deadline = time.monotonic() + 10
    while True:
        pids = []
        for dirpath, _, filenames in os.walk(path):
            if "cgroup.procs" in filenames:
                pids += _read_pids(os.path.join(dirpath, "cgroup.procs"))
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _rmdir_tree(path):
    """Removes cgroup directory `path` and every cgroup below it, deepest first."""
    if not os.path.isdir(path):
        return
    dirs = [dp for dp, _, _ in os.walk(path)]
    for d in sorted(dirs, key=len, reverse=True):
        for attempt in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 49:
                    raise
                time.sleep(0.02)  # the kernel frees a cgroup a moment after its last task exits


def _proc_cmdlines():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        yield int(entry), argv


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") for p in pids):
            return True
        time.sleep(0.05)
    return False


def _ip(*args, check=True):
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _used_networks():
    nets = []
    for args in (["-j", "route", "show", "table", "all"], ["-j", "addr", "show"]):
        try:
            data = json.loads(_ip(*args).stdout or "[]")
        except (RuntimeError, ValueError):
            continue
        for item in data:
            if "dst" in item and item["dst"] not in ("default", ""):
                try:
                    nets.append(ipaddress.ip_network(item["dst"], strict=False))
                except ValueError:
                    pass
            for a in item.get("addr_info", []):
                try:
                    nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
                except (KeyError, ValueError):
                    pass
    return nets


# ---- the runtime -------------------------------------------------------------------------------

_live = weakref.WeakSet()
_lock = threading.Lock()


@contextlib.contextmanager
def _host_lock():
    """Serialises, across processes (tests running side by side), making and removing the
    parents several instances share (cgroup parents such as /kubepods/burstable, libcni's cache
    directories), so that one instance's rmdir never races another's RunPodSandbox: an flock on
    the cgroup root directory (no lock file to leave behind)."""
    fd = os.open("/sys/fs/cgroup" if os.path.isdir("/sys/fs/cgroup") else "/",
                 os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@atexit.register
def _close_all():
    for c in list(_live):
        c.close()


class Containerd:
    """A private containerd 1.6 + CRI plugin (see the module doc). A context manager:
    `with Containerd() as cri:` starts it (start()) and always cleans up (close())."""

    def __init__(self, start_timeout=60.0, keep_on_failure=False, log_level="info", runtimes=None):
        """runtimes: extra CRI runtime handlers, {handler name: {"runtime_type": ... (default
        io.containerd.runc.v2), "options": {"BinaryName": ..., ...}}} (run_pod's runtime_handler
        picks one; "" is runc). keep_on_failure: leave the temp dir (logs) when close() finds
        leftovers."""
        self.start_timeout = start_timeout
        self.keep_on_failure = keep_on_failure
        self.log_level = log_level
        self.runtimes = dict(runtimes or {})
        self.version = None  # the CRI VersionResponse (dict)
        self.tmp = None
        self.socket = None
        self.log_path = None
        self.bridge = None
        self.subnet = None   # ipaddress.IPv4Network of the pods
        self.gateway = None  # the bridge's address, the pods' default route
        self.images = {}     # short name -> image reference ("pause", "busybox", ...)
        self.timings = {}    # seconds: start, images, close
        self._proc = None
        self._log_file = None
        self._pods = {}          # pod id -> {"config": its PodSandboxConfig dict (None: unknown)}
        self._containers = {}    # container id -> pod id
        self._cgroup_paths = set()  # cgroup paths (relative to a hierarchy root) of this instance
        self._created_parents = set()  # cgroup paths of ancestors that did not exist before us
        self._shim_ids = set()   # sandbox (and container) ids: their shims' socket names
        self._closed = False
        self._old_sigterm = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        reason = skip_reason()
        if reason:
            raise RuntimeError(f"cannot run containerd here: {reason}")
        t0 = time.monotonic()
        _live.add(self)
        self._install_sigterm()
        self.tmp = Path(tempfile.mkdtemp(prefix="isoscope-cri-"))
        os.chmod(self.tmp, 0o755)
        self.socket = str(self.tmp / "containerd.sock")
        self.log_path = self.tmp / "containerd.log"
        for sub in ("root", "state", "runc", "cni/net.d", "cni/ipam", "pods", "images", "build",
                    "gen"):
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
        self._setup_network()
        (self.tmp / "config.toml").write_text(self._config_toml())
        self._log_file = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        env = dict(os.environ, PATH=_PATH)
        self._proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [_which("containerd"), "--config", str(self.tmp / "config.toml"),
             "--log-level", self.log_level],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        version = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self._proc.returncode}):\n{self.log_tail()}")
            if os.path.exists(self.socket):
                proc = self._cri_proc("version", timeout=30, rpc_timeout=2)
                if proc.returncode == 0:
                    version = json.loads(proc.stdout)
                    break
            time.sleep(0.1)
        if version is None:
            raise RuntimeError(f"containerd's CRI did not answer Version in {self.start_timeout} s:"
                               f"\n{self.log_tail()}")
        while True:  # the CNI config is read at start: NetworkReady follows at once
            conds = {c["type"]: c.get("status", False)
                     for c in self.cri_json("status")["status"].get("conditions", [])}
            if conds.get("RuntimeReady") and conds.get("NetworkReady"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRI not ready: {conds}\n{self.log_tail()}")
            time.sleep(0.2)
        self.version = version
        self.timings["start"] = time.monotonic() - t0
        log(f"containerd {version.get('runtime_version')} (CRI {version.get('runtime_api_version')})"
            f" up in {self.timings['start']:.2f} s: socket {self.socket}, bridge {self.bridge} "
            f"{self.gateway}/{self.subnet.prefixlen}")
        t1 = time.monotonic()
        self._build_base_images()
        self.timings["images"] = time.monotonic() - t1
        log(f"images {self.images['pause']}, {self.images['busybox']} built and imported in "
            f"{self.timings['images']:.2f} s")

    def _install_sigterm(self):
        # ctest ends a test that runs past its timeout with SIGTERM: turn that into SystemExit
        # so that `with` blocks and atexit clean up. A handler the test set itself is kept.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def on_term(signum, _frame):
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.SIG_DFL
            signal.signal(signal.SIGTERM, on_term)

    def _setup_network(self):
        used = _used_networks()
        with _lock:
            candidates = list(range(100, 250))
            random.shuffle(candidates)
            for n in candidates:
                net = ipaddress.ip_network(f"10.88.{n}.0/24")
                name = f"isocri{n}"
                if any(net.overlaps(u) for u in used) or os.path.exists(f"/sys/class/net/{name}"):
                    continue
                if _ip("link", "add", "name", name, "type", "bridge", check=False).returncode != 0:
                    continue  # taken meanwhile
                self.bridge, self.subnet = name, net
                self.gateway = net.network_address + 1
                break
            else:
                raise RuntimeError("no free 10.88.N.0/24 (100 <= N < 250) for the pod bridge")
        _ip("addr", "add", f"{self.gateway}/{net.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        conflist = {
            "cniVersion": "0.4.0",
            "name": f"isoscope-test-{self.bridge}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet), "gateway": str(self.gateway)}]],
                        "routes": [{"dst": "0.0.0.0/0", "gw": str(self.gateway)}],
                        "dataDir": str(self.tmp / "cni" / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        (self.tmp / "cni" / "net.d" / "10-isoscope-test.conflist").write_text(
            json.dumps(conflist, indent=2))

    def _config_toml(self):
        t = self.tmp
        runc = _which("runc")
        return f"""version = 2
root = "{t}/root"
state = "{t}/state"
oom_score = 0
required_plugins = ["io.containerd.grpc.v1.cri"]
# opt writes /opt/containerd; the other snapshotters cannot work here and only log errors.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{t}/containerd.sock"

[ttrpc]
  address = "{t}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  Root = "{t}/runc"
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{t}/cni/net.d"
  max_conf_num = 1
""" + "".join(self._runtime_toml(name, rt) for name, rt in sorted(self.runtimes.items()))

    def _runtime_toml(self, name, runtime):
        def value(v):
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return str(v)
            return json.dumps(str(v))  # a TOML basic string is a JSON string

        options = {"Root": f"{self.tmp}/runc-{name}", "SystemdCgroup": False,
                   **runtime.get("options", {})}
        key = f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{json.dumps(name)}]'
        lines = ["", key,
                 f"  runtime_type = {value(runtime.get('runtime_type', 'io.containerd.runc.v2'))}",
                 "", key[:-1] + ".options]"]
        lines += [f"  {k} = {value(v)}" for k, v in sorted(options.items())]
        return "\n".join(lines) + "\n"

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no containerd log)"

    # -- cri_tool ----------------------------------------------------------------------------

    def _cri_proc(self, *args, timeout=180, rpc_timeout=None, stdin=None):
        cmd = [SYSTEM_PYTHON, str(CRI_TOOL), "--socket", self.socket, "--gen", str(self.tmp / "gen")]
        if rpc_timeout is not None:
            cmd += ["--rpc-timeout", str(rpc_timeout)]
        return subprocess.run(cmd + [str(a) for a in args], input=stdin, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def cri(self, *args, timeout=180):
        """Runs `cri_tool.py --socket SOCK ARGS...`; returns its stdout, raises CriError.

        Pods and containers made here (runp, create) are tracked like run_pod()'s and
        create_container()'s: `rmp` removes the pod-level cgroup too, close() cleans up. (A test
        that runs cri_tool.py itself leaves that to itself.)"""
        args = [str(a) for a in args]
        verb = args[0] if args else ""
        config, parent = None, None
        if verb == "runp":
            config = _json_arg(_positional(args[1:], {"--runtime-handler"}))
            parent = ((config or {}).get("linux") or {}).get("cgroup_parent")
            with _host_lock():  # runc makes the cgroup parents, libcni its cache directories
                if parent:
                    self._note_cgroup(parent)
                proc = self._cri_proc(*args, timeout=timeout)
        else:
            if verb == "rmp" and len(args) > 1:
                try:
                    parent = self._pod_cgroup_parent(args[1])
                except (CriError, KeyError, ValueError):
                    parent = None
            proc = self._cri_proc(*args, timeout=timeout)
        if proc.returncode != 0:
            raise CriError(f"cri_tool {' '.join(shlex.quote(a) for a in args)[:300]}: "
                           f"{proc.stderr.strip()}")
        if verb == "runp":
            pod_id = proc.stdout.strip()
            self._shim_ids.add(pod_id)
            self._pods[pod_id] = {"config": config}
            self._note_spec_cgroup(self.pod_status(pod_id))
        elif verb == "create":
            cid = proc.stdout.strip()
            self._containers[cid] = args[1]
            self._note_spec_cgroup(self.container_status(cid))
        elif verb == "rmp":
            self._pods.pop(args[1], None)
            for cid in [c for c, p in self._containers.items() if p == args[1]]:
                self._containers.pop(cid, None)
            if parent:
                self._remove_cgroup(parent)
                self._remove_parents()
        elif verb == "rm" and len(args) > 1:
            self._containers.pop(args[1], None)
        return proc.stdout

    def _note_spec_cgroup(self, status):
        spec = (status.get("info", {}).get("info") or {}).get("runtimeSpec") or {}
        path = (spec.get("linux") or {}).get("cgroupsPath")
        if path:
            self._note_cgroup(path)

    def cri_json(self, *args, timeout=180):
        return json.loads(self.cri(*args, timeout=timeout))

    # -- images ------------------------------------------------------------------------------

    def _build_base_images(self):
        pause = self.tmp / "build" / "pause"
        proc = subprocess.run(["gcc", "-static", "-O2", "-o", str(pause), str(PAUSE_SOURCE)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"gcc -static {PAUSE_SOURCE} failed:\n{proc.stderr}")
        self.images["pause"] = self.build_image(PAUSE_IMAGE, {"/pause": str(pause)},
                                                entrypoint=["/pause"], cmd=None)
        busybox = _which("busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        links = {f"/bin/{a}": "busybox" for a in applets if a and "/" not in a and a != "busybox"}
        self.images["busybox"] = self.build_image(
            BUSYBOX_IMAGE, {"/bin/busybox": busybox}, entrypoint=None, cmd=["sh"], links=links,
            dirs=["/tmp", "/etc", "/root"])

    def build_image(self, name, files, entrypoint, cmd=None, links=None, dirs=(), env=None):
        """Builds an image with scripts/build-image.py's build_image() (files: {image path: host
        path or bytes}; ELF files bring their libraries) and imports it; returns its name."""
        out = self.tmp / "images" / (hashlib.sha256(name.encode()).hexdigest()[:12] + ".tar")
        _build_image_module().build_image(out, name, files, entrypoint, cmd, mtime=0,
                                          links=links, dirs=dirs, env=env)
        return self.import_image(out)[0]

    def build_agent_image(self, binary, name=None):
        """The agent's image (scripts/build-image.py's), built from `binary` and imported."""
        mod = _build_image_module()
        out = self.tmp / "images" / "isoscope-oci.tar"
        mod.build_agent_image(str(binary), out, name or mod.DEFAULT_NAME, 0)
        return self.import_image(out)[0]

    def import_image(self, archive):
        """Imports an OCI image-layout archive (`ctr images import`) into the CRI's namespace;
        returns the names it carries (io.containerd.image.name) once the CRI sees them."""
        with tarfile.open(archive) as tar:
            index = json.load(tar.extractfile("index.json"))
        names = [m.get("annotations", {}).get("io.containerd.image.name") for m in index["manifests"]]
        names = [n for n in names if n]
        proc = subprocess.run([_which("ctr"), "-a", self.socket, "-n", NAMESPACE, "images",
                               "import", str(archive)], capture_output=True, text=True,
                              timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images import {archive}: {proc.stdout}{proc.stderr}")
        deadline = time.monotonic() + 30
        for name in names:
            while self._cri_proc("inspecti", name).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the CRI does not see imported image {name}")
                time.sleep(0.1)
        return names

    # -- pods and containers -----------------------------------------------------------------

    def run_pod(self, name, namespace="default", uid=None, cgroup_parent=None, host_network=False,
                host_pid=False, host_ipc=False, runtime_handler="", labels=None, annotations=None,
                privileged=False, hostname=None, sysctls=None, attempt=0):
        """RunPodSandbox the way a kubelet would (kubelet's io.kubernetes.pod.* labels, a log
        directory, namespace options); returns the pod sandbox id. cgroup_parent defaults to
        /kubepods/burstable/pod<uid> (uid: a fresh UUID unless given); "" leaves it to
        containerd (/k8s.io/<id>)."""
        uid = uid or str(uuid.uuid4())
        if cgroup_parent is None:
            cgroup_parent = f"/kubepods/burstable/pod{uid}"
        log_dir = self.tmp / "pods" / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        ns = {"network": "NODE" if host_network else "POD",
              "pid": "NODE" if host_pid else "CONTAINER",
              "ipc": "NODE" if host_ipc else "POD"}
        config = {
            "metadata": {"name": name, "uid": uid, "namespace": namespace, "attempt": attempt},
            "hostname": hostname if hostname is not None else ("" if host_network else name),
            "log_directory": str(log_dir),
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                       "io.kubernetes.pod.uid": uid, **(labels or {})},
            "annotations": dict(annotations or {}),
            "linux": {
                "cgroup_parent": cgroup_parent,
                "security_context": {"namespace_options": ns, "privileged": privileged},
                "sysctls": dict(sysctls or {}),
            },
        }
        args = ["runp", json.dumps(config)]
        if runtime_handler:
            args += ["--runtime-handler", runtime_handler]
        return self.cri(*args).strip()  # cri() tracks the pod and its cgroups

    def _note_cgroup(self, path):
        """Remembers a cgroup path this instance makes, and which of its ancestors are new."""
        path = "/" + path.strip("/")
        with _lock:
            self._cgroup_paths.add(path)
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                anc = "/" + "/".join(parts[:i])
                if anc in self._created_parents:
                    continue
                if not any(os.path.isdir(mp + anc) for mp in _cgroup_mounts()):
                    self._created_parents.add(anc)

    def create_container(self, pod_id, name, image, command, args=(), cpu_quota_us=None,
                         cpu_period_us=100000, cpu_shares=None, memory_limit_bytes=None, mounts=(),
                         security_context=None, envs=None, labels=None, annotations=None,
                         working_dir="", start=True, attempt=0):
        """CreateContainer (+ StartContainer unless start=False) in pod `pod_id`; returns the
        container id. image: a reference, or a short name of self.images ("busybox", "pause").
        cpu_quota_us: CFS quota per cpu_period_us (default no limit). mounts: CRI Mount dicts
        ({"host_path", "container_path", "readonly", "propagation": "PROPAGATION_..."}) or
        (host_path, container_path[, readonly]) tuples. security_context: a CRI
        LinuxContainerSecurityContext dict; its namespace_options default to the pod's (as the
        kubelet sets them). envs: {name: value}. attempt: the metadata's restart count (a
        kubelet creates the same container name again with attempt + 1)."""
        pod = self._pods.get(pod_id) or {}
        sandbox_config = pod.get("config")
        if sandbox_config is None:  # a pod this instance did not start: what its status says
            sandbox_config = self.pod_status(pod_id)["info"].get("info", {}).get("config", {})
        meta = sandbox_config.get("metadata", {})
        sc = dict(security_context or {})
        pod_ns = sandbox_config.get("linux", {}).get("security_context", {}).get("namespace_options")
        if "namespace_options" not in sc and pod_ns:
            sc["namespace_options"] = pod_ns
        resources = {}
        if cpu_quota_us is not None:
            resources.update(cpu_quota=int(cpu_quota_us), cpu_period=int(cpu_period_us))
        if cpu_shares is not None:
            resources["cpu_shares"] = int(cpu_shares)
        if memory_limit_bytes is not None:
            resources["memory_limit_in_bytes"] = int(memory_limit_bytes)
        cri_mounts = []
        for m in mounts:
            if isinstance(m, dict):
                cri_mounts.append(m)
            else:
                cri_mounts.append({"host_path": str(m[0]), "container_path": str(m[1]),
                                   "readonly": bool(m[2]) if len(m) > 2 else False})
        config = {
            "metadata": {"name": name, "attempt": attempt},
            "image": {"image": self.images.get(image, image)},
            "command": list(command or []),
            "args": list(args or []),
            "working_dir": working_dir,
            "envs": [{"key": k, "value": str(v)} for k, v in (envs or {}).items()],
            "mounts": cri_mounts,
            "labels": {"io.kubernetes.container.name": name,
                       "io.kubernetes.pod.name": meta.get("name", ""),
                       "io.kubernetes.pod.namespace": meta.get("namespace", ""),
                       "io.kubernetes.pod.uid": meta.get("uid", ""), **(labels or {})},
            "annotations": dict(annotations or {}),
            "log_path": f"{name}/{attempt}.log",
            "linux": {"resources": resources, "security_context": sc},
        }
        cid = self.cri("create", pod_id, json.dumps(config), json.dumps(sandbox_config)).strip()
        if start:
            self.start_container(cid)
        return cid

    def start_container(self, container_id):
        self.cri("start", container_id)

    def stop_container(self, container_id, timeout=0):
        self.cri("stop", container_id, "--timeout", int(timeout), timeout=180 + timeout)

    def remove_container(self, container_id):
        self.cri("rm", container_id)

    def stop_pod(self, pod_id):
        self.cri("stopp", pod_id)

    def remove_pod(self, pod_id):
        """RemovePodSandbox, then the pod-level cgroup it leaves behind (and the parents this
        instance created, where empty)."""
        self.cri("rmp", pod_id)  # cri() removes the pod-level cgroup after RemovePodSandbox

    def _pod_cgroup_parent(self, pod_id):
        pod = self._pods.get(pod_id)
        if pod is not None and pod.get("config") is not None:
            return ((pod["config"].get("linux") or {}).get("cgroup_parent")) or None
        spec = self.pod_status(pod_id)["info"].get("info", {}).get("runtimeSpec", {})
        path = spec.get("linux", {}).get("cgroupsPath")
        return os.path.dirname(path) if path else None

    def exec(self, container_id, cmd, timeout=0):
        """ExecSync of cmd (a list; a string runs with sh -c): ExecResult(exit_code, stdout,
        stderr), the outputs as str."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        r = self.cri_json("exec", "--json", "--timeout", int(timeout), container_id, "--", *cmd,
                          timeout=180 + timeout)
        return ExecResult(r["exit_code"], r["stdout"], r["stderr"])

    def pod_status(self, pod_id):
        """PodSandboxStatus, verbose: {"status": ..., "info": {"info": {pid, runtimeSpec, ...}}}."""
        return self.cri_json("inspectp", pod_id)

    def container_status(self, container_id):
        """ContainerStatus, verbose: {"status": ..., "info": {"info": {pid, runtimeSpec, ...}}}."""
        return self.cri_json("inspect", container_id)

    def list_pods(self, **labels):
        return self.cri_json("pods", *[f"--label={k}={v}" for k, v in labels.items()])

    def list_containers(self, pod_id=None):
        return self.cri_json("ps", *(["--pod", pod_id] if pod_id else []))

    def pod_ip(self, pod_id):
        return self.pod_status(pod_id)["status"].get("network", {}).get("ip", "")

    def container_cgroups_path(self, container_id):
        """The container's cgroupsPath (runtime spec), e.g. /kubepods/burstable/pod<uid>/<id>."""
        spec = self.container_status(container_id)["info"]["info"]["runtimeSpec"]
        return spec["linux"]["cgroupsPath"]

    def container_cgroup(self, container_id, controller="cpu"):
        """The container's cgroup directory in the hierarchy of `controller` (v1), or in v2
        ("unified", or a controller only v2 has)."""
        return _hierarchy(controller) + self.container_cgroups_path(container_id)

    def pod_cgroup(self, pod_id, controller="cpu"):
        """The pod-level cgroup directory (the cgroup_parent) in `controller`'s hierarchy."""
        return _hierarchy(controller) + "/" + self._pod_cgroup_parent(pod_id).strip("/")

    def container_pids(self, container_id):
        """The pids in the container's cgroup (its processes and any exec'd ones); the init pid
        ContainerStatus reports when no cgroup directory can be read."""
        path = self.container_cgroups_path(container_id)
        for controller in ("pids", "cpu", "unified"):
            mp = _hierarchy(controller)
            if mp and os.path.exists(f"{mp}{path}/cgroup.procs"):
                return _read_pids(f"{mp}{path}/cgroup.procs")
        pid = self.container_status(container_id)["info"]["info"].get("pid")
        return [pid] if pid else []

    # -- cleanup -----------------------------------------------------------------------------

    def _remove_cgroup(self, path):
        for mp in _cgroup_mounts():
            d = mp + "/" + path.strip("/")
            if os.path.isdir(d):
                if not _kill_cgroup_tree(d):
                    log(f"processes remain in {d}")
                try:
                    _rmdir_tree(d)
                except OSError as e:
                    log(f"cannot remove {d}: {e}")

    def _parents(self):
        """Parents to remove once empty: those this instance created, and any under KUBEPODS."""
        out = set(self._created_parents)
        for path in self._cgroup_paths:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                anc = "/" + "/".join(parts[:i])
                if anc == KUBEPODS or anc.startswith(KUBEPODS + "/"):
                    out.add(anc)
        return out

    def _remove_parents(self):
        with _host_lock():
            for anc in sorted(self._parents(), key=len, reverse=True):
                for mp in _cgroup_mounts():
                    try:
                        os.rmdir(mp + anc)
                    except OSError:
                        pass  # not empty (another pod, another test) or gone

    def close(self):
        """Stops everything this instance started and removes what it made; idempotent."""
        if self._closed or self.tmp is None:
            self._closed = True
            return
        self._closed = True
        t0 = time.monotonic()
        errors = []

        def attempt(what, fn, *a):
            try:
                fn(*a)
            except Exception as e:  # pylint: disable=broad-except
                errors.append(f"{what}: {e}")

        alive = self._proc is not None and self._proc.poll() is None
        if alive:
            # Every pod this runtime has is this instance's: stop and remove them all.
            try:
                pods = [p["id"] for p in self.cri_json("pods", timeout=60)]
            except (CriError, subprocess.TimeoutExpired, ValueError) as e:
                errors.append(f"ListPodSandbox: {e}")
                pods = list(self._pods)
            for pod_id in pods:
                self._shim_ids.add(pod_id)
                try:
                    parent = self._pod_cgroup_parent(pod_id)
                    if parent:
                        self._note_cgroup(parent)
                except (CriError, KeyError, ValueError):
                    pass
                attempt(f"StopPodSandbox {pod_id[:12]}", self.stop_pod, pod_id)
                attempt(f"RemovePodSandbox {pod_id[:12]}", self.cri, "rmp", pod_id)
        # containerd, then whatever of this instance still runs (shims, runc, containers).
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
        if self._log_file:
            self._log_file.close()
        mine = [pid for pid, argv in _proc_cmdlines()
                if pid != os.getpid() and any(str(self.tmp) in a for a in argv)]
        if mine:
            log(f"killing leftover processes of this instance: {mine}")
            for pid in mine:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _wait_gone(mine, 10)
        for path in sorted(self._cgroup_paths, key=len, reverse=True):
            self._remove_cgroup(path)
        self._remove_parents()
        # Mounts left under the temp dir (rootfs overlays, /dev/shm, netns of a killed runtime).
        for _ in range(3):
            mps = sorted(_mounts_under(self.tmp), key=len, reverse=True)
            if not mps:
                break
            for mp in mps:
                subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
        # The bridge (the pods' veths went with their network namespaces).
        if self.bridge and os.path.exists(f"/sys/class/net/{self.bridge}"):
            for veth in os.listdir(f"/sys/class/net/{self.bridge}/brif") if os.path.isdir(
                    f"/sys/class/net/{self.bridge}/brif") else []:
                _ip("link", "del", veth, check=False)
            attempt(f"ip link del {self.bridge}", _ip, "link", "del", self.bridge)
        for sid in self._shim_ids:
            sock = os.path.join(SHIM_SOCKET_DIR, _shim_socket_name(self.socket, sid))
            try:
                os.unlink(sock)
            except FileNotFoundError:
                pass
            except OSError as e:
                errors.append(f"rm {sock}: {e}")
        # libcni's cached results (<network>-<sandbox id>-<ifname>): CNI DEL removes them; a
        # killed runtime leaves them. Then the cache directories, where empty.
        for name in self._cni_cache_files():
            try:
                os.unlink(os.path.join(CNI_CACHE_DIRS[1], name))
            except OSError:
                pass
        with _host_lock():
            for d in sorted(CNI_CACHE_DIRS, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # not empty (another runtime's results) or not there
        left = self.leftovers(include_tmp=False)
        if _mounts_under(self.tmp):
            errors.append(f"mounts remain under {self.tmp}: not removing it")
        elif left and self.keep_on_failure:
            log(f"leftovers, temp dir kept for its logs: {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        _live.discard(self)
        if self._old_sigterm is not None and not _live:
            signal.signal(signal.SIGTERM, self._old_sigterm)
        self.timings["close"] = time.monotonic() - t0
        for e in errors:
            log(f"cleanup: {e}")
        left = self.leftovers()
        if left:
            log("LEFT BEHIND: " + "; ".join(left))
        log(f"cleaned up in {self.timings['close']:.2f} s")

    def _cni_cache_files(self):
        try:
            names = os.listdir(CNI_CACHE_DIRS[1])
        except OSError:
            return []
        return [n for n in names if any(f"-{sid}-" in n for sid in self._shim_ids)]

    stop = close  # the same: stops and removes everything

    def leftovers(self, include_tmp=True):
        """What of this instance is still there (empty once close() did its work)."""
        out = []
        if self.tmp is None:
            return out
        procs = [pid for pid, argv in _proc_cmdlines()
                 if pid != os.getpid() and any(str(self.tmp) in a for a in argv)]
        if procs:
            out.append(f"processes {procs}")
        if self.bridge and os.path.exists(f"/sys/class/net/{self.bridge}"):
            out.append(f"bridge {self.bridge}")
        for path in sorted(self._cgroup_paths):
            for mp in _cgroup_mounts():
                if os.path.isdir(mp + path):
                    out.append(f"cgroup {mp + path}")
        # A parent (/kubepods, /kubepods/burstable) counts only while it is empty: with cgroups
        # below it, another runtime (another test) uses it now.
        for path in sorted(self._parents()):
            for mp in _cgroup_mounts():
                d = mp + path
                if os.path.isdir(d) and not any(e.is_dir() for e in os.scandir(d)):
                    out.append(f"cgroup {d}")
        mps = _mounts_under(self.tmp)
        if mps:
            out.append(f"mounts {mps}")
        for sid in self._shim_ids:
            sock = os.path.join(SHIM_SOCKET_DIR, _shim_socket_name(self.socket, sid))
            if os.path.exists(sock):
                out.append(f"shim socket {sock}")
        out += [f"CNI cache {CNI_CACHE_DIRS[1]}/{n}" for n in self._cni_cache_files()]
        # An empty cache directory (holding others' results it stays: another runtime uses it).
        out += [f"CNI cache dir {d}" for d in CNI_CACHE_DIRS if os.path.isdir(d) and not os.listdir(d)]
        if include_tmp and self.tmp.exists():
            out.append(f"temp dir {self.tmp}")
        return out


def _positional(args, options_with_value):
    """The first positional argument of a cri_tool argument list."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in options_with_value:
            skip = True
        elif not a.startswith("--"):
            return a
    return None


def _json_arg(arg):
    """cri_tool's JSON argument (inline JSON or a file; stdin is not read here), or None."""
    if not arg or arg == "-":
        return None
    try:
        if arg.lstrip().startswith("{"):
            return json.loads(arg)
        with open(arg, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _shim_socket_name(address, sandbox_id):
    """containerd 1.6 (runtime/v2/shim/util_unix.go SocketAddress): the shim of a pod listens on
    /run/containerd/s/<sha256(<containerd address>/<namespace>/<sandbox id>)>."""
    return hashlib.sha256(os.path.join(address, NAMESPACE, sandbox_id).encode()).hexdigest()


# ---- self-check -------------------------------------------------------------------------------


def _self_check():
    reason = skip_reason()
    if reason:
        print(f"SKIP: {reason}")
        return 77
    t0 = time.monotonic()
    with Containerd(keep_on_failure=True) as cri:
        tmp = cri.tmp
        uid = str(uuid.uuid4())
        t1 = time.monotonic()
        pod = cri.run_pod("selfcheck", "isoscope-test", uid=uid)
        ctr = cri.create_container(pod, "busy", "busybox", ["sh", "-c", "while :; do :; done"],
                                   cpu_quota_us=20000)
        t_run = time.monotonic() - t1
        print(f"pod {pod}\ncontainer {ctr}\n(run_pod + create/start: {t_run:.2f} s)")
        cg = cri.container_cgroup(ctr, "cpu")
        expect = f"/sys/fs/cgroup/cpu/kubepods/burstable/pod{uid}/{ctr}"
        print(f"cgroup {cg}")
        if _hierarchy("cpu") == "/sys/fs/cgroup/cpu":
            assert cg == expect, (cg, expect)
            quota = Path(cg, "cpu.cfs_quota_us").read_text().strip()
            period = Path(cg, "cpu.cfs_period_us").read_text().strip()
            print(f"cpu.cfs_quota_us {quota}, cpu.cfs_period_us {period}")
            assert quota == "20000", quota
            assert period == "100000", period
        else:  # pure cgroup v2
            cpu_max = Path(cg, "cpu.max").read_text().strip()
            print(f"cpu.max {cpu_max}")
            assert cpu_max == "20000 100000", cpu_max
        pids = cri.container_pids(ctr)
        comms = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in pids}
        print(f"cgroup.procs {pids} {comms}")
        assert pids and all(c in ("sh", "busybox") for c in comms.values()), comms
        time.sleep(1.0)
        stat = dict(line.split() for line in Path(cg, "cpu.stat").read_text().splitlines()) \
            if Path(cg, "cpu.stat").exists() else {}
        print(f"cpu.stat {stat}")
        if "nr_throttled" in stat:
            assert int(stat["nr_throttled"]) > 0, "the busy loop was never throttled"
        pods = cri.list_pods()
        ctrs = cri.list_containers()
        print("ListPodSandbox:", json.dumps([(p["id"][:12], p["metadata"], p["state"]) for p in pods]))
        print("ListContainers:", json.dumps([(c["id"][:12], c["metadata"], c.get("state"))
                                             for c in ctrs]))
        assert [p["id"] for p in pods] == [pod]
        assert [c["id"] for c in ctrs] == [ctr] and ctrs[0]["state"] == "CONTAINER_RUNNING"
        r = cri.exec(ctr, ["echo", "hi"])
        print(f"ExecSync echo hi -> {r}")
        assert r == ExecResult(0, "hi\n", ""), r
        r = cri.exec(ctr, "echo err >&2; exit 3")
        assert r == ExecResult(3, "", "err\n"), r
        ip = cri.pod_ip(pod)
        print(f"pod IP {ip} (bridge {cri.bridge}, {cri.subnet})")
        assert ipaddress.ip_address(ip) in cri.subnet, ip
        r = cri.exec(ctr, ["ping", "-c", "1", "-W", "2", str(cri.gateway)])
        print(f"pod -> bridge ping: exit {r.exit_code}")
        assert r.exit_code == 0, r
        ping = subprocess.run([_which("busybox"), "ping", "-c", "1", "-W", "2", ip],
                              capture_output=True, text=True, check=False)
        print(f"host -> pod ping: exit {ping.returncode}")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # The second container of a second pod, through the raw CLI and stopped by hand.
        pod2 = cri.run_pod("second", "isoscope-test")
        c2 = cri.create_container(pod2, "sleeper", "busybox", ["sleep", "3600"])
        parent2 = cri.pod_cgroup(pod2, "unified").split("/kubepods/", 1)[1]
        assert os.path.isdir(cri.pod_cgroup(pod2, "cpu")), "no pod-level cgroup"
        cri.stop_container(c2)
        assert cri.container_status(c2)["status"]["state"] == "CONTAINER_EXITED"
        cri.remove_container(c2)
        cri.stop_pod(pod2)
        cri.remove_pod(pod2)
        still = [mp for mp in _cgroup_mounts() if os.path.exists(f"{mp}/kubepods/{parent2}")]
        assert not still, f"pod-level cgroup of the removed pod left in {still}"
        print(f"second pod: run, stop, remove one by one; its pod cgroup /kubepods/{parent2} is gone "
              f"from all {len(_cgroup_mounts())} hierarchies")
    left = cri.leftovers()
    print(f"timings: start {cri.timings['start']:.2f} s (containerd up, CRI ready), images "
          f"{cri.timings['images']:.2f} s (build + import pause, busybox), run pod + container "
          f"{t_run:.2f} s, cleanup {cri.timings['close']:.2f} s; total {time.monotonic() - t0:.2f} s")
    if left:
        print("FAIL: left behind: " + "; ".join(left))
        return 1
    checks = {
        "containerd process": [p for p, argv in _proc_cmdlines() if any(str(tmp) in a for a in argv)],
        "bridge": os.path.exists(f"/sys/class/net/{cri.bridge}"),
        "pod cgroup dirs": [mp for mp in _cgroup_mounts()
                            if os.path.exists(f"{mp}/kubepods/burstable/pod{uid}")],
        "mounts under temp dir": _mounts_under(tmp),
        "temp dir": tmp.exists(),
    }
    print("after cleanup: " + ", ".join(f"{k}: {v or 'none'}" for k, v in checks.items()))
    if any(checks.values()):
        print("FAIL")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(_self_check())
