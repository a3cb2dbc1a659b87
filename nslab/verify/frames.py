"""Frames as the sniffers hand them over, decoded with struct: Ethernet, ARP, IPv4, TCP/UDP/ICMP, IP-in-IP.

Pure: no sockets, no kernel. scapy is not used here: importing it costs ~7 s in
the emulated kernel VM, and a decoder this small is also what the unit tests feed.
"""

import socket
import struct
from dataclasses import dataclass, field

BROADCAST = "ff:ff:ff:ff:ff:ff"
PROTO_NAMES = {1: "icmp", 4: "ipip", 6: "tcp", 17: "udp"}
TCP_FLAGS = "FSRPAUEC"  # bit order of the TCP flags byte, lowest first


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

    link: str  # the tap's label, for people and pcap file names
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
    segment: str | None = None  # the L2 segment it was seen on (None: tunl0)
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
          l2: bool = True, sender: str | None = None, segment: str | None = None) -> Frame:
    """Decode raw bytes (an Ethernet frame, or a bare IP packet when l2 is False) into a Frame."""
    f = Frame(link, node, direction, t, raw, l2=l2, sender=sender, segment=segment)
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
