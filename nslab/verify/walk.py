"""The packet walk: one request and its reply rebuilt from captured frames as ordered hops, with why each changed.

A packet is followed across rewrites by what no rewrite here touches: TCP by
its sequence numbers (the SYN's ISN; the SYN-ACK acknowledges ISN+1), ICMP by
its echo sequence number, UDP by its payload. NAT, SNAT and IPVS change
addresses and ports; none of them changes those.
"""

from dataclasses import dataclass, field

from ..model.resolve import ResolvedLab
from ..model.schema import Forward
from .frames import BROADCAST, Frame, Ip, describe_ip


class Net:
    """The resolved lab plus who owns which MAC in the running lab: what the walk reads."""

    def __init__(self, lab: ResolvedLab, macs: dict):
        self.lab = lab
        self.topo = lab.topology
        self.macs = {m.lower(): n for m, n in macs.items()}  # mac -> node

    def node_of_mac(self, mac: str | None) -> str:
        if mac == BROADCAST:
            return "broadcast"
        return self.macs.get((mac or "").lower(), mac or "?")

    def services_of(self, node: str, as_role: str):
        if as_role == "director":
            return [s for s in self.lab.services if s.director == node]
        return [s for s in self.lab.services if s.real_server(node)]

    def role(self, node: str) -> str:
        return self.lab.role(node)

    def title(self, node: str, role: str | None = None) -> str:
        """'router r1', but just 'router' for a node named router (no 'router router')."""
        role = role or self.role(node)
        return node if node == role or node.startswith(role) else f"{role} {node}"

    def owns(self, node: str, ip: str) -> bool:
        return node in self.lab.holders(ip)

    def addr_on(self, node: str, segment: str | None) -> str | None:
        """node's address on a segment."""
        ip = self.lab.address_on(node, segment) if segment else None
        return str(ip) if ip else None

    def gateway(self, node: str) -> str | None:
        gw = self.topo.node(node).gateway if self.topo.has_node(node) else None
        return str(gw) if gw else None


def macs_from_status(st: dict) -> dict:
    """{mac: node} from api.status(lab)."""
    return {i["mac"]: n["name"] for n in st["nodes"] for i in n["interfaces"] if i.get("mac") and i["name"] != "lo"}


@dataclass
class Hop:
    """One transmission on one link: a frame as its sender put it there."""

    n: int
    kind: str  # request | reply | arp
    frame: Frame
    sender: str
    receiver: str
    note: str = ""

    @property
    def link(self) -> str:
        return self.frame.link

    @property
    def ip(self) -> Ip | None:
        return self.frame.ip

    def row(self, net: "Net | None" = None) -> dict:
        f = self.frame
        return {"hop": self.n, "kind": self.kind, "link": f.link, "time": f.time,
                "src_mac": f.src_mac, "dst_mac": f.dst_mac, "from": self.sender, "to": self.receiver,
                "packet": f.summary(), "note": self.note,
                "src": f.ip.src if f.ip else None, "dst": f.ip.dst if f.ip else None,
                "proto": f.ip.proto if f.ip else ("arp" if f.arp else None),
                "sport": f.ip.sport if f.ip else None, "dport": f.ip.dport if f.ip else None,
                "flags": f.ip.flags if f.ip else None,
                "inner": describe_ip(f.ip.inner) if f.ip and f.ip.inner else None}


@dataclass
class Walk:
    client: str
    request: list = field(default_factory=list)
    reply: list = field(default_factory=list)
    arp: list = field(default_factory=list)
    server: str | None = None  # the node that answered
    broke: str | None = None  # where and why the walk stops short, in the lab's terms

    @property
    def hops(self) -> list:
        """ARP, request and reply hops in time order, numbered 1..n."""
        return sorted(self.arp + self.request + self.reply, key=lambda h: h.frame.time)

    @property
    def packets(self) -> list:
        return sorted(self.request + self.reply, key=lambda h: h.frame.time)


def innermost(ip: Ip) -> Ip:
    """The packet inside any IP-in-IP wrapping."""
    return ip.inner if ip and ip.inner else ip


def transmissions(frames) -> list:
    """Frames as their sender put them on a link (one copy per transmission)."""
    return [f for f in frames if f.sender and f.l2]


def _first_request(frames, client: str, proto: str | None, sport: int | None, dst: str | None):
    for f in transmissions(frames):
        ip = f.ip
        if f.sender != client or not ip or (proto and ip.proto != proto) or (dst and ip.dst != dst):
            continue
        if sport is not None and ip.sport != sport:
            continue
        if ip.proto == "tcp" and ip.flags == "S":
            return f
        if ip.proto == "icmp" and ip.icmp and ip.icmp[0] == 8:
            return f
        if ip.proto == "udp":
            return f
    return None


