"""Crafted probes, built with scapy and sent from inside a node: TTL-limited SYNs from chosen ports that show
how far a packet gets (each router it reaches answers "time exceeded"), and an ARP who-has that shows every
node answering for an address.

scapy is imported inside each probe: it costs seconds in the kernel VM, and only `nslab why` uses these.
The sockets are opened after entering the node's namespace, so the node's own routes, addresses and links
apply; scapy's routing table (the host's) is never consulted, because every packet names its source.
"""

import select
import socket
import time
from dataclasses import dataclass

from ..kernel import netns

SPORT_BASE = 33430  # traceroute's port range: the probe for TTL n leaves from SPORT_BASE + n
ETH_P_ARP = 0x0806
UNREACHABLE = {0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
               9: "net prohibited", 10: "host prohibited", 13: "administratively prohibited"}


@dataclass
class Answer:
    """What came back for the probe sent with one TTL."""

    ttl: int
    sport: int
    kind: str = "nothing"  # time exceeded | <ICMP unreachable kind> | SYN-ACK | RST | nothing
    source: str | None = None  # the address that answered

    def describe(self, who=lambda ip: ip) -> str:
        if self.kind == "nothing":
            return f"ttl {self.ttl}: nothing"
        return f"ttl {self.ttl}: {self.kind} from {who(self.source)}"


def _open_in(ns, *specs):
    with netns.entered(ns):
        return [socket.socket(*spec) for spec in specs]


def ttl_syns(ns: str, src: str, dst: str, dport: int, max_ttl: int, wait: float = 1.0) -> list[Answer]:
    """Send a SYN to dst:dport with TTL 1..max_ttl from inside ns (source src, port SPORT_BASE + TTL) and
    collect for `wait` seconds what answers each: an ICMP time exceeded names the router the probe reached,
    a SYN-ACK or RST the destination. Raises OSError when the node cannot send at all (no route)."""
    from scapy.layers.inet import ICMP, IP, TCP, TCPerror
    tx, icmp, tcp = _open_in(ns, (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
                             (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                             (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
    answers = {SPORT_BASE + t: Answer(t, SPORT_BASE + t) for t in range(1, max_ttl + 1)}
    try:
        for a in answers.values():
            probe = IP(src=src, dst=dst, ttl=a.ttl) / TCP(sport=a.sport, dport=dport, flags="S", seq=a.sport << 8)
            tx.sendto(bytes(probe), (dst, 0))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            ready, _, _ = select.select([icmp, tcp], [], [], max(0.0, deadline - time.monotonic()))
            for sock in ready:
                pkt = IP(sock.recv(65535))
                if ICMP in pkt and TCPerror in pkt and pkt[TCPerror].sport in answers:
                    a = answers[pkt[TCPerror].sport]
                    if a.kind == "nothing":
                        kind = pkt[ICMP].type
                        a.kind = ("time exceeded" if kind == 11 else
                                  UNREACHABLE.get(pkt[ICMP].code, "unreachable") if kind == 3 else f"ICMP {kind}")
                        a.source = pkt.src
                elif TCP in pkt and pkt.src == dst and pkt[TCP].dport in answers:
                    a = answers[pkt[TCP].dport]
                    a.kind, a.source = ("RST" if pkt[TCP].flags & 0x04 else "SYN-ACK"), pkt.src
    finally:
        for s in (tx, icmp, tcp):
            s.close()
    return [answers[p] for p in sorted(answers)]


def echoes(ns: str, dst: str, ident: int, count: int, spacing: float, ttl_is_seq: bool = False) -> None:
    """ICMP echo requests to dst with sequence numbers 1..count, `spacing` seconds apart, from inside ns (its
    routes and source address); with ttl_is_seq, each leaves with TTL = its sequence number (traceroute).
    Raises OSError when the node cannot send (no route)."""
    from scapy.layers.inet import ICMP
    (sock,) = _open_in(ns, (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    with sock:
        for seq in range(1, count + 1):
            if ttl_is_seq:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, seq)
            sock.sendto(bytes(ICMP(type=8, id=ident, seq=seq) / b"nslab probe"), (dst, 0))
            time.sleep(spacing)


def arp_who_has(ns: str, iface: str, src_ip: str, ip: str, wait: float = 0.5) -> list[tuple[str, str]]:
    """Broadcast "who-has ip" from iface inside ns (as src_ip) and return (address, MAC) of every answer,
    in order: more than one answer for one address is what breaks LVS DR."""
    from scapy.layers.l2 import ARP, Ether
    (sock,) = _open_in(ns, (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)))
    out = []
    try:
        sock.bind((iface, ETH_P_ARP))
        mac = ":".join(f"{b:02x}" for b in sock.getsockname()[4][:6])
        sock.send(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=1, hwsrc=mac, psrc=src_ip, pdst=ip)))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            frame = Ether(sock.recv(65535))
            if ARP in frame and frame[ARP].op == 2 and frame[ARP].psrc == ip:
                answer = (frame[ARP].psrc, frame[ARP].hwsrc)
                if answer not in out:
                    out.append(answer)
    finally:
        sock.close()
    return out


def ttl_evidence(ns: str, node: str, src: str, dst: str, dport: int, max_ttl: int, who=lambda ip: ip) -> str:
    """ttl_syns as one evidence line, naming the farthest router the probes reached."""
    try:
        answers = ttl_syns(ns, src, dst, dport, max_ttl)
    except OSError as e:
        return f"TTL-limited SYNs from {node}: not sent ({e.strerror})"
    reached = [a for a in answers if a.kind == "time exceeded"]
    tail = f"; the farthest router it reached: {who(reached[-1].source)}" if reached else ""
    return (f"TTL-limited SYNs from {node} to {dst}:{dport} (scapy, source ports {answers[0].sport}-"
            f"{answers[-1].sport}): " + "; ".join(a.describe(who) for a in answers) + tail)


def arp_evidence(ns: str, node: str, iface: str, src_ip: str, ip: str, who=lambda mac: mac) -> str:
    """arp_who_has as one evidence line, naming every node that answered."""
    answers = arp_who_has(ns, iface, src_ip, ip)
    named = ", ".join(f"{who(mac)} ({mac})" for _, mac in answers) or "nobody"
    return f"ARP who-has {ip} sent from {node} {iface} (scapy): answered by {named}"
