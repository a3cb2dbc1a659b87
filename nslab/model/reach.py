"""A static walk through a resolved lab's routing tables (longest-prefix match over each node's connected
networks and routes): where a packet would go, where it would stop, and the warnings `validate` prints.

Pure: reads only the resolved lab (routes_of, forwards, holders, segments), never the kernel. It knows what
a lab declares, not what the kernel does with it, so it warns; `nslab why` proves from packets.
"""

from ipaddress import IPv4Address, IPv4Network, ip_address

from ..record import record
from .diag import dotted
from .resolve import ResolvedLab, RouteFact, forwards, routes_of
from .schema import Forward

MAX_STEPS = 32
ENDS = {"delivered": "delivered", "no-route": "no route onward", "no-neighbour": "a next hop nobody has",
        "not-forwarding": "forwarding off", "loop": "a loop"}


@record
class Step:
    """One node handing the packet on: out of `iface` to next hop `via`, taken by node `to`."""

    node: str
    iface: str | None
    via: IPv4Address
    to: str | None  # None: nobody on the segment holds `via` (its ARP would go unanswered)
    route: RouteFact
    src: IPv4Address  # the source as it leaves `node` (after any SNAT there)


@record
class Path:
    """A packet's static walk from `sender` to `dst`: the steps, and how it ended at node `at`."""

    sender: str
    dst: IPv4Address
    src: IPv4Address | None  # the source the sender picks
    steps: tuple[Step, ...]
    end: str  # delivered | no-route | no-neighbour | not-forwarding | loop
    at: str  # the node holding it when the walk ended

    @property
    def delivered(self) -> bool:
        return self.end == "delivered"

    @property
    def nodes(self) -> list[str]:
        return [self.sender] + [s.to for s in self.steps if s.to]

    @property
    def final_src(self) -> IPv4Address | None:
        """The source as it arrives (SNAT on the way rewrites it)."""
        return self.steps[-1].src if self.steps else self.src

    @property
    def snat_at(self) -> str | None:
        """The node that rewrote the source, if one did."""
        return next((s.node for s in self.steps if s.src != self.src), None)


def lookup(lab: ResolvedLab, node: str, dst) -> RouteFact | None:
    """node's route to dst: the longest matching prefix; connected networks win a tie, then declaration order."""
    dst = ip_address(str(dst))
    best = None
    for r in routes_of(lab, node):
        if dst in r.to and (best is None or r.to.prefixlen > best.to.prefixlen):
            best = r
    return best


def owner_on_segment(lab: ResolvedLab, node: str, iface: str | None, ip) -> str | None:
    """The node that answers ARP for ip on the segment behind node:iface: whoever declares ip there, or a
    director whose VIP interface is there (real servers keep quiet about a VIP)."""
    seg = lab.segment_of(node, iface) if iface else None
    if seg is None:
        return None
    ip = ip_address(str(ip))
    for e in seg.ends:
        if e.node != node and any(a.ip == ip for a in e.addresses):
            return e.node
    for s in lab.services:
        if s.vip == ip and s.director != node and s.vip_interface and lab.segment_of(s.director, s.vip_interface) is seg:
            return s.director
    return None


def source_for(lab: ResolvedLab, node: str, route: RouteFact, via) -> IPv4Address | None:
    """The address node picks as source for a packet leaving by route (as the kernel does: an address of
    the out interface, the one whose network holds the next hop first)."""
    n = lab.topology.node(node)
    iface = n.interface(route.iface) if route.iface else None
    addrs = [a for a in iface.addresses] if iface else []
    if not addrs:
        addrs = [a for i in n.interfaces if i.name != "lo" for a in i.addresses]
    hit = next((a.ip for a in addrs if via in a.network), None)
    return hit or (addrs[0].ip if addrs else None)


def _snat(lab, node, iface, src):
    """The source after node's masquerade rules for packets leaving iface."""
    n = lab.topology.node(node)
    for nat in n.nat:
        if nat.out == iface and (nat.source is None or src in nat.source):
            out = n.interface(iface)
            if out and out.addresses:
                return out.addresses[0].ip
    return src


