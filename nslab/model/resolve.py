"""Every fact derived from a topology, worked out once: segments and where to sniff them, app endpoints,
service addresses. The planner, the sniffers, the packet walk and target picking read this; none derives
a fact again.

resolve() never raises on a topology with broken references (a peer or real server that doesn't exist):
it leaves the fact out or None, and model/rules.py reports it. That is what lets the validation rules
read the same facts the planner uses.
"""

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from ..record import record
from . import names
from .schema import Forward, Health, Node, Topology

DEFAULT_PORTS = {"http": 80, "echo": 7}


@record
class End:
    """One node interface on a segment."""

    node: str
    iface: str
    addresses: tuple[IPv4Interface, ...]
    port: str | None  # its veth end in the fabric, a port of the segment's bridge; None on a direct cable
    mac: str | None = None  # set by hand, else the kernel's random one


@record
class Segment:
    """One L2 segment: a switch (a bridge in the fabric) or a direct cable between two interfaces."""

    name: str  # the switch's name, or "a:eth1=b:eth0" for a cable (ends sorted)
    kind: str  # switch | cable
    ends: tuple[End, ...]

    def end(self, node: str, iface: str | None = None) -> End | None:
        return next((e for e in self.ends if e.node == node and iface in (None, e.iface)), None)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(e.node for e in self.ends)


@record
class Tap:
    """Where to sniff a segment (or a TUN real server's tunl0): an interface in a namespace."""

    ns: str
    ifname: str
    label: str  # shown to users and used for pcap file names; never parsed
    segment: str | None  # the segment's name; None for tunl0 (no L2 segment)
    node: str  # the node whose end this is; directions are relative to it
    iface: str
    peer: str | None = None  # a cable's other node: the sender of frames coming to `node`
    l2: bool = True  # False for tunl0: frames are bare IP packets
    in_fabric: bool = True


@record
class AppEndpoint:
    """Where a node's built-in app listens and how to talk to it."""

    node: str
    kind: str  # http | echo
    address: IPv4Address | None  # the node's first address (what a trace to the node aims at)
    port: int
    protocol: str  # tcp | udp | both (echo only)
    serves: str | None = None  # the service whose port it took, if any
    reply_size: int | None = None  # http: bytes of each reply body; None: just the node's name

    @property
    def traffic(self) -> str:
        """The traffic generator's kind for this endpoint."""
        if self.kind == "http":
            return "http"
        return "udp" if self.protocol == "udp" else "tcp-echo"


@record
class RealServerFacts:
    node: str
    address: IPv4Address | None  # None: cannot be derived (model/rules.py says so)
    port: int
    weight: int
    shares_segment: bool  # on a segment with the director (DR needs it; NAT needs it)
    director_addresses: tuple[IPv4Address, ...] = ()  # the director's addresses on those shared segments


@record
class VrrpFacts:
    """One director of a VRRP pair: where it speaks VRRP and holds the VIP when it is master."""

    director: str
    interface: str | None  # its interface on the VIP's segment; None: it has none (model/rules.py says so)
    priority: int  # the master's is highest
    router_id: int  # VRRP's virtual_router_id, one per service in the lab


@record
class ServiceFacts:
    name: str
    director: str
    vip: IPv4Address
    port: int
    protocol: str
    scheduler: str
    method: Forward
    persistence: int | None
    vip_interface: str | None  # the director interface that answers ARP for the VIP
    vip_is_own: bool  # the VIP is already one of the director's declared addresses
    real_servers: tuple[RealServerFacts, ...]
    arp_tuning: bool
    rp_filter_relax: bool
    return_path_check: bool
    # keepalived: when set, it owns this service's IPVS table (nslab programs none of it) and, for a pair,
    # the VIP (VRRP moves it; nslab adds it nowhere)
    keepalived: bool = False
    directors: tuple[str, ...] = ()  # every director, the master first; (director,) for one
    vrrp: tuple["VrrpFacts", ...] = ()  # one per director of a pair, the master first; () for one director
    health: Health | None = None
    on_failure: str = "remove"
    sorry: RealServerFacts | None = None  # the sorry server: answers while every real server is down

    @property
    def backends(self) -> tuple[RealServerFacts, ...]:
        """The real servers and the sorry server: every node that may get a request for the VIP."""
        return self.real_servers + ((self.sorry,) if self.sorry else ())

    @property
    def target(self) -> str:
        return f"{self.vip}:{self.port}"

    def real_server(self, node: str) -> RealServerFacts | None:
        return next((r for r in self.real_servers if r.node == node), None)


