"""Addresses and routes inside a node's namespace."""

import errno
from ipaddress import IPv4Interface, IPv4Network

from . import netns

MAIN_TABLE = 254
# What the kernel answers when the thing a delete names is already gone: that is what undo wanted.
GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


def _netlink_error():
    from pyroute2.netlink.exceptions import NetlinkError  # late: importing pyroute2 costs ~0.2 s
    return NetlinkError


def _has_addr(s, ns, dev, cidr):
    iface = IPv4Interface(cidr)
    idx = s.index(ns, dev)
    if idx is None:
        return False
    return any(m.get("address") == str(iface.ip) and m["prefixlen"] == iface.network.prefixlen
               for m in s.ipr(ns).get_addr(index=idx, family=2))


class AddressExecutor:
    """Undo data: None when do() added the address (undo deletes it); "existed" when the kernel already
    had it (EEXIST: undo leaves it)."""

    @staticmethod
    def done(s, a):
        return _has_addr(s, a.ns, a.dev, a.cidr)

    @staticmethod
    def do(s, a):
        iface = IPv4Interface(a.cidr)
        try:
            s.ipr(a.ns).addr("add", index=s.index(a.ns, a.dev), address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
        except _netlink_error() as e:
            if e.code != errno.EEXIST:
                raise
            return "existed"
        return None

    @staticmethod
    def undo(s, a, undo_data):
        idx = s.index(a.ns, a.dev) if undo_data is None and netns.exists(a.ns) else None
        if idx is None:
            return
        iface = IPv4Interface(a.cidr)
        try:
            s.ipr(a.ns).addr("del", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except _netlink_error() as e:
            if e.code not in GONE:
                raise


def _prefix(to: str) -> dict:
    net = IPv4Network("0.0.0.0/0" if to == "default" else to)
    return {"dst": str(net.network_address), "dst_len": net.prefixlen, "table": MAIN_TABLE}


def _route_spec(s, ns, to, via, dev):
    spec = _prefix(to)
    if via:
        spec["gateway"] = via
    if dev:
        spec["oif"] = s.index(ns, dev)
    return spec


def _find_route(s, a):
    """The main table's route to a.to (a netlink message), or None."""
    want = _prefix(a.to)
    for r in s.ipr(a.ns).get_routes(family=2, table=MAIN_TABLE):
        if (r.get("dst") or "0.0.0.0") == want["dst"] and r["dst_len"] == want["dst_len"]:
            return r
    return None


class RouteExecutor:
    """The main table's route to a prefix; its next hop and device are changed in place. Undo data: None
    when do() added the route (undo deletes it), else the {"via", "dev"} it replaced (undo puts it back)."""

    @staticmethod
    def done(s, a):
        r = _find_route(s, a)
        return r is not None and r.get("gateway") == a.via and (not a.dev or r.get("oif") == s.index(a.ns, a.dev))

    @staticmethod
    def do(s, a):
        ipr = s.ipr(a.ns)
        try:
            ipr.route("add", **_route_spec(s, a.ns, a.to, a.via, a.dev))
            return None
        except _netlink_error() as e:
            if e.code != errno.EEXIST:
                raise
        # Another route to the same prefix: replace it (the topology is the truth), remembering it.
        r = _find_route(s, a)
        oif = r.get("oif") if r else None
        before = {"via": r.get("gateway") if r else None,
                  "dev": s.ipr(a.ns).get_links(oif)[0].get("ifname") if oif else None}
        ipr.route("replace", **_route_spec(s, a.ns, a.to, a.via, a.dev))
        return before

    @staticmethod
    def undo(s, a, before):
        if not netns.exists(a.ns):
            return
        ipr = s.ipr(a.ns)
        try:
            if before is None:
                ipr.route("del", **_prefix(a.to))
            else:
                ipr.route("replace", **_route_spec(s, a.ns, a.to, before["via"], before["dev"]))
        except _netlink_error() as e:
            if e.code not in GONE:
                raise


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
        except _netlink_error() as e:
            if e.code != errno.ENOENT:  # gone meanwhile: that is what we wanted
                raise
    return n
