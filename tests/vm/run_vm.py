#!/usr/bin/env python3
"""Boots a test kernel under QEMU (software emulation, TCG) and collects the guest's results.

The pieces, all usable from tests/integration/test_vm_kernels.py and from the command line:

  load_kernels()     the kernel list, tests/vm/kernels.txt
  fetch_kernel()     tests/vm/fetch_kernel.sh: the Debian package, extracted into the cache
  build_initramfs()  tests/vm/make_initramfs.sh: busybox, the agent, workloads, guest scenarios
  boot()             qemu-system-x86_64 with a hard timeout; the serial console is captured and
                     the blocks the guest prints between
                         ISOSCOPE-RESULT-BEGIN <name>
                         ...
                         ISOSCOPE-RESULT-END <name>
                     are returned by name. A guest that does not print ISOSCOPE-GUEST-UP within
                     boot_timeout_s, or ends without ISOSCOPE-GUEST-DONE, is an error that
                     quotes the last console lines. With nics=VIRTIO_NICS the guest has two
                     virtio-net NICs on QEMU's user network (below); without, no network. With
                     disks=VIRTIO_DISKS two virtio-blk disks (below); without, none.
  EchoServer         a TCP echo server on the host's 127.0.0.1, which the guest reaches through
                     either NIC at 10.0.2.2:PORT / 10.0.3.2:PORT (QEMU's user network forwards
                     connections to the gateway address to the host's loopback); its port goes
                     to the guest as isoscope.echo_port=PORT on the kernel command line.

The two NICs (identified in the guest by MAC address, not by name order):
  52:54:00:00:00:10  10.0.2.0/24, a plain virtio-net device
  52:54:00:00:00:11  10.0.3.0/24, the same device with tx=timer,x-txtimer=20000000: QEMU's device
                     model flushes that NIC's TX virtqueue only 20 ms after the guest's first
                     notification, so every transmitted packet waits up to 20 ms in the
                     device's queue before the guest driver gets its TX completion (the
                     virtio scenario, tests/vm/guest/scenarios/60-virtio.sh)

The two disks (identified in the guest by /sys/block/vdX/serial, not by name order): raw
images of DISK_MB MiB each, created sparse in the run's temporary directory and removed with it,
on virtio-blk-pci with cache=none,aio=threads (QEMU opens them O_DIRECT on the host):
  isoscope-fast  no limit: a read costs TCG's device-model round trip
  isoscope-slow  the same with QEMU's own I/O throttling, throttling.iops-total=50: once the
                 default burst is spent, one 4 KiB read at a time completes every ~20 ms, so
                 each waits ~20 ms inside the device (the virtioblk scenario,
                 tests/vm/guest/scenarios/80-virtioblk.sh)

The CPU model is qemu64 with AMD-V (-cpu qemu64,+svm, CPU_MODEL): QEMU emulates SVM, so the
guest's kvm-amd module gives a working /dev/kvm and real kvm_entry/kvm_exit tracepoints for the
nested-KVM scenario (tests/vm/guest/scenarios/70-kvm.sh). Without NPT in the model, kvm-amd
runs its guests with shadow paging (exit reason "PF excp" on the first access); "-cpu max",
the model used before, has SVM with NPT too (exit reason "npf" instead) and also runs every
scenario: nothing else needed "max" (--cpu on the command line picks another model).

Command line (from a build tree; everything lands under <build>/vm-cache):

  tests/vm/run_vm.py --build build-vm [--kernel debian-cloud-6.1] [--scenarios doctor,throttle]
                     [--no-nics] [--no-disks] [--cpu MODEL] [--show]

(the command line boots with VIRTIO_NICS and an EchoServer unless --no-nics, and with
VIRTIO_DISKS unless --no-disks).

Runs need no root and no KVM: QEMU emulates the CPU (the host's /dev/kvm cannot run a Linux
guest). Cached downloads make later runs offline.
"""

import argparse
import bisect
import os
import re
import shlex
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
REPO = VM_DIR.parents[1]
KERNELS_TXT = VM_DIR / "kernels.txt"