def walk(lab: ResolvedLab, sender: str, dst, src=None) -> Path:
    """Where a packet from sender to dst goes by the declared routes; src defaults to what the sender picks."""
    dst = ip_address(str(dst))
    node, steps, seen = sender, [], {sender}
    first_src = src
    while True:
        if node in lab.holders(dst):
            return Path(sender, dst, first_src, tuple(steps), "delivered", node)
        if node != sender and not forwards(lab, node):
            return Path(sender, dst, first_src, tuple(steps), "not-forwarding", node)
        route = lookup(lab, node, dst)
        if route is None or route.iface is None:
            return Path(sender, dst, first_src, tuple(steps), "no-route", node)
        via = route.via or dst
        if src is None:
            src = first_src = source_for(lab, node, route, via)
        src = _snat(lab, node, route.iface, src) if src is not None else src
        to = owner_on_segment(lab, node, route.iface, via)
        steps.append(Step(node, route.iface, via, to, route, src))
        if to is None:
            return Path(sender, dst, first_src, tuple(steps), "no-neighbour", node)
        if to in seen or len(steps) >= MAX_STEPS:
            return Path(sender, dst, first_src, tuple(steps), "loop", to)
        seen.add(to)
        node = to


def reply_walk(lab: ResolvedLab, server: str, request: Path, src=None) -> Path:
    """The reply to a delivered request: from server back to the source the request arrived with (to the
    original source when that lands on the node that rewrote it)."""
    back = walk(lab, server, request.final_src, src)
    snat = request.snat_at
    if back.delivered and snat and back.at == snat and request.src is not None:
        onward = walk(lab, snat, request.src)
        return Path(server, request.src, back.src, back.steps + onward.steps, onward.end, onward.at)
    return back


def network_of(lab: ResolvedLab, ip) -> IPv4Network | None:
    """The connected network an address sits in, as its holder declares it (a /32 for lone addresses)."""
    ip = ip_address(str(ip))
    for node in lab.holders(ip):
        for r in routes_of(lab, node):
            if r.connected and ip in r.to:
                return r.to
    return IPv4Network(f"{ip}/32")


def next_hops(lab: ResolvedLab, node: str, dst) -> list[tuple[str, str, IPv4Address]]:
    """(iface, neighbour, its address) of node's neighbours that would get a packet to dst: they hold it,
    or forward and reach it by their own routes. What a fix for a missing or wrong route points at."""
    dst = ip_address(str(dst))
    out = []
    n = lab.topology.node(node)
    for i in n.interfaces:
        seg = lab.segment_of(node, i.name)
        for e in seg.ends if seg else ():
            # a next hop must be on one of node's own networks there
            via = next((a.ip for a in e.addresses if any(a.ip in m.network for m in i.addresses)), None)
            if e.node == node or via is None:
                continue
            if e.node in lab.holders(dst):
                ok = True
            else:
                onward = walk(lab, e.node, dst) if forwards(lab, e.node) else None
                ok = bool(onward and onward.delivered and node not in onward.nodes)
            if ok:
                out.append((i.name, e.node, via))
    return out


def narrow_netmask(lab: ResolvedLab, node: str, dst):
    """(iface, node's address there, the holder's end, segment) when dst's holder shares a segment with
    node but node's netmask on it leaves dst out; else None."""
    d = ip_address(str(dst))
    for i in lab.topology.node(node).interfaces:
        seg = lab.segment_of(node, i.name)
        holder = next((e for e in (seg.ends if seg else ()) if e.node != node and any(a.ip == d for a in e.addresses)),
                      None)
        if holder and i.addresses and not any(d in a.network for a in i.addresses):
            return i.name, i.addresses[0], holder, seg
    return None