def _matchers(first: Frame):
    """(is_request, is_reply) predicates over a frame's innermost packet."""
    r = first.ip
    if r.proto == "tcp":
        return (lambda p: p.proto == "tcp" and p.flags == "S" and p.seq == r.seq,
                lambda p: p.proto == "tcp" and p.flags == "SA" and p.ack == (r.seq + 1) & 0xFFFFFFFF)
    if r.proto == "icmp":
        return (lambda p: p.icmp is not None and p.icmp[0] == 8 and p.icmp[3] == r.icmp[3] and p.payload == r.payload,
                lambda p: p.icmp is not None and p.icmp[0] == 0 and p.icmp[3] == r.icmp[3] and p.payload == r.payload)
    # UDP: our echo servers send the payload back; the request goes to the port the client used
    return (lambda p: p.proto == "udp" and p.payload == r.payload and p.sport != r.dport,
            lambda p: p.proto == "udp" and p.payload == r.payload and p.sport == r.dport)


def _chain(frames, pred, kind, net) -> list:
    hops, seen = [], set()
    for f in transmissions(frames):
        if f.ip and pred(innermost(f.ip)) and (f.sender, f.link) not in seen:
            seen.add((f.sender, f.link))  # a retransmission is not a new hop
            hops.append(Hop(0, kind, f, f.sender, net.node_of_mac(f.dst_mac)))
    return hops


def walk(frames, net: Net, client: str, proto: str | None = None, sport: int | None = None,
         dst: str | None = None) -> Walk:
    """Rebuild the first request client sent (optionally by protocol, client port, destination) and its reply."""
    w = Walk(client)
    first = _first_request(frames, client, proto, sport, dst)
    if first is None:
        w.broke = _nothing_sent(frames, net, client)
        w.arp = _arps(frames, net, None)
        return w
    is_req, is_rep = _matchers(first)
    w.request = _chain(frames, is_req, "request", net)
    w.reply = _chain(frames, is_rep, "reply", net)
    last = w.packets[-1].frame.time if w.packets else None
    w.arp = _arps(frames, net, last)
    for i, h in enumerate(w.hops, 1):
        h.n = i
    _explain(w, net)
    w.broke = _where_it_broke(w, net, frames)
    return w


def _arps(frames, net, until) -> list:
    return [Hop(0, "arp", f, f.sender, net.node_of_mac(f.dst_mac)) for f in transmissions(frames)
            if f.arp and (until is None or f.time <= until)]


def unanswered_arps(frames, node: str) -> dict:
    """{asked ip: times} for who-has requests node sent that nobody answered."""
    asked, answered = {}, set()
    for f in transmissions(frames):
        if f.arp and f.arp["op"] == 1 and f.sender == node:
            asked[f.arp["pdst"]] = asked.get(f.arp["pdst"], 0) + 1
        elif f.arp and f.arp["op"] == 2:
            answered.add(f.arp["psrc"])
    return {ip: n for ip, n in asked.items() if ip not in answered}


def _stuck(frames, node, where) -> str:
    lost = unanswered_arps(frames, node)
    if lost:
        ip, n = next(iter(lost.items()))
        return (f"{node} asked ARP who-has {ip} {n} time(s) and nobody answered, so it never sent the "
                f"packet{where}: nothing on the lab has address {ip}")
    return f"{node} did not pass it on{where}"


def _nothing_sent(frames, net, client) -> str:
    return f"{client} sent no request on any link; " + _stuck(frames, client, "")


def _where_it_broke(w: Walk, net: Net, frames) -> str | None:
    if not w.request:
        return f"the request never left {w.client}; " + _stuck(frames, w.client, "")
    last = w.request[-1]
    dst = innermost(last.ip).dst if last.ip.inner else last.ip.dst
    if not net.owns(last.receiver, dst) and not net.owns(last.receiver, last.ip.dst):
        if any(h.sender == last.receiver for h in w.request):  # it had passed that node already: a loop
            ttls = " -> ".join(str(h.ip.ttl) for h in w.request)
            return (f"the request went round in a loop: {' -> '.join([w.client] + [h.receiver for h in w.request])}"
                    f" (hop {last.n}, {last.link}), the TTL falling {ttls} on each pass until a router drops it")
        return (f"the request stopped at {last.receiver} (hop {last.n}, {last.link}): "
                + _stuck(frames, last.receiver, f" toward {dst}"))
    w.server = last.receiver
    if not w.reply:
        return (f"{w.server} got the request (hop {last.n}, {last.link}) but its reply never left "
                f"{last.frame.segment}: " + _stuck(frames, w.server, ""))
    end = w.reply[-1]
    if end.receiver != w.client:
        return (f"the reply stopped at {end.receiver} (hop {end.n}, {end.link}) and never reached {w.client}; "
                + _stuck(frames, end.receiver, f" toward {end.ip.dst}"))
    return None


