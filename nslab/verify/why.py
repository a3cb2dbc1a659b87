"""`nslab why`: send a probe under the lab-wide sniffers, find the first place it stopped, read the kernel
state of the nodes there (the route it used, the sysctl, the counter that moved), and name the cause and
the fix in the lab's YAML terms. Every cause comes from evidence, never from which file the lab came from.
"""

import json
import time
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network

from .. import pyhelper
from ..kernel import addrs, inspect, observe, procs
from ..kernel.session import Session
from ..model import reach
from ..model.diag import dotted
from ..model.resolve import ResolvedLab, routes_of
from ..model.schema import Forward
from . import run, walk as walking
from .concepts import nodes_along
from .frames import parse_ip
from .sniff import Capture
from .walk import innermost, transmissions

CAUSES = {
    "no-route": "no route", "ip-forward": "forwarding off (net.ipv4.ip_forward=0)", "arp": "ARP unanswered",
    "netmask": "netmask (address/prefix length)", "rp-filter": "rp_filter dropped it",
    "route-back": "no route back", "reply-path": "the reply left by another path",
    "nothing-listening": "nothing listening on the port", "no-snat": "private source left without SNAT",
    "ipvs-no-service": "IPVS has no such service", "ipvs-no-real-server": "IPVS has no real server",
    "ipvs-zero-weight": "IPVS: every real server has weight 0",
    "dr-arp": "DR: a real server answered ARP for the VIP", "dr-no-vip": "DR: the real server lacks the VIP",
    "nat-bypass": "NAT: the real server's reply bypassed the director",
    "tun-no-tunl0": "TUN: no tunl0 up on the real server",
    "tun-rp-filter": "TUN: rp_filter dropped the decapsulated packet", "loop": "a routing loop",
    "unknown": "cause not identified",
}
TIMEOUT = 3.0  # seconds each request may take: a broken lab costs this long, a healthy one far less
BUDGET = 240.0  # seconds the traffic generator may take in all: Python starts slowly in an emulated VM
QUIET_SECONDS = 0.2
ROUTED = {"no-route", "ip-forward", "arp", "rp-filter", "route-back", "reply-path", "no-snat", "loop", "netmask"}


@dataclass
class Finding:
    """The first thing that went wrong: where, why in words a user would search for, the kernel's
    evidence, and the fix as a YAML path and value."""

    cause: str  # a key of CAUSES
    node: str
    text: str
    fix: str  # "nodes.r1.forward: true", or an instruction that starts with the YAML path
    iface: str | None = None
    evidence: list = field(default_factory=list)

    @property
    def fix_path(self) -> str:
        return self.fix.split(":", 1)[0].split(" ", 1)[0]

    @property
    def label(self) -> str:
        return CAUSES[self.cause]

    @property
    def headline(self) -> str:
        return f"{self.label} at {self.node}" + (f" {self.iface}" if self.iface else "") + f"; fix: {self.fix}"


@dataclass
class Why:
    """The answer to `nslab why`: the path when the probe was answered, else where and why it stopped."""

    lab: str
    source: str
    target: str
    kind: str
    sent: int
    answered: int
    request: list
    reply: list
    hops: list = field(default_factory=list, repr=False)
    last_seen: dict | None = None
    finding: Finding | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.finding is None

    def lines(self) -> list[str]:
        state = "answered" if self.ok else "NOT answered" if not self.answered else "answered, but"
        out = [f"why {self.lab}: {self.source} -> {self.target} ({self.kind}): {state} "
               f"({self.answered} of {self.sent}, {self.seconds:.1f} s)"]
        out.append("  request: " + (" -> ".join(self.request) or f"never left {self.source}"))
        out.append("  reply:   " + (" -> ".join(self.reply) or "none"))
        if self.ok:
            return out
        f, seen = self.finding, self.last_seen
        if seen:
            out.append(f"  last seen: {seen['node']}" + (f" {seen['iface']}" if seen.get("iface") else "")
                       + (f", hop {seen['hop']} on {seen['link']}: {seen['packet']}" if seen.get("hop") else ""))
        out.append(f"  cause: {CAUSES[f.cause]} at {f.node}" + (f" {f.iface}" if f.iface else "") + f": {f.text}")
        out.append("  evidence:")
        out += [f"    {line}" for line in f.evidence]
        out.append(f"  fix: {f.fix}")
        return out

    def as_dict(self) -> dict:
        f = self.finding
        return {"lab": self.lab, "from": self.source, "target": self.target, "kind": self.kind, "ok": self.ok,
                "sent": self.sent, "answered": self.answered, "request": self.request, "reply": self.reply,
                "hops": self.hops, "last_seen": self.last_seen, "seconds": round(self.seconds, 2),
                "cause": None if f is None else {"key": f.cause, "label": CAUSES[f.cause], "node": f.node,
                                                 "iface": f.iface, "text": f.text},
                "evidence": f.evidence if f else [], "fix": None if f is None else {"path": f.fix_path, "text": f.fix}}

    def __str__(self):
        return "\n".join(self.lines())