@record
class PortForwardFacts:
    """A router's port forward (DNAT) as traffic sees it: where outsiders send, where it goes on to."""

    router: str
    address: IPv4Address | None  # the router's address on the interface it arrives on (else its first)
    port: int
    to_ip: IPv4Address
    to_port: int
    protocol: str
    server: str | None  # the node that holds to_ip

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"


@record
class ImpairFact:
    """An impaired interface and the neighbour verify measures it against (pings leave through it)."""

    node: str
    iface: str
    impair: object  # schema.Impair
    neighbour: str | None  # a node on the same segment, in the same subnet; None: nobody to ping
    neighbour_ip: IPv4Address | None
    back: object = None  # the neighbour's own Impair on that segment: the replies pass it
    neighbour_iface: str | None = None  # the neighbour's interface on the segment: where the line's bytes arrive


@record
class ProxyFacts:
    """haproxy in a node: where it listens and where each server's app is."""

    node: str
    address: IPv4Address | None  # the node's first address: where a client sends
    port: int
    servers: tuple[tuple[str, IPv4Address | None, int], ...]  # (node, address, app port)
    paths: tuple[tuple[str, str], ...]  # (prefix, node)

    @property
    def target(self) -> str:
        return f"{self.address}:{self.port}"


@record
class ResolvedLab:
    """A topology with every derived fact. `topology` stays reachable for what was declared as is."""

    topology: Topology
    name: str
    fabric_ns: str
    segments: tuple[Segment, ...]
    taps: tuple[Tap, ...]
    apps: tuple[AppEndpoint, ...]
    services: tuple[ServiceFacts, ...]
    segment_of_iface: dict  # (node, iface) -> segment name
    holders_of: dict  # ip (text) -> nodes that accept packets for it, whoever declares it first
    port_forwards: tuple[PortForwardFacts, ...] = ()
    impairs: tuple[ImpairFact, ...] = ()
    proxies: tuple[ProxyFacts, ...] = ()

    def ns(self, node: str) -> str:
        return names.node_ns(self.name, node)

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def segment_of(self, node: str, iface: str) -> Segment | None:
        name = self.segment_of_iface.get((node, iface))
        return self.segment(name) if name else None

    def app(self, node: str) -> AppEndpoint | None:
        return next((a for a in self.apps if a.node == node), None)

    def service(self, name: str) -> ServiceFacts | None:
        return next((s for s in self.services if s.name == name), None)

    def shared_segments(self, a: str, b: str) -> list[Segment]:
        """Segments on which both nodes have an interface."""
        return [s for s in self.segments if s.end(a) and s.end(b)]

    def address_on(self, node: str, segment: str) -> IPv4Address | None:
        """node's first address on a segment."""
        seg = self.segment(segment)
        end = next((e for e in seg.ends if e.node == node and e.addresses), None) if seg else None
        return end.addresses[0].ip if end else None

    def first_address(self, node: str) -> IPv4Address | None:
        if not self.topology.has_node(node):
            return None
        return next((a.ip for i in self.topology.node(node).interfaces if i.name != "lo" for a in i.addresses), None)

    def holders(self, ip: str) -> tuple[str, ...]:
        """Nodes that accept packets for ip: who declares it first, then (a VIP) the director, then the
        DR/TUN real servers."""
        return self.holders_of.get(str(ip), ())

    def role(self, node: str) -> str:
        """director | real server | router | host."""
        if any(node in s.directors for s in self.services):
            return "director"
        if any(s.real_server(node) for s in self.services):
            return "real server"
        if self.topology.has_node(node) and self.topology.node(node).forward:
            return "router"
        return "host"


