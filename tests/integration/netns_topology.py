"""A pod-like network topology for isoscope's network tests, built from real kernel objects.

    host netns:    isobr<N>  (Linux bridge, 10.251.X.1/24: the host is on the pod network too)
                   ├── isoc<N>h ── veth ── eth0 in netns isoc<N> (the "client pod", 10.251.X.2)
                   └── isos<N>h ── veth ── eth0 in netns isos<N> (the "server pod", 10.251.X.3)

Both pods route everything through the bridge address (default route), loopback is up.
<N> is this process's pid (mod 100000), so parallel runs never share names; X is the first free
10.251.X.0/24 on the host.

Where a qdisc sees which traffic (this decides what a queue test can put where):
  - pod -> pod (client netns to server netns) is bridged: it leaves the client veth's host end,
    crosses the bridge and leaves through the server veth's host end (`server_host_dev`). The
    bridge device's own qdisc never sees it.
  - host -> pod (a client in the host netns talking to 10.251.X.3) is routed out of the bridge
    device (`bridge`): its qdisc sees it, then the bridge forwards to the server veth's host end.

Teardown is guaranteed: `with Topology() as t:` removes everything on exit (exceptions included),
SIGTERM/SIGINT/SIGHUP are turned into exceptions while a topology is live, an atexit hook removes
whatever is left, and every new Topology first removes the leftovers of runs whose process is gone
(a SIGKILLed run, e.g. a ctest timeout).
"""

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
BPFTOOL = shutil.which("bpftool") or "/usr/sbin/bpftool"

_live = []


def log(msg):
    print(f"[netns] {msg}", file=sys.stderr, flush=True)