def wider_prefix(mine, theirs) -> int:
    """The prefix length that puts both addresses in one network: the neighbour's own if it holds mine,
    else the longest that covers both."""
    if mine.ip in theirs.network:
        return theirs.network.prefixlen
    return next(n for n in range(mine.network.prefixlen - 1, -1, -1)
                if theirs.ip in IPv4Network(f"{mine.ip}/{n}", strict=False))


def route_fix(lab: ResolvedLab, node: str, dst, prefer: str | None = None) -> str:
    """The YAML that gives node a way to dst: a gateway for a host without one, else a route; through
    `prefer` (a neighbour) when it can carry it."""
    hops = next_hops(lab, node, dst)
    hops.sort(key=lambda h: h[1] != prefer)
    net = network_of(lab, dst)
    if not hops:
        return f"nodes.{node}.routes: add {{to: {net}, via: <a router that reaches it>}}"
    iface, via_node, via = hops[0]
    if not forwards(lab, node) and not any(r.to.prefixlen == 0 for r in routes_of(lab, node)):
        return f"nodes.{node}.gateway: {via} ({via_node})"
    return f"nodes.{node}.routes: add {{to: {net}, via: {via}}} ({via_node})"


PRIVATE = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))


def private(ip) -> bool:
    """RFC 1918 (and carrier-grade NAT) space: addresses nobody routes back across the internet."""
    ip = ip_address(str(ip))
    return any(ip in n for n in PRIVATE)


def snat_point(lab: ResolvedLab, hops) -> tuple[str, str] | None:
    """(router, out interface) where a private source should have been masqueraded: the first forwarding
    node on the way that puts the packet on a network of public addresses. hops: (sender, iface) pairs."""
    for node, iface in hops:
        n = lab.topology.node(node) if lab.topology.has_node(node) else None
        out = n.interface(iface) if n and iface else None
        if out and out.addresses and forwards(lab, node) and not any(private(a.ip) for a in out.addresses):
            return node, iface
    return None


def snat_fix(lab: ResolvedLab, router: str, iface: str, src) -> str:
    return f"nodes.{router}.nat: [{{masquerade: {iface}, source: {network_of(lab, src)}}}]"


def _stop_warning(lab, p: Path, what: str) -> tuple | None:
    """(key, text) for a walk that stopped somewhere a fix can name; None otherwise."""
    if p.end == "not-forwarding":
        prev = p.steps[-1].node if p.steps else p.sender
        return (("forward", p.at), f"nodes.{p.at}: {what} passes {p.at} ({prev} sends it there), but {p.at} "
                f"does not forward (net.ipv4.ip_forward=0): set nodes.{p.at}.forward: true")
    if p.end == "no-neighbour":
        s = p.steps[-1]
        seg = lab.segment_of(s.node, s.iface)
        where = seg.name if seg else s.iface
        if s.route.via is None:
            holder = next(iter(lab.holders(p.dst)), None)
            held = f" ({holder} has it, elsewhere)" if holder else ""
            return (("netmask", s.node, str(p.dst)), f"{dotted(s.route.origin)}: {s.node}'s netmask puts {p.dst} on "
                    f"its own segment {where}, but nobody there has it{held}: {what} would wait for an ARP "
                    "answer that never comes")
        return (("next-hop", s.node, str(s.via)), f"{dotted(s.route.origin)}: {s.node}'s next hop {s.via} (for "
                f"{what}) is on {where}, but nobody there has that address: ARP would go unanswered")
    if p.end == "loop":
        return ("loop", str(p.dst)), f"{what} loops: " + " -> ".join(p.nodes)
    return None


def _targets(lab):
    """(address, what) of everything a lab means to be reached: apps (a NAT real server's only through
    its service) and service VIPs."""
    hidden = {r.node for s in lab.services if s.method is Forward.NAT for r in s.real_servers}
    out = [(a.address, f"{a.node}'s {a.kind} app") for a in lab.apps if a.address and a.node not in hidden]
    out += [(s.vip, f"service {s.name}") for s in lab.services]
    return out