def resolve(topo: Topology) -> ResolvedLab:
    """Derive every fact of a topology (no kernel, no errors: missing references give None)."""
    segments, seg_of = _segments(topo)
    pairs = [s.name for s in topo.services if s.directors]
    services = tuple(_service(topo, svc, seg_of, pairs.index(svc.name) + 1 if svc.directors else 0)
                     for svc in topo.services)
    holders = _holders(topo, services)
    return ResolvedLab(topology=topo, name=topo.name, fabric_ns=names.fabric_ns(topo.name),
                       segments=segments, taps=_taps(topo, segments, services), apps=_apps(topo),
                       services=services, segment_of_iface=seg_of, holders_of=holders,
                       port_forwards=_port_forwards(topo, holders),
                       impairs=_impairs(topo, {s.name: s for s in segments}, seg_of), proxies=_proxies(topo))


def _port_forwards(topo, holders):
    out = []
    for node in topo.nodes:
        for f in node.dnat:
            iface = node.interface(f.iface) if f.iface else None
            addrs = iface.addresses if iface else [a for i in node.interfaces if i.name != "lo" for a in i.addresses]
            out.append(PortForwardFacts(node.name, addrs[0].ip if addrs else None, f.port, f.to_ip, f.to_port,
                                        f.protocol, next(iter(holders.get(str(f.to_ip), ())), None)))
    return tuple(out)


def _proxies(topo):
    """Each proxy's servers at their app's address and port (missing ones left out: rules.py names them)."""
    apps = {a.node: a for a in _apps(topo)}
    out = []
    for node in topo.nodes:
        if node.proxy:
            addr = next((a.ip for i in node.interfaces if i.name != "lo" for a in i.addresses), None)
            servers = tuple((n, apps[n].address, apps[n].port) for n in node.proxy.servers if n in apps)
            out.append(ProxyFacts(node.name, addr, node.proxy.port, servers, node.proxy.paths))
    return tuple(out)


def _impairs(topo, seg_by_name, seg_of):
    out = []
    for node in topo.nodes:
        for iface in node.interfaces:
            if not iface.impair:
                continue
            seg = seg_by_name.get(seg_of.get((node.name, iface.name)))
            near = [(e, b.ip) for e in (seg.ends if seg else ()) if e.node != node.name
                    for b in e.addresses for a in iface.addresses if b.ip in a.network]
            if not near:
                out.append(ImpairFact(node.name, iface.name, iface.impair, None, None))
                continue
            end, ip = near[0]
            back = topo.node(end.node).interface(end.iface).impair
            out.append(ImpairFact(node.name, iface.name, iface.impair, end.node, ip, back, end.iface))
    return tuple(out)


def _holders(topo, services):
    """Whoever declares an address, and for a VIP the director and the DR/TUN real servers (which hold it
    on lo/tunl0, derived, not declared)."""
    out: dict[str, list] = {}

    def add(ip, node):
        held = out.setdefault(str(ip), [])
        if node not in held:
            held.append(node)
    for n in topo.nodes:
        for i in n.interfaces:
            for a in i.addresses:
                add(a.ip, n.name)
    for s in services:
        for d in s.directors:
            add(s.vip, d)
        if s.method is not Forward.NAT:
            for r in s.backends:
                add(s.vip, r.node)
    return {ip: tuple(nodes) for ip, nodes in out.items()}


def _segments(topo):
    switches: dict[str, list[End]] = {sw: [] for sw in topo.switches}
    cables: dict[str, list[End]] = {}
    seg_of = {}
    for node in topo.nodes:
        for iface in node.interfaces:
            if iface.switch:
                end = End(node.name, iface.name, iface.addresses, names.bridge_port(node.name, iface.name), iface.mac)
                switches.setdefault(iface.switch, []).append(end)
                seg_of[(node.name, iface.name)] = iface.switch
            elif iface.peer:
                label = "=".join(sorted([f"{node.name}:{iface.name}", ":".join(iface.peer)]))
                cables.setdefault(label, []).append(End(node.name, iface.name, iface.addresses, None, iface.mac))
                seg_of[(node.name, iface.name)] = label
        for iface in node.interfaces:  # an 802.1Q sub-interface is on its trunk's switch, through the trunk's port
            trunk = node.interface(iface.parent) if iface.parent else None
            if trunk and trunk.switch:
                switches.setdefault(trunk.switch, []).append(End(node.name, iface.name, iface.addresses, None))
                seg_of[(node.name, iface.name)] = trunk.switch
    out = [Segment(name, "switch", tuple(ends)) for name, ends in switches.items()]
    out += [Segment(name, "cable", tuple(ends)) for name, ends in cables.items()]
    return tuple(out), seg_of