def run(argv, check=True, timeout=30, ns=None, **kw):
    """Runs argv (in netns `ns` when given); returns CompletedProcess (text)."""
    argv = [str(a) for a in argv]
    if ns is not None:
        argv = [IP, "netns", "exec", ns] + argv
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def available():
    """None when netns + veth + bridge can be created here, else the reason."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if not os.path.exists(IP) or not os.path.exists(TC):
        return "iproute2 (ip, tc) not installed"
    name = f"isoprobe{os.getpid() % 100000}"
    p = run([IP, "netns", "add", name], check=False)
    if p.returncode != 0:
        return f"ip netns add failed: {p.stderr.strip()}"
    try:
        for argv in ([IP, "link", "add", name[:15], "type", "bridge"],
                     [IP, "link", "add", "isoprobev0", "type", "veth", "peer", "name", "isoprobev1"]):
            p = run(argv, check=False)
            if p.returncode != 0:
                return f"{' '.join(argv[1:4])} failed: {p.stderr.strip()}"
    finally:
        run([IP, "link", "del", name[:15]], check=False)
        run([IP, "link", "del", "isoprobev0"], check=False)
        run([IP, "netns", "del", name], check=False)
    return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _netns_pids(ns):
    p = run([IP, "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _kill_netns_processes(ns):
    for _ in range(50):
        pids = _netns_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        import time  # pylint: disable=import-outside-toplevel
        time.sleep(0.05)


def sweep_stale():
    """Removes topologies (netns isoc<N>/isos<N>, bridge isobr<N>) whose creating pid is gone."""
    p = run([IP, "netns", "list"], check=False)
    for line in p.stdout.splitlines():
        m = re.match(r"^(iso[cs])(\d+)\b", line.strip())
        if m and not _pid_alive(int(m.group(2))):
            name = m.group(1) + m.group(2)
            log(f"removing stale netns {name}")
            _kill_netns_processes(name)
            run([IP, "netns", "del", name], check=False)
    p = run([IP, "-o", "link", "show", "type", "bridge"], check=False)
    for line in p.stdout.splitlines():
        m = re.search(r"^\d+: isobr(\d+)[:@]", line)
        if m and not _pid_alive(int(m.group(1))):
            log(f"removing stale bridge isobr{m.group(1)}")
            run([IP, "link", "del", f"isobr{m.group(1)}"], check=False)


def _free_subnet():
    used = run([IP, "-4", "-o", "addr", "show"]).stdout
    routes = run([IP, "-4", "route", "show"]).stdout
    for x in range(1, 255):
        prefix = f"10.251.{x}."
        if prefix not in used and prefix not in routes:
            return f"10.251.{x}"
    raise RuntimeError("no free 10.251.X.0/24 subnet")


class Topology:
    """client netns <-> veth <-> bridge <-> veth <-> server netns (see the module docstring)."""

    def __init__(self):
        sweep_stale()
        n = os.getpid() % 100000
        self.n = n
        self.bridge = f"isobr{n}"
        self.client_ns, self.server_ns = f"isoc{n}", f"isos{n}"
        self.client_host_dev, self.server_host_dev = f"isoc{n}h", f"isos{n}h"
        self.pod_dev = "eth0"  # the pod end of each veth, inside its netns
        net = _free_subnet()
        self.bridge_ip, self.client_ip, self.server_ip = f"{net}.1", f"{net}.2", f"{net}.3"
        self._closed = False
        self._old_handlers = {}
        _live.append(self)
        self._trap_signals()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        run([IP, "link", "add", self.bridge, "type", "bridge"])
        run([IP, "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge])
        run([IP, "link", "set", self.bridge, "up"])
        for ns, host_dev, ip in ((self.client_ns, self.client_host_dev, self.client_ip),
                                 (self.server_ns, self.server_host_dev, self.server_ip)):
            run([IP, "netns", "add", ns])
            run([IP, "link", "add", host_dev, "type", "veth", "peer", "name", f"{host_dev}p"])
            run([IP, "link", "set", f"{host_dev}p", "netns", ns])
            run([IP, "link", "set", host_dev, "master", self.bridge])
            run([IP, "link", "set", host_dev, "up"])
            run([IP, "link", "set", f"{host_dev}p", "name", self.pod_dev], ns=ns)
            run([IP, "addr", "add", f"{ip}/24", "dev", self.pod_dev], ns=ns)
            run([IP, "link", "set", "lo", "up"], ns=ns)
            run([IP, "link", "set", self.pod_dev, "up"], ns=ns)
            run([IP, "route", "add", "default", "via", self.bridge_ip], ns=ns)
        log(f"topology {self.bridge} {self.bridge_ip} | {self.client_ns} {self.client_ip} "
            f"via {self.client_host_dev} | {self.server_ns} {self.server_ip} via {self.server_host_dev}")

    # ---- processes -------------------------------------------------------------------------
    def ns_argv(self, ns, argv):
        """argv prefixed to run in netns `ns` (`ip netns exec` execs argv: same pid)."""
        return [IP, "netns", "exec", ns] + [str(a) for a in argv]

    def run(self, ns, argv, check=True, timeout=30):
        return run(argv, check=check, timeout=timeout, ns=ns)

    def netns_inode(self, ns):
        return os.stat(f"/run/netns/{ns}").st_ino

    def nstat(self, ns):
        """TCP counters of netns `ns` from /proc/net/snmp and netstat (absolute values)."""
        out = {}
        for path in ("/proc/net/snmp", "/proc/net/netstat"):
            text = run(["cat", path], ns=ns).stdout.splitlines()
            for head, vals in zip(text[0::2], text[1::2]):
                hk, vk = head.split(), vals.split()
                if hk and vk and hk[0] == vk[0]:
                    for k, v in zip(hk[1:], vk[1:]):
                        if v.lstrip("-").isdigit():
                            out[hk[0].rstrip(":") + "." + k] = int(v)
        return out

    # ---- tbf ---------------------------------------------------------------------------------
    def _where(self, dev):
        """(netns or None, device name) for a device given as 'bridge', 'server_host', ..."""
        return {
            "bridge": (None, self.bridge),
            "server_host": (None, self.server_host_dev),
            "client_host": (None, self.client_host_dev),
            "server_pod": (self.server_ns, self.pod_dev),
            "client_pod": (self.client_ns, self.pod_dev),
        }.get(dev, (None, dev))

    def add_tbf(self, dev, rate, burst, limit):
        ns, name = self._where(dev)
        run([TC, "qdisc", "replace", "dev", name, "root", "tbf", "rate", rate, "burst", burst,
             "limit", limit], ns=ns)
        log(f"tbf rate {rate} burst {burst} limit {limit} on {name}" + (f" in {ns}" if ns else ""))

    def del_root_qdisc(self, dev):
        ns, name = self._where(dev)
        run([TC, "qdisc", "del", "dev", name, "root"], ns=ns, check=False)

    def qdisc_stats(self, dev):
        ns, name = self._where(dev)
        p = run([TC, "-s", "-j", "qdisc", "show", "dev", name], ns=ns, check=False)
        try:
            return json.loads(p.stdout)
        except ValueError:
            return []

    # ---- tc BPF dropper ----------------------------------------------------------------------
    def attach_dropper(self, dev, obj, pct, sport=0, dport=0, direction="egress"):
        """Loads tests/network/drop.bpf.o on `dev`'s clsact egress (or ingress; direct action)
        and sets its configuration map: drop `pct` percent of the TCP packets with payload
        (SYN/FIN/RST never) whose source port is `sport` / destination port is `dport` (0: any).

        Where the drop happens matters: on the egress of a device in the *sender's* own netns
        (e.g. the server pod's eth0 for the server's packets) the sending TCP socket sees the
        drop (the xmit returns NET_XMIT_DROP, the segment stays unsent and goes out later as new
        data: no retransmission). A drop after the veth crossing (the veth's host end, the
        bridge, the receiver's veth) is a real loss that TCP repairs by retransmitting."""
        ns, name = self._where(dev)
        run([TC, "qdisc", "replace", "dev", name, "clsact"], ns=ns)
        run([TC, "filter", "add", "dev", name, direction, "bpf", "da", "obj", obj, "sec", "tc"],
            ns=ns)
        prog_id = self._filter_prog_id(ns, name, direction)
        info = json.loads(run([BPFTOOL, "-j", "prog", "show", "id", prog_id]).stdout)
        cfg_map = None
        for map_id in info.get("map_ids", []):
            m = json.loads(run([BPFTOOL, "-j", "map", "show", "id", map_id]).stdout)
            if m.get("name", "").startswith("drop_cfg"):
                cfg_map = map_id
        if cfg_map is None:
            raise RuntimeError(f"dropper prog {prog_id}: no drop_cfg map in {info}")
        value = []
        for v in (pct, sport, dport, 0):
            value += [str(b) for b in int(v).to_bytes(4, "little")]
        run([BPFTOOL, "map", "update", "id", cfg_map, "key", "0", "0", "0", "0", "value"] + value)
        self._dropper = (prog_id, info)
        log(f"dropper prog {prog_id} on {name} {direction}" + (f" in {ns}" if ns else "")
            + f": {pct}% of TCP payload packets, sport={sport} dport={dport}")
        return prog_id

    def _filter_prog_id(self, ns, name, direction="egress"):
        out = run([TC, "filter", "show", "dev", name, direction], ns=ns).stdout
        m = re.search(r"\bid (\d+)", out)
        if not m:
            raise RuntimeError(f"no BPF filter on {name} egress: {out}")
        return int(m.group(1))

    def dropper_stats(self, prog_id):
        """(matched, dropped) packet counts from the dropper's drop_stats map."""
        info = json.loads(run([BPFTOOL, "-j", "prog", "show", "id", prog_id]).stdout)
        for map_id in info.get("map_ids", []):
            m = json.loads(run([BPFTOOL, "-j", "map", "show", "id", map_id]).stdout)
            if m.get("name", "").startswith("drop_stats"):
                dump = json.loads(run([BPFTOOL, "-j", "map", "dump", "id", map_id]).stdout)
                vals = {}
                for e in dump:
                    key = e.get("key")
                    k = int(key if isinstance(key, int) else
                            int.from_bytes(bytes(int(b, 16) for b in key), "little"))
                    v = e.get("value")
                    if isinstance(v, list):
                        v = int.from_bytes(bytes(int(b, 16) for b in v), "little")
                    vals[k] = int(v)
                return vals.get(0, 0), vals.get(1, 0)
        return 0, 0

    def detach_dropper(self, dev):
        ns, name = self._where(dev)
        run([TC, "qdisc", "del", "dev", name, "clsact"], ns=ns, check=False)

    # ---- teardown ----------------------------------------------------------------------------
    def close(self):
        if self._closed:
            return
        self._closed = True
        for ns in (self.client_ns, self.server_ns):
            _kill_netns_processes(ns)
            run([IP, "netns", "del", ns], check=False)
        for dev in (self.client_host_dev, self.server_host_dev, self.bridge):
            run([IP, "link", "del", dev], check=False)
        if self in _live:
            _live.remove(self)
        self._restore_signals()
        log(f"topology {self.bridge} removed")

    def _on_signal(self, signum, _frame):
        raise SystemExit(128 + signum)

    def _trap_signals(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass

    def _restore_signals(self):
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)
            except ValueError:
                pass
        self._old_handlers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@atexit.register
def _close_all():
    for t in list(_live):
        t.close()
