"""Sniffers on every link of a lab at once: one raw AF_PACKET socket per tap, opened inside its namespace.

Every switched link is sniffed in the lab's fabric namespace on the switch-side
end of each node's veth; direct links and TUN real servers' tunl0 are sniffed
inside a node. A socket is bound to its interface at creation and from then on
the kernel queues every frame for it, so "ready" means "every socket is bound":
no sleep is needed before sending traffic. Frames carry kernel timestamps
(SO_TIMESTAMPNS), so frames from different sockets order correctly.

Frames are decoded with struct, not scapy: importing scapy costs ~7 s in the
emulated kernel VM, and a decoder this small is also what the unit tests feed.
"""

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from ..kernel import netns
from ..model.schema import Forward, Topology
from ..plan import names

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
BROADCAST = "ff:ff:ff:ff:ff:ff"
PROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp"}
TCP_FLAGS = "FSRPAUEC"  # bit order of the TCP flags byte, lowest first


@dataclass(frozen=True)
class Tap:
    """Where to sniff: an interface in a namespace, and which link/node it stands for."""

    ns: str
    ifname: str
    link: str  # label shown to users, e.g. lan1:r1-eth0
    node: str  # the node whose end this is; directions are relative to it
    iface: str
    peer: str | None = None  # a direct link's other node: the sender of frames coming to `node`
    l2: bool = True  # False for tunl0: frames are bare IP packets
    in_fabric: bool = True


@dataclass
class Ip:
    """An IPv4 header and the transport fields nslab cares about."""

    src: str
    dst: str
    proto: str
    ident: int = 0
    ttl: int = 0
    sport: int | None = None
    dport: int | None = None
    flags: str = ""  # TCP flags as letters, e.g. "SA"
    seq: int | None = None
    ack: int | None = None
    icmp: tuple | None = None  # (type, code, id, seq)
    payload: bytes = b""
    inner: "Ip | None" = None  # IP-in-IP: the encapsulated packet


@dataclass
class Frame:
    """One frame as seen on one tap; direction is relative to the tap's node ("from" it or "to" it)."""

    link: str
    node: str
    direction: str
    time: float
    raw: bytes
    src_mac: str | None = None
    dst_mac: str | None = None
    arp: dict | None = None  # op (1 request, 2 reply), hwsrc, psrc, hwdst, pdst
    ip: Ip | None = None
    sender: str | None = None  # node that put the frame on the link, when the tap tells it
    l2: bool = True
    index: int = field(default=0, compare=False)

    def summary(self) -> str:
        if self.arp:
            a = self.arp
            if a["op"] == 1:
                return f"ARP who-has {a['pdst']} tell {a['psrc']} ({self.src_mac} -> {self.dst_mac})"
            return f"ARP {a['psrc']} is-at {a['hwsrc']} (-> {self.dst_mac})"
        if self.ip:
            return describe_ip(self.ip)
        return f"{self.src_mac} -> {self.dst_mac} (not IPv4/ARP)"


def describe_ip(ip: Ip) -> str:
    ports = f" {ip.sport}->{ip.dport}" if ip.sport is not None else ""
    flags = f" [{ip.flags}]" if ip.proto == "tcp" else ""
    text = f"{ip.src} -> {ip.dst} {ip.proto}{ports}{flags}"
    if ip.inner:
        text += f" (inner {describe_ip(ip.inner)})"
    return text


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def parse_ip(data: bytes) -> Ip | None:
    """Decode an IPv4 packet (and one level of IP-in-IP); None if it isn't one."""
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 15) * 4
    ident, ttl, proto = struct.unpack("!H", data[4:6])[0], data[8], data[9]
    ip = Ip(socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20]),
            PROTO_NAMES.get(proto, str(proto)), ident=ident, ttl=ttl)
    body = data[ihl:struct.unpack("!H", data[2:4])[0]] or data[ihl:]
    if proto == 6 and len(body) >= 20:
        ip.sport, ip.dport, ip.seq, ip.ack = struct.unpack("!HHII", body[:12])
        off, bits = body[12] >> 4, body[13]
        ip.flags = "".join(c for i, c in enumerate(TCP_FLAGS) if bits & (1 << i))
        ip.payload = body[off * 4:]
    elif proto == 17 and len(body) >= 8:
        ip.sport, ip.dport = struct.unpack("!HH", body[:4])
        ip.payload = body[8:]
    elif proto == 1 and len(body) >= 8:
        ip.icmp = (body[0], body[1]) + struct.unpack("!HH", body[4:8])
        ip.payload = body[8:]
    elif proto == 4:
        ip.inner = parse_ip(body)
    return ip