@dataclass
class Probe:
    """One failing (or the first) connection and everything the diagnosis reads."""

    rlab: ResolvedLab
    net: object
    k: inspect.Looks
    frames: list
    client: str
    target: object
    w: object

    @property
    def svc(self):
        return self.target.service


def why(rlab: ResolvedLab, client: str, target, timeout: float = TIMEOUT) -> Why:
    """Probe target from client (a service: two requests per real server, so each is tried) and explain."""
    started = time.monotonic()
    svc = target.service
    count = max(2, 2 * len(svc.real_servers)) if svc else 1
    with Session() as s:
        k = inspect.Looks(s, rlab.ns, [n.name for n in rlab.topology.nodes])
        k.snapshot(k.before)
        frames, traffic = _capture(rlab, s, client, target, count, timeout)
        k.snapshot(k.after)
        net = walking.Net(rlab, run.macs(rlab))
        proto = "udp" if target.kind == "udp" else "tcp"
        walks = [walking.walk(frames, net, client, proto=proto, sport=port) for port in _client_ports(frames, client,
                                                                                                   target)]
        answered = traffic.get("ok", 0)
        # the client's own count decides; the walks say which connection to explain
        bad = next((w for w in walks if not _answered(w, client, target)), walks[0]) if answered < count else None
        shown = bad or walks[0]
        p = Probe(rlab, net, k, frames, client, target, shown)
        finding = None
        if bad:
            finding = diagnose(p) or Finding("unknown", client, "the packets went both ways, but the client "
                                             "reported: " + _errors(traffic), "see the evidence",
                                             evidence=_hop_lines(shown))
        elif svc and svc.method is not Forward.NAT:
            finding = _vip_arp(p)
        if finding and finding.cause in ROUTED and shown.request and target.kind != "udp":
            finding.evidence += _ttl_lines(p)
    return Why(rlab.name, client, str(target), target.kind, count, answered, nodes_along(shown.request),
               nodes_along(shown.reply), [h.row() for h in shown.hops], _last_seen(p) if finding else None,
               finding, time.monotonic() - started)


def _capture(rlab, session, client, target, count, timeout):
    """Sniff every link while the traffic generator sends `count` requests at once from client: (frames,
    its JSON result). Neighbour caches are flushed first, so every first packet to a neighbour shows ARP."""
    for node in rlab.topology.nodes:
        addrs.flush_neighbours(session, rlab.ns(node.name))
    argv = pyhelper.argv("nslab.verify.traffic", target.kind, "--target", str(target), "--count", str(count),
                         "--timeout", str(timeout), "--concurrency", str(count))
    # a socket bound to an interface that is down (a tunl0 taken down) fails every read: leave those out
    up = {(tap.ns, tap.ifname) for tap in rlab.taps if not tap.in_fabric
          for i in observe.interfaces(session, tap.ns) if i["name"] == tap.ifname and i["up"]}
    taps = [tap for tap in rlab.taps if tap.in_fabric or (tap.ns, tap.ifname) in up]
    cap = Capture(taps, max_seconds=BUDGET + 30).start()
    try:
        proc = procs.capture(rlab.ns(client), argv, timeout=BUDGET, env=pyhelper.env())
        seen = -1
        while cap.seen != seen:  # wait for quiet: replies and retransmissions still in flight
            seen = cap.seen
            time.sleep(QUIET_SECONDS)
    finally:
        frames = cap.stop()
    try:
        return frames, json.loads(proc.stdout)
    except ValueError:
        return frames, {"error": (proc.stderr or proc.stdout).strip()[-300:], "ok": 0, "failed": count}


def _client_ports(frames, client, target) -> list:
    """The client port of every request client sent to target, in order (a connection that never opened
    has one too: the traffic generator only reports the ports of those that did); [None] if none left."""
    ports = []
    for f in transmissions(frames):
        ip = f.ip
        if (f.sender == client and ip and ip.dst == target.ip and ip.dport == target.port
                and (ip.proto == "udp" or ip.flags == "S") and ip.sport not in ports):
            ports.append(ip.sport)
    return ports or [None]