def _explain(w: Walk, net: Net) -> None:
    for chain in (w.request, w.reply):
        for i, h in enumerate(chain):
            h.note = _first_note(h, net, chain is w.reply) if i == 0 else _note(chain[i - 1], h, net)
    for h in w.arp:
        a = h.frame.arp
        if a["op"] == 1:
            h.note = (f"{h.sender} asks everyone on {h.frame.segment} (broadcast): who has {a['pdst']}?"
                      if h.frame.dst_mac == BROADCAST else f"{h.sender} re-checks {a['pdst']} (unicast probe)")
        else:
            h.note = f"{h.sender} answers {h.receiver} only (unicast): {a['psrc']} is at {a['hwsrc']}"


def _first_note(h: Hop, net: Net, reply: bool) -> str:
    ip, who = h.ip, h.sender
    if net.owns(h.receiver, innermost(ip).dst) and not ip.inner:
        how = f"straight to {h.receiver} (same subnet)"
    else:
        nh = net.addr_on(h.receiver, h.frame.segment)
        gw = net.gateway(who)
        via = "its gateway" if gw and gw == nh else "next hop"
        how = f"via {via} {h.receiver} ({nh or h.frame.dst_mac})"
    text = f"{who} {'answers' if reply else 'sends'} {ip.src} -> {ip.dst} {how}"
    if reply:
        for s in net.services_of(who, "rs"):
            if ip.src == str(s.vip):
                text += f"; source is the VIP {s.vip}, not through {s.director} — {s.method.value.upper()}"
    return text


def _note(prev: Hop, h: Hop, net: Net) -> str:
    a, b, who = prev.ip, h.ip, h.sender
    if b.inner and not a.inner:
        return (f"IP-in-IP: {who} wraps outer {b.src} -> {b.dst} (proto 4) around inner "
                f"{b.inner.src} -> {b.inner.dst} — TUN")
    if a.inner and not b.inner:
        a = a.inner
    directed = [s for s in net.services_of(who, "director")]
    if (a.src, a.dst) == (b.src, b.dst):
        for s in directed:
            if b.dst == str(s.vip) and s.method is Forward.DR:
                return (f"{net.title(who, 'director')} rewrote the destination MAC only (now {h.receiver}'s "
                        f"{h.frame.dst_mac}); IP pair unchanged — DR")
        if net.owns(h.receiver, b.dst):
            return f"{net.title(who)}: {b.dst} is on its own network, delivers to {h.receiver}; new MAC pair, same IP pair"
        nh = net.addr_on(h.receiver, h.frame.segment) or h.receiver
        return f"{net.title(who)}: next hop {nh} ({h.receiver}), new MAC pair, same IP pair"
    parts = []
    if a.dst != b.dst:
        vip = next((s for s in directed if a.dst == str(s.vip)), None)
        if vip:
            parts.append(f"{net.title(who, 'director')} rewrote destination VIP {a.dst} -> RIP {b.dst} — NAT")
        elif net.topo.has_node(who) and net.topo.node(who).nat:
            parts.append(f"SNAT undone: {who} rewrote destination {a.dst} -> {b.dst}")
        elif net.topo.has_node(who) and net.topo.node(who).dnat:
            parts.append(f"DNAT (port forward): {who} rewrote destination {a.dst} -> {b.dst}")
        else:
            parts.append(f"{who} rewrote destination {a.dst} -> {b.dst}")
    if a.src != b.src:
        vip = next((s for s in directed if b.src == str(s.vip)), None)
        if vip:
            parts.append(f"{net.title(who, 'director')} rewrote source RIP {a.src} -> VIP {b.src} — NAT")
        elif net.topo.has_node(who) and net.topo.node(who).nat:
            parts.append(f"SNAT: {who} rewrote source {a.src} -> {b.src}")
        elif net.topo.has_node(who) and net.topo.node(who).dnat:
            parts.append(f"DNAT undone: {who} rewrote source {a.src} -> {b.src}")
        else:
            parts.append(f"{who} rewrote source {a.src} -> {b.src}")
    if (a.sport, a.dport) != (b.sport, b.dport):
        parts.append(f"ports {a.sport}->{a.dport} became {b.sport}->{b.dport}")
    return "; ".join(parts)