BEGIN = "ISOSCOPE-RESULT-BEGIN "
END = "ISOSCOPE-RESULT-END "
GUEST_UP = "ISOSCOPE-GUEST-UP"
GUEST_DONE = "ISOSCOPE-GUEST-DONE"
GUEST_DISTURBED = "ISOSCOPE-GUEST-DISTURBED"
PRINTK = re.compile(r"^\[\s*\d+\.\d+\] ")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc")


# QEMU arguments of the guest's NICs: (-netdev value, -device value) per NIC. Both on QEMU's
# user network (slirp: no root, no host interface); the second one's device model holds
# transmitted packets in its TX virtqueue for up to 20 ms (x-txtimer is in nanoseconds).
FAST_MAC, SLOW_MAC = "52:54:00:00:00:10", "52:54:00:00:00:11"
VIRTIO_NICS = (
    ("user,id=n0,net=10.0.2.0/24", f"virtio-net-pci,netdev=n0,mac={FAST_MAC}"),
    ("user,id=n1,net=10.0.3.0/24",
     f"virtio-net-pci,netdev=n1,mac={SLOW_MAC},tx=timer,x-txtimer=20000000"),
)


# The guest's CPU model: qemu64 plus AMD-V, which QEMU's TCG emulates (nested KVM in the guest).
CPU_MODEL = "qemu64,+svm"

# The guest's two virtio-blk disks: (serial, extra -drive options) per disk. Each is a sparse
# raw image of DISK_MB MiB in the boot's temporary directory. The slow one is limited by QEMU's
# block throttling to 50 requests per second, so once QEMU's small default burst (iops/10) is
# used up, with one request in flight each takes ~20 ms in the device; the fast one has no
# limit.
DISK_MB = 64
FAST_DISK, SLOW_DISK = "isoscope-fast", "isoscope-slow"
VIRTIO_DISKS = (
    (FAST_DISK, ""),
    (SLOW_DISK, "throttling.iops-total=50"),
)


def _o_direct_ok(path):
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError:
        return False


def disk_args(tmp, disks):
    """QEMU arguments for `disks` ((serial, extra -drive options) pairs): one sparse raw image
    per disk in directory tmp, on virtio-blk-pci, cache=none (O_DIRECT on the host; where the
    temporary directory's file system has no O_DIRECT, e.g. tmpfs, cache=writeback),
    aio=threads."""
    args = []
    for i, (serial, extra) in enumerate(disks):
        image = os.path.join(tmp, f"disk{i}.img")
        with open(image, "wb") as f:
            f.truncate(DISK_MB << 20)
        cache = "none" if _o_direct_ok(image) else "writeback"
        drive = f"file={image},format=raw,if=none,id=disk{i},cache={cache},aio=threads"
        if extra:
            drive += "," + extra
        args += ["-drive", drive, "-device", f"virtio-blk-pci,drive=disk{i},serial={serial}"]
    return args


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    """A threaded TCP echo server on 127.0.0.1 (ephemeral port, in `port`); start() serves in
    a daemon thread, stop() shuts it down. Usable as a context manager."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.port = self.server_address[1]
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Unavailable(Exception):
    """A prerequisite outside the project's control is missing (no QEMU, no mirror and no
    cache): the test is skipped, not failed."""


class VmError(Exception):
    """The guest did not boot, hung, or a harness step failed: a test failure."""


class GuestHung(VmError):
    """The whole guest fell silent (no console output, not even from its scenario watchdog)."""


class GuestDisturbed(VmError):
    """The guest booted without all its CPUs (a secondary CPU failed to come up under emulation
    on a busy host) and ran nothing: worth booting again."""


@dataclass
class Kernel:
    name: str
    meta: str
    # Features `isoscope doctor` must report available on this kernel (e.g. fentry, kprobe),
    # from an optional `features=a,b` field in kernels.txt.
    features: list = field(default_factory=list)
    # Kernel modules (paths under lib/modules/<release>/kernel) to put into the initramfs and
    # insmod at boot, from an optional `modules=a.ko,b.ko` field.
    modules: list = field(default_factory=list)
    # Extra kernel command line, from an optional `append=a,b` field (commas become spaces).
    append: str = ""


def load_kernels(path=KERNELS_TXT):
    """Parses kernels.txt: `NAME META [key=value ...]` per line, # comments."""
    kernels = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) < 2:
            raise ValueError(f"{path}:{lineno}: expected NAME META-PACKAGE [key=value ...]")
        k = Kernel(words[0], words[1])
        for opt in words[2:]:
            key, _, value = opt.partition("=")
            items = [v for v in value.split(",") if v]
            if key == "features":
                k.features = items
            elif key == "modules":
                k.modules = items
            elif key == "append":
                k.append = " ".join(items)
            else:
                raise ValueError(f"{path}:{lineno}: unknown field {key!r}")
        kernels.append(k)
    return kernels


