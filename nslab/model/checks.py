"""Cross-field rules (references, subnets, return paths) and the lookups they share with the planner."""

import difflib
from ipaddress import IPv4Address

from .schema import Forward, Interface, Node, Service, Topology


def segment_of(node: Node, iface: Interface):
    """The L2 segment an interface is on: a switch, or one direct link."""
    if iface.switch:
        return ("switch", iface.switch)
    if iface.peer:
        return ("link",) + tuple(sorted([f"{node.name}:{iface.name}", ":".join(iface.peer)]))
    return None


def shared_interfaces(topo: Topology, a: str, b: str):
    """(interface of a, interface of b) pairs that sit on one segment."""
    na, nb = topo.node(a), topo.node(b)
    return [(ia, ib) for ia in na.interfaces for ib in nb.interfaces
            if segment_of(na, ia) and segment_of(na, ia) == segment_of(nb, ib)]


def node_addresses(node: Node):
    return [a.ip for i in node.interfaces if i.name != "lo" for a in i.addresses]


def real_server_address(topo: Topology, svc: Service, rs) -> IPv4Address | None:
    """Where the director sends a real server's share: the override, else the address it
    has on a segment shared with the director (NAT, DR), else its first address (TUN)."""
    if rs.address:
        return rs.address
    if not topo.has_node(rs.node) or not topo.has_node(svc.director):
        return None
    for _, iface in shared_interfaces(topo, svc.director, rs.node):
        if iface.addresses:
            return iface.addresses[0].ip
    if svc.forward is Forward.TUN:
        addrs = node_addresses(topo.node(rs.node))
        return addrs[0] if addrs else None
    return None


def director_vip_interface(topo: Topology, svc: Service) -> str | None:
    """The director interface that answers ARP for the VIP: the one set by hand, else the one
    whose subnet holds the VIP, else (DR) the one on the real servers' segment."""
    if svc.vip_interface:
        return svc.vip_interface
    director = topo.node(svc.director)
    for iface in director.interfaces:
        if any(svc.vip in a.network for a in iface.addresses):
            return iface.name
    for rs in svc.real_servers:
        if topo.has_node(rs.node):
            for ia, _ in shared_interfaces(topo, svc.director, rs.node):
                return ia.name
    return director.interfaces[0].name if director.interfaces else None


def check(topo: Topology, d) -> None:
    """Report every cross-field problem into diagnostics d."""
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
            seg = segment_of(node, iface) or ("node", node.name, iface.name)
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
            if route.via and not any(route.via in n for n in connected):
                d.error(rpath, f"{route.via} is not on any of {node.name}'s subnets "
                        f"({', '.join(str(n) for n in connected) or 'none'})",
                        "a next hop must be directly reachable: use an address on one of the node's networks")
            if route.dev and route.dev not in names:
                d.error(rpath + ("dev",), f"{node.name} has no interface '{route.dev}'")
        for nat in node.nat:
            if nat.out not in names:
                d.error(npath + ("nat",), f"{node.name} has no interface '{nat.out}' to masquerade out of",
                        "one of: " + ", ".join(names))
    for svc in topo.services:
        _check_service(topo, svc, d)
    for i, e in enumerate(topo.expect):
        _check_expect(topo, e, ("expect", i), d)


def _check_expect(topo, e, path, d):
    known = ", ".join(n.name for n in topo.nodes)
    if not topo.has_node(e.frm):
        d.error(path + ("from",), f"node '{e.frm}' does not exist", f"one of: {known}")
    host, sep, port = e.to.rpartition(":")
    if not (topo.has_node(e.to) or any(s.name == e.to for s in topo.services) or (sep and port.isdigit())):
        d.error(path + ("to",), f"'{e.to}' is not a node, a service or IP:PORT")
    for key in ("path", "reply_path"):
        for j, node in enumerate(getattr(e, key)):
            if not topo.has_node(node):
                d.error(path + (key, j), f"node '{node}' does not exist", f"one of: {known}")


def _check_peer(topo, node, iface, ipath, d):
    pnode, pif = iface.peer
    if not topo.has_node(pnode):
        d.error(ipath + ("peer",), f"node '{pnode}' does not exist")
        return
    other = topo.node(pnode).interface(pif)
    if other is None:
        d.error(ipath + ("peer",), f"node '{pnode}' has no interface '{pif}'",
                f"add nodes.{pnode}.interfaces.{pif} with peer: {node.name}:{iface.name}")
    elif other.switch or (other.peer and other.peer != (node.name, iface.name)):
        d.error(ipath + ("peer",), f"{pnode}:{pif} is already connected elsewhere")


def _check_service(topo, svc, d):
    spath = ("services", svc.name)
    if not topo.has_node(svc.director):
        d.error(spath + ("director",), f"node '{svc.director}' does not exist")
        return
    director = topo.node(svc.director)
    if svc.vip_interface and not director.interface(svc.vip_interface):
        d.error(spath + ("vip_interface",), f"{svc.director} has no interface '{svc.vip_interface}'")
    if not svc.real_servers:
        d.error(spath + ("real_servers",), "a service needs at least one real server")
    for rs in svc.real_servers:
        rpath = spath + ("real_servers", rs.node)
        if not topo.has_node(rs.node):
            d.error(rpath, f"node '{rs.node}' does not exist")
            continue
        if rs.node == svc.director:
            d.error(rpath, "the director cannot be its own real server")
            continue
        shared = shared_interfaces(topo, svc.director, rs.node)
        if svc.forward is Forward.DR and not shared:
            d.error(rpath, f"DR needs {rs.node} on a switch shared with the director {svc.director}: "
                    "the director only rewrites the destination MAC, so the frame must reach the real "
                    "server without a router", f"put one of {rs.node}'s interfaces on the director's switch, "
                    "or use forward: tun")
            continue
        address = real_server_address(topo, svc, rs)
        if address is None:
            d.error(rpath, f"cannot tell which address of {rs.node} the director should use",
                    f"set services.{svc.name}.real_servers.{rs.node}.address")
            continue
        if svc.forward is Forward.NAT and svc.return_path_check:
            _check_nat_return(topo, svc, rs, shared, rpath, d)


def _check_nat_return(topo, svc, rs, shared, rpath, d):
    node = topo.node(rs.node)
    if not shared:
        d.error(rpath, f"NAT needs {rs.node} on a segment shared with the director {svc.director}",
                "connect them to one switch")
        return
    director_addrs = [a.ip for ia, _ in shared for a in ia.addresses]
    gw = node.gateway
    if gw not in director_addrs:
        told = f"sends replies to {gw} (its gateway)" if gw else "has no default route"
        fix = (f"set nodes.{rs.node}.gateway: {director_addrs[0]} (the director's address on their segment)"
               if director_addrs else f"give {svc.director} an address on {rs.node}'s segment")
        d.error(rpath, f"{rs.node} {told}, not through the director: in LVS NAT the director must see "
                "each reply to rewrite its source back to the VIP",
                f"{fix}; to break the lab on purpose, set services.{svc.name}.return_path_check: false")