def _errors(traffic) -> str:
    errs = traffic.get("errors") or {}
    return ", ".join(f"{k} x{v}" for k, v in errs.items()) or traffic.get("error") or "no answer"


def _answered(w, client, target) -> bool:
    if not w.request or not w.reply or w.reply[-1].receiver != client:
        return False
    got = innermost(w.reply[-1].ip)
    return got.src == target.ip and got.sport == target.port


def _hop_lines(w) -> list[str]:
    return [f"hop {h.n} {h.link}: {h.sender} -> {h.receiver} {h.frame.summary()}" for h in w.packets]


def _iface_of(rlab, node, frame) -> str | None:
    """The interface of node on the link a frame was seen on."""
    seg = rlab.segment(frame.segment) if frame.segment else None
    end = seg.end(node) if seg else None
    return end.iface if end else (frame.link.split(":")[-1] if not frame.l2 else None)


def _last_seen(p: Probe) -> dict:
    w = p.w
    if not w.request:
        return {"node": p.client, "iface": None, "hop": None, "link": None, "packet": "never sent"}
    h = (w.reply or w.request)[-1]
    return {"node": h.receiver, "iface": _iface_of(p.rlab, h.receiver, h.frame), "hop": h.n,
            "link": h.frame.segment or h.link, "packet": h.frame.summary()}


def diagnose(p: Probe) -> Finding | None:
    """The first thing that went wrong with p.w, from the captures and the kernel's state."""
    w, svc = p.w, p.svc
    if not w.request:
        return _stopped(p, p.client, None, p.target.ip, None, "request")
    last = w.request[-1]
    got = innermost(last.ip)
    here = last.receiver
    seen = [(h.receiver, h.ip.src, h.ip.dst, h.ip.proto) for h in w.request]  # the same packet, not a tunnel
    if len(set(seen)) < len(seen):
        return _loop(p, w.request, got.dst)
    if not (p.net.owns(here, got.dst) or p.net.owns(here, last.ip.dst)):
        return _stopped(p, here, _iface_of(p.rlab, here, last.frame), got.dst, got.src, "request")
    if svc and here == svc.director and got.dst == str(svc.vip):
        return _ipvs(p, svc, last)
    rs = svc.real_server(here) if svc else None
    return ((_real_server(p, svc, here, last) if rs else None) or _at_server(p, here, last))


def _loop(p: Probe, hops, dst) -> Finding:
    """The request came back to a node it had passed: routes that point at each other."""
    seen, back = set(), hops[-1]
    for h in hops:
        seen.add((h.sender, h.ip.src, h.ip.dst))
        if (h.receiver, h.ip.src, h.ip.dst) in seen:
            back = h
            break
    culprit = back.sender
    for h in hops[1:]:  # the router whose own route ignores a neighbour that really reaches dst
        good = {str(via) for _, _, via in reach.next_hops(p.rlab, h.sender, dst)}
        route = p.k.route(h.sender, dst)
        if good and route["ok"] and (route["via"] or str(dst)) not in good:
            culprit = h.sender
            break
    route = p.k.route(culprit, dst)
    exceeded = [f"{f.segment}: {f.sender} sent {f.summary()} (time exceeded)" for f in transmissions(p.frames)
                if f.ip and f.ip.icmp and f.ip.icmp[0] == 11][:1]
    return Finding("loop", culprit, f"the packet for {dst} went round " + " -> ".join(nodes_along(hops))
                   + f": {culprit} sends it back ({route.get('text', route.get('error'))}) until its TTL runs out",
                   reach.route_fix(p.rlab, culprit, dst), None,
                   [p.k.route_line(h.sender, p.k.route(h.sender, dst)) for h in hops[1:4]] + exceeded)