def parse(raw: bytes, link: str = "", node: str = "", direction: str = "from", t: float = 0.0,
          l2: bool = True, sender: str | None = None) -> Frame:
    """Decode raw bytes (an Ethernet frame, or a bare IP packet when l2 is False) into a Frame."""
    f = Frame(link, node, direction, t, raw, l2=l2, sender=sender)
    data = raw
    if l2:
        if len(raw) < 14:
            return f
        f.dst_mac, f.src_mac = _mac(raw[0:6]), _mac(raw[6:12])
        etype, data = struct.unpack("!H", raw[12:14])[0], raw[14:]
        if etype == 0x8100 and len(data) >= 4:  # a VLAN tag: look past it
            etype, data = struct.unpack("!H", data[2:4])[0], data[4:]
        if etype == 0x0806 and len(data) >= 28:
            f.arp = {"op": struct.unpack("!H", data[6:8])[0], "hwsrc": _mac(data[8:14]),
                     "psrc": socket.inet_ntoa(data[14:18]), "hwdst": _mac(data[18:24]),
                     "pdst": socket.inet_ntoa(data[24:28])}
            return f
        if etype != 0x0800:
            return f
    f.ip = parse_ip(data)
    return f


def taps_for(topo: Topology, lab: str | None = None) -> list[Tap]:
    """Every place to sniff in a lab: each switch port, one end of each direct link, and
    tunl0 in every TUN real server (the decapsulated packet exists only there)."""
    lab = lab or topo.name
    fabric = names.fabric_ns(lab)
    taps, seen_links = [], set()
    for node in topo.nodes:
        for iface in node.interfaces:
            if iface.switch:
                port = names.bridge_port(node.name, iface.name)
                taps.append(Tap(fabric, port, f"{iface.switch}:{node.name}-{iface.name}", node.name, iface.name))
            elif iface.peer:
                ends = tuple(sorted([f"{node.name}:{iface.name}", ":".join(iface.peer)]))
                if ends in seen_links:
                    continue  # one end is enough: both see the same frames
                seen_links.add(ends)
                taps.append(Tap(names.node_ns(lab, node.name), iface.name, f"{ends[0]}={ends[1]}",
                                node.name, iface.name, peer=iface.peer[0], in_fabric=False))
    for svc in topo.services:
        if svc.forward is Forward.TUN:
            for rs in svc.real_servers:
                taps.append(Tap(names.node_ns(lab, rs.node), "tunl0", f"{rs.node}:tunl0", rs.node,
                                "tunl0", l2=False, in_fabric=False))
    return taps


