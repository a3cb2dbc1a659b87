"""Cross-field rules (references, subnets, return paths), judged on the resolved lab's facts."""

import difflib
from ipaddress import IPv4Network

from .build import ip_port
from .resolve import ResolvedLab
from .schema import Forward


def check(lab: ResolvedLab, d) -> None:
    """Report every cross-field problem into diagnostics d."""
    topo = lab.topology
    addresses_seen = {}
    for node in topo.nodes:
        npath = ("nodes", node.name)
        for iface in node.interfaces:
            ipath = npath + ("interfaces", iface.name)
            if iface.switch and iface.switch not in topo.switches:
                close = difflib.get_close_matches(iface.switch, topo.switches, n=1)
                d.error(ipath + ("switch",), f"switch '{iface.switch}' is not in 'switches'",
                        f"did you mean '{close[0]}'?" if close else f"add it: switches: [{iface.switch}]")
            if iface.peer:
                _check_peer(topo, node, iface, ipath, d)
            seg = lab.segment_of_iface.get((node.name, iface.name)) or ("node", node.name, iface.name)
            for i, a in enumerate(iface.addresses):
                key = (seg, a.ip)
                if key in addresses_seen:
                    d.error(ipath + ("address",), f"{a.ip} is already used by {addresses_seen[key]} "
                            "on the same segment", "give each interface on a segment its own address")
                addresses_seen[key] = f"{node.name}:{iface.name}"
        connected = [a.network for i in node.interfaces for a in i.addresses]
        names = [i.name for i in node.interfaces]
        for route in node.routes:
            rpath = route.origin or npath
            if route.via:
                _check_next_hop(node, route.via, connected, rpath, d)
            if route.dev and route.dev not in names:
                d.error(rpath + ("dev",), f"{node.name} has no interface '{route.dev}'")
        for nat in node.nat:
            if nat.out not in names:
                d.error(npath + ("nat",), f"{node.name} has no interface '{nat.out}' to masquerade out of",
                        "one of: " + ", ".join(names))
        for iface in node.interfaces:
            if iface.parent is not None:
                trunk = node.interface(iface.parent)
                if trunk is None or not trunk.trunk or iface.vlans[0] not in trunk.vlans:
                    d.error(npath + ("interfaces", iface.name, "vlan"), f"{iface.name} is a sub-interface for VLAN "
                            f"{iface.vlans[0]} of {iface.parent}, which is no trunk carrying that VLAN",
                            f"make it one: nodes.{node.name}.interfaces.{iface.parent}: {{switch: SWITCH, vlan: "
                            f"[{iface.vlans[0]}, ...]}}")
        for forward in node.dnat:
            if forward.iface and forward.iface not in names:
                d.error(npath + ("nat",), f"{node.name} has no interface '{forward.iface}' for a port forward to "
                        "arrive on", "one of: " + ", ".join(names))
    for facts in lab.proxies:
        _check_proxy(topo, topo.node(facts.node), facts, d)
    vips = {}
    for svc in topo.services:
        _check_service(topo, lab.service(svc.name), d)
        vip = (svc.vip, svc.port, svc.protocol)
        if vip in vips:  # IPVS holds one virtual service per address, port and protocol: up's second add fails
            d.error(("services", svc.name, "vip"), f"service '{vips[vip]}' already has {svc.protocol} "
                    f"{svc.vip}:{svc.port}", "give each service its own VIP or port")
        vips.setdefault(vip, svc.name)
    for i, e in enumerate(topo.expect):
        _check_expect(topo, e, ("expect", i), d)


ZERONET = IPv4Network("0.0.0.0/8")
VRRP_MAX_ID = 255


def _check_next_hop(node, via, connected, rpath, d):
    """A next hop the kernel takes (else `Network is unreachable` or `Nexthop has invalid gateway` in `up`):
    on a subnet it makes a route for (none for a network whose address is in 0.0.0.0/8, as an address with
    prefix length 0 has), and not that subnet's broadcast address."""
    on = [n for n in connected if via in n]
    if not on:
        d.error(rpath, f"{via} is not on any of {node.name}'s subnets "
                f"({', '.join(str(n) for n in connected) or 'none'})",
                "a next hop must be directly reachable: use an address on one of the node's networks")
    elif all(n.network_address in ZERONET for n in on):
        d.error(rpath, f"{via} is only on {', '.join(str(n) for n in on)}, whose network address is in 0.0.0.0/8: "
                "the kernel makes no subnet route for it", "give the interface a longer prefix length, e.g. /24")
    elif all(n.prefixlen <= 30 and via == n.broadcast_address for n in on):
        d.error(rpath, f"{via} is the broadcast address of {', '.join(str(n) for n in on)}: the kernel refuses it "
                "as a next hop", "use the address of the router on that network")