def _stopped(p: Probe, node, iface, dst, src, direction) -> Finding:
    """A packet for someone else stopped at node (the sender itself when iface is None)."""
    k, evidence = p.k, []
    if k.moved(node, "TcpExt.IPReversePathFilter") > 0:
        return _rp_filter(p, node, iface, src)
    if iface is not None and k.sysctls(node, ["net.ipv4.ip_forward"])["net.ipv4.ip_forward"] == "0":
        by_hand = "net.ipv4.ip_forward" in dict(p.rlab.topology.node(node).sysctls)
        fix = f"nodes.{node}.sysctls.net.ipv4.ip_forward: 1" if by_hand else f"nodes.{node}.forward: true"
        prev = _previous(p, node)
        return Finding("ip-forward", node, f"{node} received the packet for {dst} on {iface} but does not "
                       f"forward packets (net.ipv4.ip_forward=0): it is {prev}'s next hop, not a router", fix, iface,
                       [f"sysctl net.ipv4.ip_forward = 0 in {node}",
                        k.route_line(node, k.route(node, dst, src, iface))] + k.moved_lines(node))
    route = k.route(node, dst)
    evidence.append(k.route_line(node, route))
    if not route["ok"]:
        narrow = _netmask_leaves_out(p, node, dst)
        if narrow:
            return narrow
        back = direction == "reply"
        cause = "route-back" if back else "no-route"
        who = "the sender " if node == p.client else ""
        text = (f"{who}{node} has no route to {dst}" + (f" for the reply to {p.client}" if back else "")
                + f": the kernel answers {route['error']}")
        return Finding(cause, node, text, reach.route_fix(p.rlab, node, dst), iface,
                       evidence + [k.routes_line(node)]
                       + _icmp_from(p, node) + k.moved_lines(node))
    nh = route["via"] or str(dst)
    lost = walking.unanswered_arps(p.frames, node)
    if nh in lost:
        return _arp(p, node, route, nh, dst, lost[nh])
    return Finding("unknown", node, f"{node} had a route for {dst} ({route['text']}) but sent nothing on",
                   "see the evidence", iface, evidence + k.moved_lines(node) + _hop_lines(p.w))


def _previous(p: Probe, node) -> str:
    return next((h.sender for h in p.w.request + p.w.reply if h.receiver == node), p.client)


def _netmask_leaves_out(p: Probe, node, dst) -> Finding | None:
    """node has no route to dst although dst's holder is on one of node's segments: node's netmask there
    is too narrow to see it."""
    narrow = reach.narrow_netmask(p.rlab, node, dst)
    if narrow is None:
        return None
    iface, mine, holder, seg = narrow
    theirs = next(a for a in holder.addresses if str(a.ip) == str(dst))
    conn = next(r for r in routes_of(p.rlab, node) if r.connected and r.iface == iface)
    return Finding("netmask", node, f"{node}'s address {mine} on {iface} (netmask /{mine.network.prefixlen}) leaves "
                   f"{dst} out of its network {mine.network}, although {dst} ({holder.node}) is on the same segment "
                   f"{seg.name}: so {node} has no route to it", f"{dotted(conn.origin)}: {mine.ip}/"
                   f"{reach.wider_prefix(mine, theirs)}", iface,
                   [p.k.route_line(node, p.k.route(node, dst)), f"{holder.node} has {theirs} on {seg.name}"])


def _icmp_from(p: Probe, node) -> list[str]:
    """The ICMP destination-unreachable messages node sent, once each."""
    from .probe import UNREACHABLE  # a constant: scapy is not imported for it
    lines = [f"{f.segment or f.link}: {node} sent {f.summary()} ({UNREACHABLE.get(f.ip.icmp[1], 'unreachable')})"
             for f in transmissions(p.frames) if f.sender == node and f.ip and f.ip.icmp and f.ip.icmp[0] == 3]
    return list(dict.fromkeys(lines))[:2]


def _arp(p: Probe, node, route, nh, dst, times) -> Finding:
    rlab, dev = p.rlab, route["dev"]
    seg = rlab.segment_of(node, dev)
    where = seg.name if seg else dev
    evidence = [p.k.route_line(node, route), f"{node} asked ARP who-has {nh} on {where} {times} time(s); "
                "nobody answered"] + p.k.neighbour_lines(node, nh)
    owner = reach.owner_on_segment(rlab, node, dev, nh)
    if owner:
        return _silent_neighbour(p, node, owner, nh, where, evidence)
    if route["via"] is None:  # the sender thought dst was on its own segment
        conn = next((r for r in routes_of(rlab, node) if r.connected and r.iface == dev
                     and ip_address(str(dst)) in r.to), None)
        holder = next(iter(rlab.holders(dst)), None)
        if conn and holder:
            mine = next(a for i in rlab.topology.node(node).interfaces if i.name == dev for a in i.addresses
                        if ip_address(str(dst)) in a.network)
            return Finding("netmask", node, f"{node}'s address {mine} on {dev} (netmask /{mine.network.prefixlen}) "
                           f"puts {dst} inside its own network {mine.network}, so it asks ARP for it on {where} "
                           f"instead of sending to its gateway; but {dst} is {holder}'s, on another segment",
                           f"{dotted(conn.origin)}: {mine.ip}/{_prefix(rlab, node, dev, mine, dst)}", dev, evidence)
        return Finding("arp", node, f"nothing in the lab has {dst}: {node} asks ARP for it on {where} and nobody "
                       "answers", "send to an address the lab has", dev, evidence)
    static = reach.lookup(rlab, node, dst)
    origin = dotted(static.origin) if static and static.via and str(static.via) == nh else f"nodes.{node}.routes"
    hops = [h for h in reach.next_hops(rlab, node, dst) if h[0] == dev] or reach.next_hops(rlab, node, dst)
    fix = f"{origin}: {hops[0][2]} ({hops[0][1]}, which reaches {dst})" if hops else \
        f"{origin}: an address on {where} that a router has"
    return Finding("arp", node, f"{node} sends to {dst} through its next hop {nh}, but nobody on {where} has "
                   f"{nh}: its ARP who-has goes unanswered, so the packet never leaves", fix, dev, evidence)