def warnings(lab: ResolvedLab) -> list[str]:
    """What the declared routes say will break, before anything is built: a router on a path with
    forwarding off, a node with no route back to a network that sends to it, a NAT real server whose
    replies bypass the director, a next hop nobody holds. Each names the YAML path to change; one warning
    per cause and node."""
    found = {}
    for sender in lab.topology.nodes:
        if not any(a for i in sender.interfaces if i.name != "lo" for a in i.addresses):
            continue
        for dst, what in _targets(lab):
            if sender.name in lab.holders(dst):
                continue
            p = walk(lab, sender.name, dst)
            if not p.delivered:  # no route on the way: a lab may keep networks apart on purpose
                hit = _stop_warning(lab, p, f"traffic from {sender.name} to {what} ({dst})")
                if hit:
                    found.setdefault(*hit)
                continue
            svc = next((s for s in lab.services if s.vip == dst and s.director == p.at), None)
            servers = [(r.node, svc) for r in svc.real_servers if r.address] if svc else [(p.at, None)]
            for server, s in servers:
                if server != sender.name and not (s and s.real_server(sender.name)):
                    hit = _reply_warning(lab, p, server, s, what)
                    if hit:
                        found.setdefault(*hit)
    return list(found.values())


def _reply_warning(lab, p: Path, server: str, svc, what: str) -> tuple | None:
    src = svc.vip if svc and svc.method is not Forward.NAT else None
    back = reply_walk(lab, server, p, src)
    client = f"{p.sender}'s network {network_of(lab, p.final_src)}"
    if svc and svc.method is Forward.NAT and svc.director not in back.nodes:
        rs = svc.real_server(server)
        via = back.steps[0].to if back.steps else None
        fix = f"nodes.{server}.gateway: {rs.director_addresses[0]}" if rs and rs.director_addresses else \
            f"route {server}'s replies through {svc.director}"
        return (("nat-bypass", server), f"nodes.{server}: LVS NAT real server of {svc.name} sends its replies to "
                f"{client} {'through ' + via if via else 'nowhere'}, bypassing the director {svc.director}, so "
                f"nobody rewrites their source back to the VIP: {fix}")
    if back.delivered:
        return None
    came_from = p.steps[-1].node if p.steps else None
    if back.steps and back.steps[0].to and came_from and back.steps[0].to != came_from:
        return (("reply-path", server), f"nodes.{server}: replies to {client} leave {server} by "
                f"{back.steps[0].iface} to {back.steps[0].to}, not back to {came_from} where {what}'s requests "
                f"come from, and that path ends at {back.at} ({ENDS[back.end]}): "
                f"{route_fix(lab, server, back.dst, prefer=came_from)}")
    narrow = narrow_netmask(lab, back.at, back.dst) if back.end == "no-route" else None
    if narrow:
        iface, mine, holder, seg = narrow
        theirs = next(a for a in holder.addresses if a.ip == back.dst)
        conn = next(r for r in routes_of(lab, back.at) if r.connected and r.iface == iface)
        return (("netmask", back.at), f"{dotted(conn.origin)}: {back.at}'s netmask /{mine.network.prefixlen} leaves "
                f"{back.dst} ({holder.node}, on the same segment {seg.name}) out of its network, so {back.at} has "
                f"no route for the replies to it: {mine.ip}/{wider_prefix(mine, theirs)}")
    if back.end == "no-route":
        text = (f"nodes.{back.at}: no route back to {client}, which sends to {what} through "
                f"{' -> '.join(p.nodes)}: {route_fix(lab, back.at, back.dst)}")
        snat = snat_point(lab, [(s.node, s.iface) for s in p.steps]) if private(p.final_src) else None
        if snat and not private(p.dst):
            text += (f"; or, as the internet would need, SNAT the private source where it leaves {snat[0]}: "
                     + snat_fix(lab, snat[0], snat[1], p.final_src))
        return ("route-back", back.at), text
    return _stop_warning(lab, back, f"the reply from {server} to {p.sender}")