def _check_proxy(topo, node, facts, d):
    path = ("nodes", node.name, "proxy")
    servers = node.proxy.servers
    unaddressed = {name for name, address, _ in facts.servers if address is None}
    for j, name in enumerate(servers):
        if not topo.has_node(name):
            d.error(path + ("servers", j), f"node '{name}' does not exist",
                    "one of: " + ", ".join(n.name for n in topo.nodes))
        elif not topo.node(name).app or topo.node(name).app.kind != "http":
            d.error(path + ("servers", j), f"{name} has no http app for the proxy to send to",
                    f"set nodes.{name}.app: http")
        elif name in unaddressed:  # haproxy refuses a server line without one, and up failed starting it
            d.error(path + ("servers", j), f"{name} has no address for the proxy to send to",
                    f"give one of nodes.{name}.interfaces an address")
    for prefix, name in node.proxy.paths:
        if name not in servers:
            d.error(path + ("paths", prefix), f"{name!r} is not one of the proxy's servers",
                    "one of: " + ", ".join(servers))
    if node.app and (node.app.port or 80) == node.proxy.port:
        d.error(path + ("port",), f"{node.name}'s app already listens on port {node.proxy.port}",
                "give the proxy or the app another port")


def _check_expect(topo, e, path, d):
    known = ", ".join(n.name for n in topo.nodes)
    if not topo.has_node(e.sender):
        d.error(path + ("from",), f"node '{e.sender}' does not exist", f"one of: {known}")
    if not (topo.has_node(e.to) or any(s.name == e.to for s in topo.services) or ip_port(e.to)):
        d.error(path + ("to",), f"{e.to!r} is not a node, a service or IP:PORT", "e.g. 10.0.0.100:80")
    for key in ("path", "reply_path"):
        for j, node in enumerate(getattr(e, key)):
            if not topo.has_node(node):
                d.error(path + (key, j), f"node '{node}' does not exist", f"one of: {known}")
    if e.share:
        _check_share(topo, e, path, d)


def _check_share(topo, e, path, d):
    svc = next((s for s in topo.services if s.name == e.to), None)
    if svc is None:
        d.error(path + ("share",), f"a share splits a service's connections, and '{e.to}' is no service",
                "set `to:` to a service name" + (f": one of {', '.join(s.name for s in topo.services)}"
                                                 if topo.services else ""))
        return
    servers = [r.node for r in svc.real_servers]
    for node, _ in e.share:
        if node not in servers:
            d.error(path + ("share", node), f"{node!r} is not a real server of service '{svc.name}'",
                    "one of: " + ", ".join(servers))
    if not any(w for _, w in e.share):
        d.error(path + ("share",), "every weight is 0: nothing could be expected to answer",
                "give at least one real server a weight above 0")


def _check_peer(topo, node, iface, ipath, d):
    pnode, pif = iface.peer
    if not topo.has_node(pnode):
        d.error(ipath + ("peer",), f"node '{pnode}' does not exist")
        return
    other = topo.node(pnode).interface(pif)
    if pif == "lo":  # lo takes addresses only: no link is made to it, and this interface would be left unmade
        d.error(ipath + ("peer",), f"{pnode}:lo is the loopback interface: a direct link can't end there",
                f"name another interface of {pnode}, with peer: {node.name}:{iface.name}")
    elif other is None:
        d.error(ipath + ("peer",), f"node '{pnode}' has no interface '{pif}'",
                f"add nodes.{pnode}.interfaces.{pif} with peer: {node.name}:{iface.name}")
    elif other.switch or (other.peer and other.peer != (node.name, iface.name)):
        d.error(ipath + ("peer",), f"{pnode}:{pif} is already connected elsewhere")


def _check_service(topo, svc, d):
    spath = ("services", svc.name)
    declared = next(s for s in topo.services if s.name == svc.name)
    if declared.directors:
        if not _check_pair(topo, svc, declared, spath, d):
            return
    elif not topo.has_node(svc.director):
        d.error(spath + ("director",), f"node '{svc.director}' does not exist")
        return
    director = topo.node(svc.director)
    _check_keepalived_keys(topo, svc, declared, spath, d)
    if declared.health and svc.protocol == "udp":  # keepalived's HTTP_GET and TCP_CHECK would fail every server
        d.error(spath + ("health",), "health checks (http, tcp) open TCP connections, and this service is udp",
                "remove health, or use protocol: tcp")
    if declared.vip_interface and not director.interface(declared.vip_interface):
        d.error(spath + ("vip_interface",), f"{svc.director} has no interface '{declared.vip_interface}'")
    if not svc.real_servers:
        d.error(spath + ("real_servers",), "a service needs at least one real server")
    for rs in svc.real_servers:
        rpath = spath + ("real_servers", rs.node)
        if not topo.has_node(rs.node):
            d.error(rpath, f"node '{rs.node}' does not exist")
            continue
        if rs.node in svc.directors:
            d.error(rpath, "a director cannot be its own real server")
            continue
        if svc.method is Forward.DR and not rs.shares_segment:
            d.error(rpath, f"DR needs {rs.node} on a switch shared with the director {svc.director}: "
                    "the director only rewrites the destination MAC, so the frame must reach the real "
                    "server without a router", f"put one of {rs.node}'s interfaces on the director's switch, "
                    "or use forward: tun")
            continue
        if rs.address is None:
            d.error(rpath, f"cannot tell which address of {rs.node} the director should use",
                    f"set services.{svc.name}.real_servers.{rs.node}.address")
            continue
        if svc.method is not Forward.NAT and rs.port != svc.port:
            # only NAT rewrites the packet: DR and TUN deliver it to the VIP's port, where nothing would listen
            d.error(rpath + ("port",), f"{svc.method.value.upper()} delivers the request unchanged, to port "
                    f"{svc.port}: {rs.node} can't serve it on port {rs.port}", "remove port, or use forward: nat")
        if svc.method is Forward.NAT and svc.return_path_check:
            _check_nat_return(topo, svc, rs, rpath, d)