def _silent_neighbour(p: Probe, asker, owner, ip, where, evidence) -> Finding:
    """owner holds ip on the segment (the lab says so) yet never answered asker's ARP: what its kernel says."""
    rlab, k = p.rlab, p.k
    seg = rlab.segment(where)
    end = seg.end(owner) if seg else None
    iface = end.iface if end else None
    live = next((i for i in k.interfaces(owner) if i["name"] == iface), None)
    keys = [f"net.ipv4.conf.{s}.{key}" for key in ("arp_ignore", "arp_filter") for s in ("all", iface or "all")]
    values = k.sysctls(owner, keys)
    node = rlab.topology.node(owner)
    by_hand = [key for key, _ in node.sysctls if key.rsplit(".", 1)[-1] in ("arp_ignore", "arp_filter")]
    if live is None or not live["up"]:
        why_not = f"its {iface} is {'missing' if live is None else 'down'}"
    elif not any(a.split("/")[0] == str(ip) for i in k.interfaces(owner) for a in i["addresses"]):
        why_not = f"{ip} is not on any of its interfaces in the kernel"
    else:
        why_not = "its ARP settings keep it quiet (" + ", ".join(f"{key.split('.', 3)[-1]}={v}" for key, v in
                                                               values.items() if v not in (None, "0")) + ")"
    fix = (f"nodes.{owner}.sysctls.{by_hand[0]}: remove it" if by_hand else f"nodes.{owner}.exec: remove what "
           "undoes it" if node.exec else "bring the lab up again (nslab up)")
    return Finding("arp", owner, f"{asker} asks ARP who-has {ip} on {where} and nobody answers, though {owner} "
                   f"should have it there: {why_not}", fix, iface,
                   evidence + [f"ip link/addr in {owner}: {iface} " + (f"{'UP' if live['up'] else 'DOWN'} "
                               f"{', '.join(live['addresses']) or 'no address'}" if live else "missing")]
                   + [f"sysctl {key} = {v} in {owner}" for key, v in values.items()])


def _prefix(rlab, node, dev, mine, dst) -> int:
    """The netmask that keeps node's neighbours on the segment and puts dst off it: the neighbours' own,
    else the widest one that leaves dst out."""
    dst = ip_address(str(dst))
    seg = rlab.segment_of(node, dev)
    for e in seg.ends if seg else ():
        for a in e.addresses:
            if e.node != node and mine.ip in a.network and dst not in a.network:
                return a.network.prefixlen
    return next(n for n in range(mine.network.prefixlen + 1, 33)
                if dst not in ip_network(f"{mine.ip}/{n}", strict=False))