def _open(tap: Tap, rcvbuf: int) -> socket.socket:
    """A raw socket bound to the tap's interface, opened inside its namespace.

    Created with protocol 0 so it hears nothing until bind() names both the
    interface and ETH_P_ALL: otherwise it would briefly hear every interface.
    """
    with netns.entered(tap.ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # not root enough for FORCE: take what the sysctl allows
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((tap.ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


class Capture:
    """Sniff a set of taps until stop(), at most max_frames frames and max_seconds seconds.

        with Capture(taps_for(topo)) as cap:   # returns once every socket is bound
            ...send traffic...
        frames = cap.frames                    # ordered by kernel timestamp
    """

    def __init__(self, taps, max_frames: int = 20000, max_seconds: float = 60.0, rcvbuf: int = 4 << 20):
        self.taps = list(taps)
        self.max_frames, self.max_seconds, self.rcvbuf = max_frames, max_seconds, rcvbuf
        self.frames: list[Frame] = []
        self.truncated = False
        self.ready_seconds = None
        self._raw = []  # (tap, t, bytes, pkttype): decoded after stop, so the reader stays quick
        self._socks = []
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "Capture":
        """Open and bind every socket (raises OSError naming the tap), then start the reader."""
        started = time.monotonic()
        try:
            for tap in self.taps:
                try:
                    self._socks.append((tap, _open(tap, self.rcvbuf)))
                except OSError as e:
                    raise OSError(e.errno, f"cannot sniff {tap.ifname} in {tap.ns}: {e.strerror}") from None
        except BaseException:
            self._close()
            raise
        self.ready_seconds = time.monotonic() - started
        self._deadline = started + self.max_seconds
        # One reader polling every socket: in a slow VM one thread per socket only adds GIL churn.
        self._thread = threading.Thread(target=self._read, name="nslab-capture", daemon=True)
        self._thread.start()
        return self

    def _read(self):
        poller = select.poll()
        by_fd = {s.fileno(): (tap, s) for tap, s in self._socks}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while True:
            stopping = self._stop.is_set()
            for fd, _ in poller.poll(0 if stopping else 50):
                tap, s = by_fd[fd]
                self._drain(tap, s)
            if stopping or len(self._raw) >= self.max_frames or time.monotonic() > self._deadline:
                if not stopping:
                    self.truncated = True
                return

    def _drain(self, tap, s):
        while len(self._raw) < self.max_frames:
            try:
                data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return
            t = time.time()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    t = sec + nsec / 1e9
            self._raw.append((tap, t, data, addr[2]))

    @property
    def seen(self) -> int:
        """Frames read so far (while running)."""
        return len(self._raw)

    def stop(self) -> list[Frame]:
        """Stop reading (after draining what is queued) and return the frames in time order."""
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._close()
        frames = []
        for tap, t, data, pkttype in self._raw:
            out = pkttype == PACKET_OUTGOING
            # In the fabric, "outgoing" on a bridge port means the bridge hands it TO the node.
            direction = ("to" if out else "from") if tap.in_fabric else ("from" if out else "to")
            sender = tap.node if direction == "from" else tap.peer
            frames.append(parse(data, tap.link, tap.node, direction, t, l2=tap.l2, sender=sender))
        frames.sort(key=lambda f: f.time)
        for i, f in enumerate(frames):
            f.index = i
        self.frames = frames
        return frames

    def _close(self):
        for _, s in self._socks:
            s.close()
        self._socks = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def measure(topo: Topology, lab: str, node: str, iface: str = "eth0", count: int = 1000) -> dict:
    """Readiness and loss: start a capture on every tap, at once send `count` frames of the local
    experimental EtherType 0x88b5 out of node:iface (they stay on that switch), count them."""
    cap = Capture(taps_for(topo, lab))
    t0 = time.monotonic()
    cap.start()
    ready = time.monotonic() - t0
    with netns.entered(names.node_ns(lab, node)):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((iface, 0))
        src = s.getsockname()[4]
        for i in range(count):
            s.send(b"\xff" * 6 + src + b"\x88\xb5" + struct.pack("!I", i) + bytes(42))
    finally:
        s.close()
    frames = cap.stop()
    mine = [f for f in frames if f.node == node and f.direction == "from" and f.raw[12:14] == b"\x88\xb5"]
    seen = {struct.unpack("!I", f.raw[14:18])[0] for f in mine}
    return {"taps": len(cap.taps), "ready_seconds": round(ready, 4), "sent": count,
            "captured": len(seen), "lost": count - len(seen), "first_seen": 0 in seen}