def _check_nat_return(topo, svc, rs, rpath, d):
    node = topo.node(rs.node)
    if not rs.shares_segment:
        d.error(rpath, f"NAT needs {rs.node} on a segment shared with the director {svc.director}",
                "connect them to one switch")
        return
    director_addrs = list(rs.director_addresses)
    gw = node.gateway
    if gw not in director_addrs:
        told = f"sends replies to {gw} (its gateway)" if gw else "has no default route"
        fix = (f"set nodes.{rs.node}.gateway: {director_addrs[0]} (the director's address on their segment)"
               if director_addrs else f"give {svc.director} an address on {rs.node}'s segment")
        d.error(rpath, f"{rs.node} {told}, not through the director: in LVS NAT the director must see "
                "each reply to rewrite its source back to the VIP",
                f"{fix}; to break the lab on purpose, set services.{svc.name}.return_path_check: false")


def _check_pair(topo, svc, declared, spath, d) -> bool:
    """A VRRP pair: every director exists and sits on the VIP's segment. False when the service can't be
    judged further."""
    dpath = spath + ("directors",)
    missing = [(k, n) for k, n in enumerate(svc.directors) if not topo.has_node(n)]
    for k, name in missing:
        d.error(dpath + (k,), f"node '{name}' does not exist")
    if missing:
        return False
    # keepalived takes a virtual_router_id of 1-255 and a priority of 1-254; resolve.py numbers the pairs of a
    # lab from 1 and gives the master 150, each backup 10 less.
    if svc.vrrp[0].router_id > VRRP_MAX_ID:
        d.error(dpath, f"the lab's VRRP pair number {svc.vrrp[0].router_id}: VRRP numbers at most {VRRP_MAX_ID} "
                "virtual routers on a network", "give fewer services directors, or split the lab")
    if min(v.priority for v in svc.vrrp) < 1:
        d.error(dpath, f"{len(svc.directors)} directors: VRRP priorities (150, then 10 less for each backup) "
                "would fall below 1", f"keep at most {150 // 10} directors")
    if svc.method is Forward.NAT:
        d.error(dpath, "a VRRP pair of NAT directors would need a floating gateway for the real servers' replies, "
                "which nslab does not set up", "use forward: dr or tun, or keep one director "
                f"(director: {svc.director})")
    master = svc.vrrp[0]
    if master.interface is None or not topo.node(svc.director).interface(master.interface):
        return True  # the vip_interface rule below says so
    for k, v in enumerate(svc.vrrp[1:], 1):
        if v.interface is None:
            d.error(dpath + (k,), f"{v.director} has no interface on the segment of the VIP ({svc.director}:"
                    f"{master.interface}): VRRP adverts and the VIP move only within one L2 segment",
                    f"put one of {v.director}'s interfaces on the switch of {svc.director}:{master.interface}")
    return True


def _check_keepalived_keys(topo, svc, declared, spath, d):
    if declared.sorry_server:
        _check_sorry(topo, svc, spath + ("sorry_server",), d)
    if declared.health:
        return
    hint = "add health: {check: http}, or {check: tcp}"
    if declared.on_failure != "remove":
        d.error(spath + ("on_failure",), "says what a failed health check does, but the service has no "
                "health checks", hint)
    if declared.sorry_server:
        d.error(spath + ("sorry_server",), "answers while every real server is down, which only health checks "
                "can tell", hint)


def _check_sorry(topo, svc, path, d):
    sorry = svc.sorry
    if not topo.has_node(sorry.node):
        d.error(path, f"node '{sorry.node}' does not exist")
    elif sorry.node in svc.directors or svc.real_server(sorry.node):
        d.error(path, f"{sorry.node} is already a {'director' if sorry.node in svc.directors else 'real server'} "
                "of this service", "name a node of its own that answers while every real server is down")
    elif svc.method is Forward.DR and not sorry.shares_segment:
        d.error(path, f"DR needs the sorry server {sorry.node} on a switch shared with the director "
                f"{svc.director}", f"put one of {sorry.node}'s interfaces on the director's switch")
    elif sorry.address is None:
        d.error(path, f"cannot tell which address of {sorry.node} the director should use",
                f"give {sorry.node} an address on a segment it shares with {svc.director}")
    elif svc.method is Forward.NAT and svc.return_path_check:
        _check_nat_return(topo, svc, sorry, path, d)