def _rp_filter(p: Probe, node, iface, src) -> Finding:
    k, rlab = p.k, p.rlab
    svc = p.svc
    values = k.sysctls(node, [f"net.ipv4.conf.{s}.rp_filter" for s in ("all", iface or "all")])
    back = k.route(node, src) if src else None
    tun = bool(svc and svc.method is Forward.TUN and svc.real_server(node))
    set_by_hand = [key for key, v in rlab.topology.node(node).sysctls if key.endswith(".rp_filter") and v != "0"]
    if tun and not svc.rp_filter_relax:
        fix = f"services.{svc.name}.rp_filter_relax: true"
    elif set_by_hand:
        fix = (f"nodes.{node}.sysctls.{set_by_hand[0]}: remove it" + (" and " + ", ".join(set_by_hand[1:]) if
               set_by_hand[1:] else "") + " (nslab sets 0; 2, loose, also works)")
    else:
        fix = f"nodes.{node}.sysctls: {{net.ipv4.conf.all.rp_filter: 0, net.ipv4.conf.{iface}.rp_filter: 0}}"
    out = back["dev"] if back and back["ok"] else None
    level = max((int(v) for v in values.values() if v and v.isdigit()), default=0)  # the kernel uses the max
    text = (f"{node} dropped the packet from {src} that arrived on {iface}: reverse-path filtering "
            f"(rp_filter={level}, {'strict' if level == 1 else 'loose'}) accepts a packet only "
            + ("on the interface its route back leaves by" if level == 1 else "from a source it has a route to")
            + f", and {node}'s route back to {src} leaves by {out or 'no interface'}")
    if tun:
        text = f"the decapsulated packet (client -> VIP) appears on tunl0; " + text
    return Finding("tun-rp-filter" if tun else "rp-filter", node, text, fix, iface,
                   [k.counter_line(node, "TcpExt.IPReversePathFilter")]
                   + [f"sysctl {key} = {v} in {node}" for key, v in values.items()]
                   + ([k.route_line(node, back)] if back else []))


def _ipvs(p: Probe, svc, last) -> Finding:
    """The director holds the VIP but sent the request nowhere: what its IPVS table says."""
    from ..kernel import ipvs
    d = svc.director
    table = [t for t in ipvs.read_services(p.k.s, p.k.ns(d)) if t["vip"] == str(svc.vip) and t["port"] == svc.port]
    lines = [f"IPVS in {d} (ipvsadm -Ln): " + (f"{t['protocol'].upper()} {t['vip']}:{t['port']} {t['scheduler']}: "
             + (", ".join(f"-> {r['address']}:{r['port']} {r['method']} weight {r['weight']}"
                          for r in t["real_servers"]) or "no real servers")
             if t else f"no service {svc.vip}:{svc.port}") for t in table or [None]] + _icmp_from(p, d)
    if not table:
        return Finding("ipvs-no-service", d, f"{d} holds the VIP {svc.vip} but IPVS has no service "
                       f"{svc.vip}:{svc.port}, so nothing forwards the request", f"services.{svc.name}: "
                       f"bring the lab up again (nslab up) to program it", None, lines)
    rss = table[0]["real_servers"]
    if not rss:
        return Finding("ipvs-no-real-server", d, f"IPVS on {d} has service {svc.vip}:{svc.port} with no real "
                       "server: it answers ICMP port unreachable for every connection",
                       f"services.{svc.name}.real_servers: bring the lab up again (nslab up) to add them back"
                       + (f"; and drop what removes them (nodes.{d}.exec)" if p.rlab.topology.node(d).exec else ""),
                       None, lines)
    if all(r["weight"] == 0 for r in rss):
        drained = [r.node for r in svc.real_servers if str(r.address) in {x["address"] for x in rss}]
        others = f" (and {', '.join(drained[1:])})" if drained[1:] else ""
        return Finding("ipvs-zero-weight", d, f"every real server of {svc.name} has weight 0 in IPVS on {d}, so "
                       "the scheduler picks none and the director answers ICMP port unreachable",
                       f"services.{svc.name}.real_servers.{drained[0] if drained else '?'}.weight: 1{others}",
                       None, lines)
    return Finding("unknown", d, f"{d} got the request for {svc.vip} and IPVS has real servers, but it sent "
                   "nothing on", "see the evidence", None, lines + p.k.moved_lines(d) + _hop_lines(p.w))


def _real_server(p: Probe, svc, rs, last) -> Finding | None:
    """DR: the real server must hold the VIP; TUN: tunl0 up holding it."""
    if svc.method is Forward.NAT:
        return None
    ifs = {i["name"]: i for i in p.k.interfaces(rs)}
    vip = str(svc.vip)
    exec_fix = f"nodes.{rs}.exec: remove what undoes it" if p.rlab.topology.node(rs).exec else \
        "bring the lab up again (nslab up)"
    if svc.method is Forward.DR and not any(a.split("/")[0] == vip for i in ifs.values() for a in i["addresses"]):
        return Finding("dr-no-vip", rs, f"{rs} got the request for the VIP {vip} (the director changed only the "
                       f"MAC), but {rs} does not hold the VIP on lo, so the packet is not for it and is dropped",
                       f"{exec_fix} (nslab puts {vip}/32 on {rs}'s lo for DR)", _iface_of(p.rlab, rs, last.frame),
                       [f"ip addr in {rs}: lo " + ", ".join(ifs.get("lo", {}).get("addresses", []))]
                       + p.k.moved_lines(rs))
    tunl = ifs.get("tunl0")
    if svc.method is Forward.TUN and (not tunl or not tunl["up"] or not any(a.startswith(vip + "/")
                                                                              for a in tunl["addresses"])):
        state = "missing" if not tunl else ("DOWN" if not tunl["up"] else "up without the VIP")
        return Finding("tun-no-tunl0", rs, f"{rs} got the IP-in-IP packet from the director, but its tunl0 is "
                       f"{state}: nothing unwraps it (the kernel answers ICMP unreachable)",
                       f"{exec_fix} (nslab brings tunl0 up with {vip}/32 for TUN)", "tunl0",
                       [f"ip link in {rs}: tunl0 {state}" + (f" {tunl['addresses']}" if tunl else "")]
                       + _icmp_from(p, rs) + p.k.moved_lines(rs))
    return None