def _taps(topo, segments, services):
    """Each switch port in the fabric; one end of each cable (both see the same frames); tunl0 in every
    TUN real server (the decapsulated packet exists only there)."""
    lab, fabric = topo.name, names.fabric_ns(topo.name)
    taps = []
    for seg in segments:
        if seg.kind == "switch":
            taps += [Tap(fabric, e.port, f"{seg.name}:{e.node}-{e.iface}", seg.name, e.node, e.iface)
                     for e in seg.ends if e.port]
        elif seg.ends:
            e = seg.ends[0]
            peer = next((o.node for o in seg.ends[1:]), None)
            taps.append(Tap(names.node_ns(lab, e.node), e.iface, seg.name, seg.name, e.node, e.iface, peer=peer,
                            in_fabric=False))
    for svc in services:
        if svc.method is Forward.TUN:
            taps += [Tap(names.node_ns(lab, r.node), "tunl0", f"{r.node}:tunl0", None, r.node, "tunl0", l2=False,
                         in_fabric=False) for r in svc.backends]
    return tuple(taps)


def _apps(topo):
    out = []
    for node in topo.nodes:
        if not node.app:
            continue
        port, protocol, serves = _app_port(topo, node)
        addr = next((a.ip for i in node.interfaces if i.name != "lo" for a in i.addresses), None)
        out.append(AppEndpoint(node.name, node.app.kind, addr, port,
                               protocol if node.app.kind == "echo" else "tcp", serves, node.app.reply_size))
    return tuple(out)


def _app_port(topo, node: Node):
    """Set by hand, else the port of the service it serves, else the app's usual one."""
    if node.app.port:
        return node.app.port, node.app.protocol, None
    for svc in topo.services:
        for rs in svc.real_servers:
            if rs.node == node.name:
                return rs.port or svc.port, svc.protocol, svc.name
        if svc.sorry_server == node.name:
            return svc.port, svc.protocol, svc.name
    return DEFAULT_PORTS[node.app.kind], node.app.protocol, None


def _service(topo, svc, seg_of, router_id) -> ServiceFacts:
    director = topo.node(svc.director) if topo.has_node(svc.director) else None

    def shared(rs_node):
        """(director iface, rs iface) pairs on one segment, in declaration order."""
        if director is None or not topo.has_node(rs_node):
            return []
        other = topo.node(rs_node)
        return [(ia, ib) for ia in director.interfaces for ib in other.interfaces
                if seg_of.get((director.name, ia.name)) is not None
                and seg_of.get((director.name, ia.name)) == seg_of.get((rs_node, ib.name))]

    real_servers = []
    for rs in svc.real_servers:
        pairs = shared(rs.node)
        real_servers.append(RealServerFacts(rs.node, _rs_address(topo, svc, rs.node, rs.address, pairs),
                                            rs.port or svc.port,
                                            rs.weight, bool(pairs), tuple(a.ip for ia, _ in pairs for a in ia.addresses)))
    sorry = None
    if svc.sorry_server:
        pairs = shared(svc.sorry_server)
        sorry = RealServerFacts(svc.sorry_server, _rs_address(topo, svc, svc.sorry_server, None, pairs), svc.port, 1,
                                bool(pairs), tuple(a.ip for ia, _ in pairs for a in ia.addresses))
    own = [a.ip for i in director.interfaces if i.name != "lo" for a in i.addresses] if director else []
    vip_interface = _vip_interface(svc, director, [shared(r.node) for r in svc.real_servers])
    return ServiceFacts(
        name=svc.name, director=svc.director, vip=svc.vip, port=svc.port, protocol=svc.protocol,
        scheduler=svc.scheduler, method=svc.forward, persistence=svc.persistence,
        vip_interface=vip_interface, vip_is_own=svc.vip in own, real_servers=tuple(real_servers),
        arp_tuning=svc.arp_tuning, rp_filter_relax=svc.rp_filter_relax, return_path_check=svc.return_path_check,
        keepalived=svc.keepalived, directors=svc.directors or (svc.director,),
        vrrp=_vrrp(topo, svc, seg_of, vip_interface, router_id), health=svc.health, on_failure=svc.on_failure,
        sorry=sorry)


