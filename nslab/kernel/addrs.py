"""Addresses and routes inside a node's namespace."""

import errno
from ipaddress import IPv4Interface, IPv4Network

from pyroute2.netlink.exceptions import NetlinkError


def _has_addr(s, ns, dev, cidr):
    iface = IPv4Interface(cidr)
    idx = s.index(ns, dev)
    if idx is None:
        return False
    return any(m.get("address") == str(iface.ip) and m["prefixlen"] == iface.network.prefixlen
               for m in s.ipr(ns).get_addr(index=idx, family=2))


class AddAddress:
    @staticmethod
    def done(s, a):
        return _has_addr(s, a.ns, a.dev, a.cidr)

    @staticmethod
    def do(s, a):
        iface = IPv4Interface(a.cidr)
        s.ipr(a.ns).addr("add", index=s.index(a.ns, a.dev), address=str(iface.ip),
                         prefixlen=iface.network.prefixlen)

    @staticmethod
    def undo(s, a):
        iface = IPv4Interface(a.cidr)
        s.ipr(a.ns).addr("del", index=s.index(a.ns, a.dev), address=str(iface.ip),
                         prefixlen=iface.network.prefixlen)


def _route_spec(s, a):
    net = IPv4Network("0.0.0.0/0" if a.to == "default" else a.to)
    spec = {"dst": str(net.network_address), "dst_len": net.prefixlen}
    if a.via:
        spec["gateway"] = a.via
    if a.dev:
        spec["oif"] = s.index(a.ns, a.dev)
    return spec


class AddRoute:
    @staticmethod
    def done(s, a):
        spec = _route_spec(s, a)
        for r in s.ipr(a.ns).get_routes(family=2, table=254):
            if ((r.get("dst") or "0.0.0.0") == spec["dst"] and r["dst_len"] == spec["dst_len"]
                    and r.get("gateway") == spec.get("gateway")
                    and ("oif" not in spec or r.get("oif") == spec["oif"])):
                return True
        return False

    @staticmethod
    def do(s, a):
        try:
            s.ipr(a.ns).route("add", **_route_spec(s, a))
        except NetlinkError as e:
            if e.code == errno.EEXIST:
                # Another route to the same prefix: replace it, the topology is the truth.
                s.ipr(a.ns).route("replace", **_route_spec(s, a))
            else:
                raise

    @staticmethod
    def undo(s, a):
        s.ipr(a.ns).route("del", **_route_spec(s, a))


NUD_PERMANENT, NUD_NOARP = 0x80, 0x40


def flush_neighbours(s, ns: str) -> int:
    """Forget every learned IPv4 neighbour in ns, so the next packet to each needs ARP again."""
    ipr, n = s.ipr(ns), 0
    for entry in ipr.get_neighbours(family=2):
        if entry["state"] & (NUD_PERMANENT | NUD_NOARP) or not entry.get("dst"):
            continue
        try:
            ipr.neigh("del", dst=entry.get("dst"), ifindex=entry["ifindex"])
            n += 1
        except NetlinkError as e:
            if e.code != errno.ENOENT:  # gone meanwhile: that is what we wanted
                raise
    return n