def _refusal(p: Probe, server, last):
    """A RST or ICMP port unreachable the server sent for this request, or None."""
    got = innermost(last.ip)
    for f in transmissions(p.frames):
        if f.sender != server or not f.ip or f.time < last.frame.time:
            continue
        ip = innermost(f.ip)
        if ip.proto == "tcp" and "R" in ip.flags and (ip.src, ip.sport, ip.dport) == (got.dst, got.dport, got.sport):
            return f
        quoted = parse_ip(ip.payload) if ip.icmp and ip.icmp[:2] == (3, 3) else None
        if quoted and quoted.dst == got.dst and quoted.src == got.src:
            return f
    return None


def _at_server(p: Probe, server, last) -> Finding | None:
    """The request reached the node that holds its destination: did it answer, and did the answer arrive?"""
    k, w, got = p.k, p.w, innermost(last.ip)
    iface = _iface_of(p.rlab, server, last.frame)
    if k.moved(server, "TcpExt.IPReversePathFilter") > 0:
        return _rp_filter(p, server, "tunl0" if last.ip.inner else iface, got.src)
    refused = _refusal(p, server, last)
    if refused:
        return _nothing_listening(p, server, got, refused)
    if not w.reply:
        return _no_reply(p, server, last, got)
    end = w.reply[-1]
    if end.receiver != p.client:
        came_from, went_to = last.sender, w.reply[0].receiver
        stop = _stopped(p, end.receiver, _iface_of(p.rlab, end.receiver, end.frame), end.ip.dst, end.ip.src, "reply")
        if went_to != came_from and stop.cause in ("route-back", "ip-forward", "arp", "rp-filter"):
            out_if = _iface_of(p.rlab, server, w.reply[0].frame)
            return Finding("reply-path", server, f"{server}'s reply to {end.ip.dst} left by {out_if} to {went_to} "
                           f"(its route), not back to {came_from} where the request came from on {iface}; on that "
                           f"path {CAUSES[stop.cause]} at {stop.node}: {stop.text}",
                           reach.route_fix(p.rlab, server, end.ip.dst, prefer=came_from), out_if,
                           [k.route_line(server, k.route(server, end.ip.dst))] + stop.evidence)
        return stop
    svc, first = p.svc, w.reply[0]
    if svc and svc.method is Forward.NAT and svc.real_server(server) and svc.director not in nodes_along(w.reply):
        rs = svc.real_server(server)
        fix = f"nodes.{server}.gateway: {rs.director_addresses[0]}" if rs.director_addresses else \
            f"nodes.{server}.routes: send replies through {svc.director}"
        return Finding("nat-bypass", server, f"{server}'s reply left through {first.receiver}, not through the "
                       f"director {svc.director}: nobody rewrote its source {innermost(end.ip).src} back to the VIP "
                       f"{svc.vip}, so {p.client} drops an answer it never asked for", fix,
                       _iface_of(p.rlab, server, first.frame),
                       [k.route_line(server, k.route(server, innermost(end.ip).dst))] + _hop_lines(w))
    got = innermost(end.ip)
    if (got.src, got.sport) == (p.target.ip, p.target.port):
        return None  # the network delivered both ways: why() reports what the client itself said
    return Finding("unknown", server, f"the reply reached {p.client} from {got.src}:{got.sport}, not from "
                   f"{p.target}, so the client drops it", "see the evidence", None, _hop_lines(w))