def default_cache(isoscope_bin):
    """<build>/vm-cache, next to the agent binary, unless ISOSCOPE_VM_CACHE says otherwise."""
    env = os.environ.get("ISOSCOPE_VM_CACHE")
    if env:
        return Path(env)
    return Path(isoscope_bin).resolve().parent / "vm-cache"


def find_qemu():
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise Unavailable(
            "qemu-system-x86_64 not installed (scripts/install-deps.sh installs qemu-system-x86)"
        )
    return qemu


def fetch_kernel(kernel, cache):
    """Returns the cached kernel directory (vmlinuz, modules/, release, package)."""
    proc = subprocess.run(
        [str(VM_DIR / "fetch_kernel.sh"), kernel.name, kernel.meta, str(cache)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if proc.returncode == 77:
        lines = [l for l in proc.stderr.splitlines() if l.startswith("SKIP:")]
        raise Unavailable(lines[-1][5:].strip() if lines else proc.stderr.strip())
    if proc.returncode != 0:
        raise VmError(f"fetch_kernel.sh {kernel.name} failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


def build_initramfs(kernel_dir, isoscope_bin, workloads, out, modules=()):
    args = [str(VM_DIR / "make_initramfs.sh"), str(out), str(isoscope_bin), str(workloads)]
    if modules:
        args += [str(kernel_dir), *modules]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode == 3:
        raise Unavailable(proc.stderr.strip())
    if proc.returncode != 0:
        raise VmError(f"make_initramfs.sh failed ({proc.returncode}):\n{proc.stderr}")
    return Path(out)


@dataclass
class VmRun:
    results: dict  # block name -> text (printk lines removed)
    console: str  # the whole console, \r and terminal escapes removed
    wall_s: float
    boot_s: float  # until ISOSCOPE-GUEST-UP
    kernel_messages: list  # printk lines that landed inside result blocks

    def lines(self, name):
        return [l for l in self.results.get(name, "").splitlines() if l.strip()]


def parse_results(console):
    results, stray = {}, []
    current, body = None, []
    for line in console.splitlines():
        if current is None:
            i = line.find(BEGIN)
            if i >= 0:
                current, body = line[i + len(BEGIN):].strip(), []
            continue
        if line.strip() == END + current:
            results[current] = "\n".join(body) + ("\n" if body else "")
            current = None
        elif PRINTK.match(line):
            stray.append(line)
        else:
            body.append(line)
    return results, stray


def tail(console, n=40):
    return "\n".join(console.splitlines()[-n:])


def load_symbols(kernel_dir):
    """[(address, name)] sorted, from the package's System.map (empty when absent or, as in
    Debian's packages, a placeholder pointing to the -dbg package)."""
    path = Path(kernel_dir) / "System.map"
    if not path.exists():
        return []
    syms = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    return syms


def symbolize(syms, addr):
    i = bisect.bisect_right(syms, (addr, "\uffff")) - 1
    if i < 0 or addr - syms[i][0] > 0x100000:
        return "?"
    return f"{syms[i][1]}+{addr - syms[i][0]:#x}"


def monitor(sock_path, commands, timeout=10):
    """Runs HMP commands on QEMU's monitor socket; returns their output."""
    out = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            time.sleep(0.3)
            s.recv(65536)  # banner
            for cmd in commands:
                s.sendall(cmd.encode() + b"\n")
                time.sleep(1.0)
                while True:
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        break
                    out += chunk
                    if len(chunk) < 65536:
                        break
    except OSError as e:
        return f"(QEMU monitor unavailable: {e})"
    return ANSI.sub("", out.decode("utf-8", "replace").replace("\r", ""))


def diagnose_hang(sock_path, kernel_dir):
    """Where the vCPUs are: `info cpus` and each CPU's RIP, symbolized (the guest runs with
    nokaslr, so System.map addresses apply)."""
    text = monitor(sock_path, ["info cpus", "info registers -a"])
    syms = load_symbols(kernel_dir)
    lines = [l for l in text.splitlines() if l.lstrip().startswith("* CPU") or
             l.lstrip().startswith("CPU #")]
    cpu = None
    for l in text.splitlines():
        m = re.match(r"\s*CPU#(\d+)", l)
        if m:
            cpu = m.group(1)
        m = re.search(r"RIP=([0-9a-f]{16})", l)
        if m:
            addr = int(m.group(1), 16)
            where = symbolize(syms, addr) if syms else ""
            lines.append(f"CPU#{cpu} RIP={addr:#x} {where}".rstrip())
    if lines and not syms:
        lines.append("(no System.map with symbols: read /proc/kallsyms of this kernel booted "
                     "with nokaslr to name kernel addresses)")
    return "\n".join(lines) if lines else text[-2000:]


def boot(qemu, kernel_dir, initrd, scenarios=None, timeout_s=600, boot_timeout_s=120,
         idle_timeout_s=180, smp=2, mem_mb=2048, cpu=CPU_MODEL, append="", log_path=None,
         modules=(), nics=(), disks=()):
    """Boots the kernel in kernel_dir with initrd; returns a VmRun or raises VmError.

    nics: (netdev, device) QEMU argument pairs, e.g. VIRTIO_NICS; none gives `-net none`. The
    guest needs the NIC's driver (kernels.txt modules=) and leaves the NICs down unless a
    scenario configures them.

    disks: (serial, extra -drive options) pairs, e.g. VIRTIO_DISKS: virtio-blk disks backed by
    sparse images in a temporary directory (removed when QEMU has ended). The guest needs
    virtio_blk (kernels.txt modules=).

    Limits: the guest must print GUEST_UP within boot_timeout_s, must not stay silent for
    idle_timeout_s (the guest's own scenario watchdog reports a stuck scenario before that),
    and must power off within timeout_s. A silent guest raises GuestHung with where its vCPUs
    were (QEMU monitor)."""
    cmdline = f"console=ttyS0 panic=-1 quiet nokaslr isoscope.cpus={smp}"
    if scenarios:
        cmdline += " isoscope.scenarios=" + ",".join(scenarios)
    if modules:
        cmdline += " isoscope.modules=" + ",".join(Path(m).stem for m in modules)
    if append:
        cmdline += " " + append
    tmp = tempfile.mkdtemp(prefix="isoscope-vm-")
    sock_path = os.path.join(tmp, "monitor.sock")
    net = ["-net", "none"]
    if nics:
        net = []
        for netdev, device in nics:
            net += ["-netdev", netdev, "-device", device]
    try:
        blk = disk_args(tmp, disks)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VmError(f"cannot create the disk images in {tmp}: {e}") from e
    args = [
        qemu, "-accel", "tcg", "-cpu", cpu, "-m", str(mem_mb), "-smp", str(smp),
        "-nographic", "-no-reboot", *net, *blk,
        "-monitor", f"unix:{sock_path},server=on,wait=off",
        "-kernel", str(Path(kernel_dir) / "vmlinuz"), "-initrd", str(initrd),
        "-append", cmdline,
    ]
    chunks = []
    up, done = threading.Event(), threading.Event()
    t0 = time.monotonic()
    marks = {"last": t0}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)

    def reader():
        for raw in iter(proc.stdout.readline, b""):
            marks["last"] = time.monotonic()
            line = ANSI.sub("", raw.decode("utf-8", "replace").replace("\r", ""))
            chunks.append(line)
            if GUEST_UP in line and not up.is_set():
                marks["up"] = time.monotonic() - t0
                up.set()
            if GUEST_DONE in line:
                done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    error, hung = None, None
    try:
        deadline = t0 + timeout_s
        while not up.is_set() and proc.poll() is None and time.monotonic() < t0 + boot_timeout_s:
            up.wait(0.2)
        if not up.is_set():
            error = (f"guest did not boot: no {GUEST_UP} within {boot_timeout_s} s"
                     if proc.poll() is None else
                     f"QEMU exited ({proc.returncode}) before the guest printed {GUEST_UP}")
        else:
            while proc.poll() is None:
                now = time.monotonic()
                if now > deadline:
                    error = f"guest did not finish within {timeout_s} s (hung scenario?)"
                    break
                if now - marks["last"] > idle_timeout_s:
                    hung = diagnose_hang(sock_path, kernel_dir)
                    error = (f"guest silent for {idle_timeout_s} s (whole VM hung: not even the "
                             f"guest's scenario watchdog reported); vCPUs:\n{hung}")
                    break
                time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        th.join(timeout=10)
        proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - t0
    console = "".join(chunks)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(f"# {shlex.join(args)}\n{console}"
                                  + (f"\n# vCPUs when the guest fell silent:\n{hung}\n" if hung
                                     else ""))
    if error is None and GUEST_DISTURBED in console:
        results, _ = parse_results(console)
        line = next(l for l in console.splitlines() if GUEST_DISTURBED in l)
        raise GuestDisturbed(f"{line.strip()}\n{results.get('guest.cpus_missing', '')}")
    if error is None and not done.is_set():
        error = f"guest ended (QEMU exit {proc.returncode}) without {GUEST_DONE} (kernel panic?)"
    if error:
        where = f" (console log: {log_path})" if log_path else ""
        cls = GuestHung if hung else VmError
        raise cls(f"{error}{where}\n--- last console lines ---\n{tail(console)}")
    results, stray = parse_results(console)
    return VmRun(results, console, wall, marks.get("up", wall), stray)


def prepare(kernel, isoscope_bin, workloads, cache):
    """Fetches the kernel and builds its initramfs; returns (kernel_dir, initrd)."""
    kernel_dir = fetch_kernel(kernel, cache)
    initrd = build_initramfs(kernel_dir, isoscope_bin, workloads,
                             Path(cache) / "initramfs" / f"{kernel.name}.cpio.gz", kernel.modules)
    return kernel_dir, initrd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="build tree with isoscope and workloads/")
    ap.add_argument("--kernel", action="append", help="kernel name from kernels.txt (default all)")
    ap.add_argument("--scenarios", help="comma-separated guest scenarios (default all)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--show", action="store_true", help="print every result block")
    ap.add_argument("--append", default="", help="extra kernel command line")
    ap.add_argument("--no-nics", action="store_true",
                    help="boot without the two virtio-net NICs and the echo server")
    ap.add_argument("--no-disks", action="store_true",
                    help="boot without the two virtio-blk disks")
    ap.add_argument("--cpu", default=CPU_MODEL, help=f"QEMU CPU model (default {CPU_MODEL})")
    a = ap.parse_args()
    build = Path(a.build).resolve()
    isoscope = Path(os.environ.get("ISOSCOPE_BIN", build / "isoscope"))
    workloads = Path(os.environ.get("ISOSCOPE_WORKLOADS", build / "workloads"))
    cache = default_cache(isoscope)
    echo = None if a.no_nics else EchoServer().start()
    try:
        qemu = find_qemu()
        for k in load_kernels():
            if a.kernel and k.name not in a.kernel:
                continue
            kernel_dir, initrd = prepare(k, isoscope, workloads, cache)
            log = cache / "logs" / f"{k.name}.console.log"
            extra = [k.append, a.append] + ([] if echo is None else
                                             [f"isoscope.echo_port={echo.port}"])
            run = boot(qemu, kernel_dir, initrd,
                       scenarios=a.scenarios.split(",") if a.scenarios else None,
                       timeout_s=a.timeout, log_path=log, modules=k.modules,
                       append=" ".join(x for x in extra if x),
                       nics=() if echo is None else VIRTIO_NICS,
                       disks=() if a.no_disks else VIRTIO_DISKS, cpu=a.cpu)
            print(f"{k.name}: booted in {run.boot_s:.1f} s, done in {run.wall_s:.1f} s, "
                  f"console log {log}")
            for name, text in run.results.items():
                if a.show or name.endswith(".scenario"):
                    print(f"--- {name}\n{text}", end="")
    except Unavailable as e:
        print(f"SKIP: {e}")
        return 77
    except VmError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        if echo is not None:
            echo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