def _vrrp(topo, svc, seg_of, vip_interface, router_id):
    """Each director of a pair on the VIP's segment (the master's VIP interface's), the master's priority
    highest: VRRP adverts and the VIP's gratuitous ARP go out there."""
    segment = seg_of.get((svc.director, vip_interface))
    out = []
    for k, name in enumerate(svc.directors):
        node = topo.node(name) if topo.has_node(name) else None
        iface = vip_interface if k == 0 else next(
            (i.name for i in (node.interfaces if node else ()) if segment and seg_of.get((name, i.name)) == segment),
            None)
        out.append(VrrpFacts(name, iface, 150 - 10 * k, router_id))
    return tuple(out)


def _rs_address(topo, svc, node, address, pairs):
    """The override, else the address it has on a segment shared with the director (NAT, DR), else its
    first address (TUN: the director reaches it by routing)."""
    if address:
        return address
    for _, iface in pairs:
        if iface.addresses:
            return iface.addresses[0].ip
    if svc.forward is Forward.TUN and topo.has_node(node):
        return next((a.ip for i in topo.node(node).interfaces if i.name != "lo" for a in i.addresses), None)
    return None


def _vip_interface(svc, director, shared_pairs):
    """Set by hand, else the director interface whose subnet holds the VIP, else the one on the first real
    server's segment, else its first interface."""
    if svc.vip_interface:
        return svc.vip_interface
    if director is None:
        return None
    for iface in director.interfaces:
        if any(svc.vip in a.network for a in iface.addresses):
            return iface.name
    for pairs in shared_pairs:
        for ia, _ in pairs:
            return ia.name
    return director.interfaces[0].name if director.interfaces else None


@record
class RouteFact:
    """One entry of a node's routing table as the lab declares it: a connected network or a route."""

    node: str
    to: IPv4Network
    via: IPv4Address | None  # None: on-link (a connected network, or a `dev:` route)
    iface: str | None  # the interface it leaves by; None when no interface can reach `via`
    origin: tuple  # the YAML path that makes it (nodes.X.interfaces.eth0.address, nodes.X.gateway, ...)
    connected: bool = False


def routes_of(lab: ResolvedLab, node: str) -> tuple[RouteFact, ...]:
    """node's IPv4 routing table as declared: a connected network per address (lo left out), then its
    routes (`gateway:` is the default route), each with the interface it leaves by."""
    if not lab.topology.has_node(node):
        return ()
    n = lab.topology.node(node)
    out = []
    for i in n.interfaces:
        if i.name == "lo":
            continue
        for k, a in enumerate(i.addresses):
            key = ("address",) if len(i.addresses) == 1 else ("addresses", k)
            out.append(RouteFact(node, a.network, None, i.name, ("nodes", node, "interfaces", i.name) + key, True))
    for r in n.routes:
        iface = r.dev or next((i.name for i in n.interfaces for a in i.addresses
                               if i.name != "lo" and r.via in a.network), None)
        out.append(RouteFact(node, r.to, r.via, iface, tuple(r.origin) or ("nodes", node, "routes")))
    return tuple(out)


def forwards(lab: ResolvedLab, node: str) -> bool:
    """Whether node routes packets between its interfaces (net.ipv4.ip_forward): set by hand in sysctls,
    else `forward:`, else derived (an LVS NAT director forwards)."""
    if not lab.topology.has_node(node):
        return False
    n = lab.topology.node(node)
    by_hand = dict(n.sysctls).get("net.ipv4.ip_forward")
    if by_hand is not None:
        return by_hand.strip() != "0"
    if n.forward is not None:
        return n.forward
    return any(s.director == node and s.method is Forward.NAT for s in lab.services)
