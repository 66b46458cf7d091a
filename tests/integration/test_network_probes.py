"""Network slices, kernel side (bpf/network.bpf.c, docs/network.md), on real packets.

A veth pair joins the host netns to a new netns; the host side carries a slow token bucket
(`tbf rate 1mbit burst 4kb latency 400ms`), so a TCP sender from the host really queues in that
qdisc. While `isoscope record` runs:
  - a bulk sender pushes a few hundred KB to a receiver in the netns: QDISC records on the host
    veth (kind "veth") with intervals of tens of ms;
  - a client sends a small message to a receiver that sleeps 300 ms before reading: an RCVQ
    record of >= 250 ms carrying the reading thread's tid and the netns's inode;
  - a receiver reads 100 of 2000 bytes after 300 ms and the rest 300 ms later: two RCVQ
    records (100 and 1900 bytes), the second starting at the first read;
  - a receiver with a 2 KB buffer reads only after 1 s: a ZWND record on the sender's socket
    (the peer's zero window) of most of that second;
  - a burst of IPv6 UDP datagrams with a hop-by-hop extension header queues in the tbf: QDISC
    records carry the ports from the UDP header behind that extension header;
  - a listener that never accepts (backlog 0): the later connections' SYNs are dropped and
    retransmitted after the initial 1 s RTO: RETRANS records with a ~1 s wait (reason timeout);
  - a client sends an HTTP request with a traceparent header: an outbound TRACEPARENT record
    (ISO_TP_F_OUTBOUND) whose parent_span_id is the header's parent-id.
The scenario runs twice: with the preferred tp_btf programs and with --no-tp-btf (the raw_tp
twins).

The virtio slice on this machine's own NIC (a KVM guest: eth0 is virtio_net): a short recording
with a 1 us threshold while datagrams go to the default gateway through that NIC. Every datagram
handed to the device comes back as a DEVQ record (start_xmit -> TX completion) on that device, of
tens of microseconds here. Skipped with a message on a machine without a virtio-net NIC that
carries the default route. The recording is parsed here with struct (docs/abi.md, "Recording format"; bpf/include/isoscope/
abi.h). Namespaces, qdiscs and processes are removed in every case.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

import isoscope_harness as h

FILE_HDR = 128
HDR = struct.Struct("<HHHHIIQQQ")  # struct iso_rec_hdr, 40 bytes
NET = struct.Struct("<QQ16s16sHHHBBIIIHH8s16s")  # struct iso_rec_net after the header
TP = struct.Struct("<16s8sQ16s16sHHHBBII")  # struct iso_rec_traceparent after the header
REC_TRACEPARENT, REC_NET = 4, 5
EV_QDISC, EV_BACKLOG, EV_RCVQ, EV_RETRANS, EV_DEVQ, EV_ZWND = 1, 2, 3, 4, 6, 7
NET_F_HOST_NETNS, NET_F_SOCK, NET_F_TASK = 1, 2, 4
TP_F_OUTBOUND = 4

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"

TAG = f"{os.getpid() % 100000}"
NETNS = f"isonet{TAG}"
VETH_HOST = f"isoh{TAG}"
VETH_NS = f"ison{TAG}"
SUBNET = 10 + os.getpid() % 200
HOST_IP = f"10.213.{SUBNET}.1"
NS_IP = f"10.213.{SUBNET}.2"
HOST_IP6 = f"fd00:213:{SUBNET:x}::1"
NS_IP6 = f"fd00:213:{SUBNET:x}::2"


def sh(*cmd, check=True):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def setup_net():
    sh("ip", "netns", "add", NETNS)
    sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    sh("ip", "link", "set", VETH_NS, "netns", NETNS)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", VETH_HOST)
    sh("ip", "-6", "addr", "add", f"{HOST_IP6}/64", "dev", VETH_HOST, "nodad")
    # One MSS per skb: tbf splits a GSO skb larger than its burst into new skbs, which would not
    # be the skb that entered the queue.
    sh("ip", "link", "set", "dev", VETH_HOST, "gso_max_segs", "1", check=False)
    sh("ip", "link", "set", VETH_HOST, "up")
    sh("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{NS_IP}/24", "dev", VETH_NS)
    sh("ip", "netns", "exec", NETNS, "ip", "-6", "addr", "add", f"{NS_IP6}/64", "dev", VETH_NS,
       "nodad")
    sh("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up")
    sh("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
    sh("tc", "qdisc", "add", "dev", VETH_HOST, "root", "tbf", "rate", "1mbit", "burst", "4kb",
       "latency", "400ms")


def teardown_net():
    sh("ip", "link", "del", VETH_HOST, check=False)
    sh("ip", "netns", "del", NETNS, check=False)


# Receivers in the netns: print "ready <port> <tid>" once listening, then serve one connection.
RECEIVER = textwrap.dedent(
    """
    import socket, sys, threading, time
    mode = sys.argv[1]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mode == "zwnd":  # a tiny receive buffer, inherited by the accepted socket
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    srv.bind(("0.0.0.0", 0))
    srv.listen(0 if mode == "full" else 4)
    print("ready", srv.getsockname()[1], threading.get_native_id(), flush=True)
    if mode == "full":  # never accepts: a full accept queue drops further SYNs
        time.sleep(3)
        sys.exit(0)
    conn, _ = srv.accept()
    total = 0
    if mode in ("slow", "partial"):
        time.sleep(0.3)
    if mode == "zwnd":
        time.sleep(1.0)
    if mode == "partial":
        total += len(conn.recv(100))
        time.sleep(0.3)
    while True:
        data = conn.recv(65536)
        if not data:
            break
        total += len(data)
        if mode not in ("bulk", "zwnd") or (mode == "zwnd" and total >= 32000):
            break
    if mode == "http":
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
    print("got", total, flush=True)
    conn.close()
    """
)


def start_receiver(mode):
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, sys.executable, "-c", RECEIVER, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().split()
    if len(line) != 3 or line[0] != "ready":
        proc.kill()
        raise RuntimeError(f"receiver {mode} did not start: {line!r} {proc.stderr.read()}")
    return proc, int(line[1]), int(line[2])


def parse_recording(path):
    """Returns (net records, traceparent records) as dicts."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"ISOREC\0\1":
        raise AssertionError(f"{path}: not a recording ({data[:8]!r})")
    nets, tps = [], []
    off = FILE_HDR
    while off + HDR.size <= len(data):
        kind, size, _abi, _flags, tgid, tid, ts, cg2, _cg1 = HDR.unpack_from(data, off)
        if size < HDR.size or off + size > len(data):
            break
        body = off + HDR.size
        if kind == REC_NET and size >= HDR.size + NET.size:
            (start, sock, saddr, daddr, sport, dport, family, event, mech, ifindex, netns, nbytes,
             reason, flags, kind_s, name) = NET.unpack_from(data, body)
            nets.append(dict(tgid=tgid, tid=tid, ts=ts, start=start, sock=sock, saddr=saddr,
                             daddr=daddr, sport=sport, dport=dport, family=family, event=event,
                             mech=mech, ifindex=ifindex, netns=netns, bytes=nbytes, reason=reason,
                             flags=flags, kind=kind_s.split(b"\0")[0].decode(errors="replace"),
                             dev=name.split(b"\0")[0].decode(errors="replace")))
        elif kind == REC_TRACEPARENT and size >= HDR.size + TP.size:
            (trace_id, span, sock, saddr, daddr, sport, dport, family, tflags, flags, fd,
             read_index) = TP.unpack_from(data, body)
            tps.append(dict(tgid=tgid, tid=tid, trace_id=trace_id.hex(), span=span.hex(),
                            sport=sport, dport=dport, flags=flags, fd=fd, saddr=saddr,
                            daddr=daddr))
        off += size
    return nets, tps