def _nothing_listening(p: Probe, server, got, refused) -> Finding:
    listening = p.k.listening(server)
    proto = "udp" if got.proto == "udp" else "tcp"
    ports = sorted({port for pr, _, port in listening if pr == proto})
    app, svc = p.rlab.app(server), p.svc
    kind = app.kind if app else ("echo" if proto == "udp" else "http")
    if svc and svc.real_server(server) and app and app.port != got.dport:
        fix = f"services.{svc.name}.real_servers.{server}.port: {app.port} (where its {app.kind} app listens)"
    elif app and app.port != got.dport:
        fix = (f"nodes.{server}.app: {{type: {kind}, port: {got.dport}}} (or send to port {app.port}, where it "
               "listens)")
    else:
        fix = f"nodes.{server}.app: {kind}" if got.dport == 80 else f"nodes.{server}.app: {{type: {kind}, port: " \
              f"{got.dport}}}"
    return Finding("nothing-listening", server, f"{server} got the request for {proto} port {got.dport}, but "
                   f"nothing listens there, so its kernel refused the {'connection' if proto == 'tcp' else 'datagram'}"
                   f" ({'RST' if refused.ip.proto == 'tcp' else 'ICMP port unreachable'})", fix, None,
                   [f"{refused.segment or refused.link}: {server} sent {refused.summary()}",
                    f"listening {proto} ports in {server} (ss -l): " + (", ".join(map(str, ports)) or "none")])


def _no_reply(p: Probe, server, last, got) -> Finding:
    k = p.k
    route = k.route(server, got.src)
    if not route["ok"] and reach.private(got.src) and not reach.private(got.dst):
        hops = [(h.sender, _iface_of(p.rlab, h.sender, h.frame)) for h in p.w.request]
        point = reach.snat_point(p.rlab, hops)
        if point:
            router, out = point
            leaving = next(h for h in p.w.request if h.sender == router)
            return Finding("no-snat", router, f"the private source {got.src} left {router} by {out} unchanged (no "
                           f"SNAT), and {server} has no route back to it", reach.snat_fix(p.rlab, router, out, got.src),
                           out, [f"{leaving.frame.segment}: {router} sent {leaving.frame.summary()} (source still private)",
                                 k.route_line(server, route)] + k.moved_lines(server, ["Ip.OutNoRoutes"]))
    return _stopped(p, server, None, got.src, got.dst, "reply")


def _vip_arp(p: Probe) -> Finding | None:
    """DR/TUN: a real server that answers ARP for the VIP takes requests past the director."""
    svc = p.svc
    vip = str(svc.vip)
    liars = [f for f in transmissions(p.frames) if f.arp and f.arp["op"] == 2 and f.arp["psrc"] == vip
             and f.sender != svc.director and svc.real_server(f.sender)]
    if not liars:
        return None
    rs = liars[0].sender
    evidence = [f"{f.segment}: {f.sender} sent {f.summary()}" for f in liars[:3]]
    asker = next((f for f in transmissions(p.frames) if f.arp and f.arp["op"] == 1 and f.arp["pdst"] == vip), None)
    if asker:
        evidence.append(_arp_probe(p, asker, vip))
    keys = ["net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"]
    evidence += [f"sysctl {key} = {v} in {rs}" for key, v in p.k.sysctls(rs, keys).items()]
    fix = f"services.{svc.name}.arp_tuning: true" if not svc.arp_tuning else \
        f"nodes.{rs}.sysctls: remove the arp_ignore/arp_announce overrides (nslab sets 1 and 2)"
    return Finding("dr-arp", rs, f"{rs} answered ARP for the VIP {vip}: the router may cache {rs}'s MAC and send "
                   f"clients straight to it, past the director {svc.director} and its scheduler (arp_ignore=1, "
                   "arp_announce=2 keep a real server quiet)", fix, _iface_of(p.rlab, rs, liars[0]), evidence)


def _arp_probe(p: Probe, asker, vip) -> str:
    from . import probe
    node = asker.sender
    return probe.arp_evidence(p.k.ns(node), node, _iface_of(p.rlab, node, asker), asker.arp["psrc"], vip,
                              p.net.node_of_mac)


def _ttl_lines(p: Probe) -> list[str]:
    """TTL-limited SYNs from the client: how far a packet gets, router by router."""
    from . import probe

    def who(ip):
        holders = p.rlab.holders(ip)
        return f"{ip} ({holders[0]})" if holders else ip
    src = innermost(p.w.request[0].ip).src
    return [probe.ttl_evidence(p.k.ns(p.client), p.client, src, p.target.ip, p.target.port,
                               min(8, len(p.w.request) + 1), who)]
