"""Faults on demand, the kernel side: a node's link taken down and brought back with the routes the kernel
dropped along with it."""

import errno

from . import netns
from .addrs import _netlink_error

LOCAL_TABLE = 255  # the kernel's own local/broadcast routes: they come back with the addresses
RTPROT_KERNEL = 2  # connected routes: they come back when the link is up again


def prepare() -> None:
    """Import what a fail or heal uses now, so that one injected during a load happens on time (an import
    costs seconds in an emulated VM)."""
    from pyroute2 import IPRoute  # noqa: F401
    from . import apply, executors, session  # noqa: F401


def is_up(s, ns: str, ifname: str) -> bool | None:
    """Whether the interface is administratively up; None when ns has no such interface."""
    idx = s.index(ns, ifname)
    if idx is None:
        return None
    return bool(s.ipr(ns).get_links(idx)[0]["flags"] & 1)


def _routes_via(s, ns: str, idx: int) -> list[dict]:
    """The routes of ns leaving through interface idx that the kernel drops when it goes down and does not
    put back when it comes up: everything but the connected and local ones (ip route's `proto kernel`)."""
    out = []
    for r in s.ipr(ns).get_routes(family=2):
        table = r.get("table") or r["table"]
        if r.get("oif") != idx or table == LOCAL_TABLE or r["proto"] == RTPROT_KERNEL:
            continue
        out.append({"table": table, "dst": r.get("dst") or "0.0.0.0", "dst_len": r["dst_len"],
                    "gateway": r.get("gateway"), "priority": r.get("priority"), "prefsrc": r.get("prefsrc"),
                    "proto": r["proto"], "scope": r["scope"], "type": r["type"]})
    return out


def link_down(s, ns: str, ifname: str) -> list[dict]:
    """Take the interface down (its veth peer loses carrier: the cable is pulled at this end); return the
    routes through it that the kernel drops with it, for link_up."""
    idx = s.index(ns, ifname)
    routes = _routes_via(s, ns, idx)
    s.ipr(ns).link("set", index=idx, state="down")
    return routes


def link_up(s, ns: str, ifname: str, routes: list[dict]) -> list[dict]:
    """Bring the interface up and put back those of `routes` the kernel dropped; return the ones put back.
    A no-op on a namespace or interface that is gone."""
    idx = s.index(ns, ifname) if netns.exists(ns) else None
    if idx is None:
        return []
    ipr = s.ipr(ns)
    ipr.link("set", index=idx, state="up")
    restored = []
    for r in routes:
        spec = {k: v for k, v in r.items() if v is not None}
        try:
            ipr.route("add", oif=idx, **spec)
        except _netlink_error() as e:
            if e.code != errno.EEXIST:  # someone (an `up`) put it back already
                raise
            continue
        restored.append(r)
    return restored