class NetworkProbes(unittest.TestCase):
    RECORD_ARGS = []  # the preferred tp_btf programs

    @classmethod
    def setUpClass(cls):
        h.require_bpf()
        for tool in ("ip", "tc"):
            if subprocess.run(["which", tool], capture_output=True).returncode != 0:
                h.skip_module(f"{tool} not installed")
        cls.tmp = tempfile.mkdtemp(prefix="isoscope-net-")
        cls.recording = os.path.join(cls.tmp, "net.isorec")
        cls.procs = []
        teardown_net()
        try:
            setup_net()
            cls.run_scenario()
        finally:
            for p in cls.procs:
                if p.poll() is None:
                    p.kill()
                p.communicate()
            teardown_net()
        cls.nets, cls.tps = parse_recording(cls.recording)
        h.log(f"{len(cls.nets)} network records, {len(cls.tps)} traceparent records")

    @classmethod
    def exchange(cls, mode, payload, sndbuf=0, shutdown=False):
        """Starts a receiver in `mode`, sends `payload` to it over a new connection and waits for
        the receiver to finish. Returns (the receiver's tid, the client's local port)."""
        proc, port, tid = start_receiver(mode)
        cls.procs.append(proc)
        with socket.socket() as c:
            if sndbuf:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            c.settimeout(20)
            c.connect((NS_IP, port))
            client_port = c.getsockname()[1]
            c.sendall(payload)
            if shutdown:
                c.shutdown(socket.SHUT_WR)
            proc.wait(timeout=30)
        h.log(f"{mode} receiver tid {tid}: {proc.stdout.read().strip()}")
        return tid, client_port

    @classmethod
    def run_scenario(cls):
        rec = subprocess.Popen(
            [str(h.BIN), "record", "-o", cls.recording, "--duration", "40", "--interval", "0.5",
             *cls.RECORD_ARGS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cls.procs.append(rec)
        time.sleep(6)  # load, verify and attach
        if rec.poll() is not None:
            raise AssertionError(f"isoscope record exited early: {rec.stderr.read()}")

        # 1. Bulk: a few hundred KB through the 1 mbit qdisc.
        cls.exchange("bulk", b"x" * 200_000, shutdown=True)
        # 2. Slow reader: the data waits 300 ms in its receive queue.
        cls.slow_tid, _ = cls.exchange("slow", b"y" * 200)
        # 2b. Partial read: 100 of 2000 bytes after 300 ms, the rest 300 ms later.
        cls.partial_tid, _ = cls.exchange("partial", b"p" * 2000)
        # 2c. Zero window: the receiver's 2 KB buffer fills and it reads only after 1 s. A small
        # send buffer keeps sendall() blocked on the window, and the socket stays established
        # until the reader has it all (tcp_probe sees established sockets only).
        _, cls.zwnd_port = cls.exchange("zwnd", b"z" * 32_000, sndbuf=4096)

        # 2d. IPv6 with a hop-by-hop extension header (8 bytes: PadN), a burst that queues in
        # the tbf: the ports come from the UDP header behind the extension header.
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
            u.bind((HOST_IP6, 0))
            cls.ipv6_port = u.getsockname()[1]
            for _ in range(40):
                u.sendto(b"6" * 1000, (NS_IP6, 9))
        time.sleep(0.5)

        # 2e. SYN retries: a listener with a full accept queue drops the SYNs of later
        # connections; they are retransmitted after the initial RTO (1 s).
        full, full_port, _ = start_receiver("full")
        cls.procs.append(full)
        cls.full_port = full_port
        syn = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((NS_IP, full_port))
            syn.append(s)
            time.sleep(0.05)
        time.sleep(1.6)
        for s in syn:
            s.close()
        full.wait(timeout=30)

        # 3. Outbound request with a traceparent header (send -> sendto).
        server, http_port, _ = start_receiver("http")
        cls.procs.append(server)
        c = socket.create_connection((NS_IP, http_port), timeout=20)
        cls.client_port = c.getsockname()[1]
        c.sendall(
            (f"GET /work HTTP/1.1\r\nHost: {NS_IP}\r\n"
             f"traceparent: 00-{TRACE_ID}-{SPAN_ID}-01\r\n\r\n").encode())
        c.recv(1024)
        c.close()
        server.wait(timeout=30)

        time.sleep(1.5)  # let the recorder drain the last interval
        rec.send_signal(signal.SIGINT)
        try:
            _, err = rec.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            rec.kill()
            _, err = rec.communicate()
        h.log(f"record: {err.strip()[-400:]}")
        if rec.returncode != 0:
            raise AssertionError(f"isoscope record failed ({rec.returncode}): {err}")

    def test_qdisc_on_the_host_veth(self):
        # The test's IPv4 flow; the new device's own IPv6 packets (router/neighbour
        # solicitations, MLD reports) queue behind the same tbf and are not asserted on.
        qdisc = [n for n in self.nets if n["event"] == EV_QDISC and n["dev"] == VETH_HOST
                 and n["family"] == socket.AF_INET]
        waits = sorted((n["ts"] - n["start"]) / 1e6 for n in qdisc)
        h.log(f"QDISC records on {VETH_HOST}: {len(qdisc)}, waits ms: "
              f"{[round(w, 1) for w in waits[:: max(1, len(waits) // 10)]]}")
        self.assertGreater(len(qdisc), 5, "no qdisc intervals on the tbf-limited veth")
        for n in qdisc:
            self.assertEqual(n["kind"], "veth")
            self.assertEqual(n["mech"], 0)  # queue
            self.assertTrue(n["flags"] & NET_F_HOST_NETNS)
            self.assertEqual(n["family"], socket.AF_INET)
            self.assertEqual(socket.inet_ntoa(n["daddr"][:4]), NS_IP)
            self.assertEqual(n["tid"], 0)
        self.assertGreaterEqual(max(waits), 10.0, "tbf at 1 mbit should queue for tens of ms")
        self.assertLess(max(waits), 2000.0)

    def test_rcvq_of_the_slow_reader(self):
        rcvq = [n for n in self.nets if n["event"] == EV_RCVQ and n["tid"] == self.slow_tid]
        self.assertTrue(rcvq, f"no RCVQ record for the slow reader (tid {self.slow_tid}); "
                              f"RCVQ tids seen: {sorted({n['tid'] for n in self.nets if n['event'] == EV_RCVQ})}")
        n = max(rcvq, key=lambda r: r["ts"] - r["start"])
        wait_ms = (n["ts"] - n["start"]) / 1e6
        h.log(f"RCVQ slow reader: {wait_ms:.1f} ms, {n['bytes']} bytes, netns {n['netns']}")
        self.assertGreaterEqual(wait_ms, 250.0)
        self.assertLess(wait_ms, 2000.0)
        self.assertEqual(n["flags"] & (NET_F_SOCK | NET_F_TASK), NET_F_SOCK | NET_F_TASK)
        self.assertFalse(n["flags"] & NET_F_HOST_NETNS, "the reader's socket is in its own netns")
        self.assertEqual(n["bytes"], 200)
        self.assertEqual(socket.inet_ntoa(n["saddr"][:4]), NS_IP)
        self.assertEqual(socket.inet_ntoa(n["daddr"][:4]), HOST_IP)

    def test_rcvq_after_a_partial_read(self):
        # The first read takes 100 bytes after 300 ms; the 1900 left wait again from that read
        # until the second read 300 ms later (not from their arrival: no moment twice).
        rcvq = sorted((n for n in self.nets if n["event"] == EV_RCVQ and n["tid"] == self.partial_tid),
                      key=lambda r: r["ts"])
        h.log("RCVQ partial reader: " + ", ".join(
            f"{(n['ts'] - n['start']) / 1e6:.1f} ms/{n['bytes']} B" for n in rcvq))
        self.assertEqual([n["bytes"] for n in rcvq], [100, 1900])
        first, second = rcvq
        self.assertGreaterEqual((first["ts"] - first["start"]) / 1e6, 250.0)
        self.assertGreaterEqual((second["ts"] - second["start"]) / 1e6, 250.0)
        self.assertGreaterEqual(second["start"], first["ts"] - 1_000_000)
        self.assertLess((second["ts"] - second["start"]) / 1e6, 2000.0)

    def test_zero_window_stall(self):
        zw = [n for n in self.nets if n["event"] == EV_ZWND and n["sport"] == self.zwnd_port]
        h.log("ZWND sender: " + ", ".join(f"{(n['ts'] - n['start']) / 1e6:.1f} ms" for n in zw))
        self.assertTrue(zw, f"no ZWND record for the sender (port {self.zwnd_port})")
        longest = max((n["ts"] - n["start"]) / 1e6 for n in zw)
        # The window closes once 2-4 KB are in flight and opens when the reader wakes at 1 s.
        self.assertGreaterEqual(longest, 600.0)
        self.assertLess(longest, 1500.0)
        for n in zw:
            self.assertEqual(n["mech"], 2)  # protocol
            self.assertEqual(n["flags"] & (NET_F_SOCK | NET_F_HOST_NETNS), NET_F_SOCK | NET_F_HOST_NETNS)
            self.assertEqual(socket.inet_ntoa(n["daddr"][:4]), NS_IP)

    def test_ipv6_extension_header_walked(self):
        six = [n for n in self.nets if n["event"] == EV_QDISC and n["family"] == socket.AF_INET6
               and n["dev"] == VETH_HOST and n["saddr"] == socket.inet_pton(socket.AF_INET6, HOST_IP6)
               and n["daddr"] == socket.inet_pton(socket.AF_INET6, NS_IP6)]
        h.log(f"IPv6 QDISC records: {len(six)}, ports {sorted({(n['sport'], n['dport']) for n in six})}")
        # 40 KB through 1 mbit: most of the burst waits well over a millisecond.
        self.assertGreaterEqual(len(six), 10)
        for n in six:
            self.assertEqual((n["sport"], n["dport"]), (self.ipv6_port, 9))

    def test_syn_retransmission(self):
        syn = [n for n in self.nets if n["event"] == EV_RETRANS and n["dport"] == self.full_port]
        waits = sorted((n["ts"] - n["start"]) / 1e6 for n in syn)
        h.log(f"SYN retransmissions to the full listener: {[round(w, 1) for w in waits]} ms")
        self.assertTrue(syn, "no RETRANS record for the dropped SYNs")
        # Each waited out the initial RTO (1 s) before going again.
        for w in waits:
            self.assertGreaterEqual(w, 800.0)
            self.assertLess(w, 1500.0)
        for n in syn:
            self.assertEqual(n["reason"], 1)  # the timer fired
            self.assertEqual(socket.inet_ntoa(n["daddr"][:4]), NS_IP)

    def test_outbound_traceparent(self):
        out = [t for t in self.tps if t["flags"] & TP_F_OUTBOUND and t["trace_id"] == TRACE_ID]
        self.assertTrue(out, f"no outbound traceparent record; seen: {self.tps}")
        t = out[0]
        self.assertEqual(t["span"], SPAN_ID)
        self.assertEqual(t["tgid"], os.getpid())
        self.assertEqual(t["sport"], self.client_port)
        self.assertEqual(socket.inet_ntoa(t["daddr"][:4]), NS_IP)


class NetworkProbesRawTp(NetworkProbes):
    """The same scenario through the raw_tp fallback programs."""

    RECORD_ARGS = ["--no-tp-btf"]


def virtio_default_route():
    """(device, ifindex, gateway) of the default IPv4 route when its device is a virtio_net NIC,
    else None."""
    routes = json.loads(sh("ip", "-j", "-4", "route", "show", "default").stdout or "[]")
    for r in routes:
        dev, gw = r.get("dev"), r.get("gateway")
        if not dev or not gw:
            continue
        driver = os.path.realpath(f"/sys/class/net/{dev}/device/driver")
        if os.path.basename(driver) == "virtio_net":
            with open(f"/sys/class/net/{dev}/ifindex") as f:
                return dev, int(f.read()), gw
    return None


class VirtioNicProbes(unittest.TestCase):
    RECORD_ARGS = []
    DATAGRAMS = 50

    @classmethod
    def setUpClass(cls):
        h.require_bpf()
        cls.route = virtio_default_route()
        if cls.route is None:
            raise unittest.SkipTest("no virtio-net NIC carries the default route here: the "
                                    "virtio slice is measured on VM nodes only")
        dev, _, gw = cls.route
        tmp = tempfile.mkdtemp(prefix="isoscope-virtio-")
        recording = os.path.join(tmp, "virtio.isorec")
        rec = subprocess.Popen(
            [str(h.BIN), "record", "-o", recording, "--duration", "20", "--interval", "0.5",
             "--stream-min-us", "1", *cls.RECORD_ARGS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(6)  # load, verify and attach
            if rec.poll() is not None:
                raise AssertionError(f"isoscope record exited early: {rec.stderr.read()}")
            # Datagrams to the gateway's discard port leave through the NIC whether or not
            # anything listens there.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                cls.sport = None
                for _ in range(cls.DATAGRAMS):
                    u.sendto(b"v" * 512, (gw, 9))
                    cls.sport = u.getsockname()[1]
                    time.sleep(0.01)
            time.sleep(1.5)
            rec.send_signal(signal.SIGINT)
            _, err = rec.communicate(timeout=30)
        finally:
            if rec.poll() is None:
                rec.kill()
                rec.communicate()
        if rec.returncode != 0:
            raise AssertionError(f"isoscope record failed ({rec.returncode}): {err}")
        cls.nets, _ = parse_recording(recording)
        os.remove(recording)
        os.rmdir(tmp)
        h.log(f"virtio NIC {dev} (gateway {gw}): {len(cls.nets)} network records")

    def test_device_ring_intervals(self):
        dev, ifindex, gw = self.route
        mine = [n for n in self.nets if n["event"] == EV_DEVQ and n["family"] == socket.AF_INET
                and socket.inet_ntoa(n["daddr"][:4]) == gw and n["dport"] == 9
                and n["sport"] == self.sport]
        waits = sorted((n["ts"] - n["start"]) / 1e3 for n in mine)
        h.log(f"DEVQ records of the datagrams on {dev}: {len(mine)}, waits us: "
              f"{[round(w, 1) for w in waits[:: max(1, len(waits) // 10)]]}")
        # Every datagram is timed (a few may share an skb address with a leftover; none here).
        self.assertGreaterEqual(len(mine), self.DATAGRAMS * 0.9,
                                f"DEVQ events seen: {sum(n['event'] == EV_DEVQ for n in self.nets)}")
        for n in mine:
            self.assertEqual(n["dev"], dev)
            self.assertEqual(n["ifindex"], ifindex)
            self.assertEqual(n["kind"], "")  # a driver device, not a virtual link
            self.assertEqual(n["mech"], 0)   # queue
            self.assertTrue(n["flags"] & NET_F_HOST_NETNS)
            self.assertEqual(n["bytes"], 512 + 8 + 20 + 14)  # payload + UDP + IPv4 + Ethernet
        # The host takes a packet in microseconds to milliseconds, not seconds.
        self.assertGreater(waits[0], 0.0)
        self.assertLess(waits[len(waits) // 2], 100_000.0)
        # No DEVQ record on any other device: only the virtio NIC's ring is timed.
        others = {n["dev"] for n in self.nets if n["event"] == EV_DEVQ and n["ifindex"] != ifindex}
        self.assertEqual(others, set())


class VirtioNicProbesRawTp(VirtioNicProbes):
    """The same through the raw_tp fallback programs."""

    RECORD_ARGS = ["--no-tp-btf"]


if __name__ == "__main__":
    unittest.main()
