"""Reads what exists: which namespaces are whose, and each node's interfaces, addresses and MACs."""

from ..model import names
from . import netns


def owned_namespaces(session, lab: str | None = None, token: str | None = None) -> dict[str, names.Owner]:
    """namespace -> Owner for every namespace carrying an nslab mark (of `lab`, and with `token`, if given)."""
    out = {}
    for ns in netns.list_names():
        if lab and not ns.startswith(lab + "-"):
            continue
        try:
            if not netns.exists(ns) or netns.is_host(ns):
                continue
            links = session.ipr(ns).get_links(1)
        except OSError:
            continue  # gone meanwhile, or a stale /run/netns entry: not ours to judge
        owner = names.parse_mark(links[0].get("ifalias") if links else None)
        if owner and (lab is None or owner.lab == lab) and (token is None or owner.token == token) and ns == (
                names.fabric_ns(owner.lab) if owner.role == "fabric" else names.node_ns(owner.lab, owner.role)):
            out[ns] = owner
    return out


def interfaces(session, ns: str) -> list[dict]:
    """name, state, mac, addresses (CIDR), master of every interface in ns."""
    ipr = session.ipr(ns)
    addrs = {}
    for m in ipr.get_addr(family=2):
        addrs.setdefault(m["index"], []).append(f"{m.get('address')}/{m['prefixlen']}")
    by_index = {}
    links = list(ipr.get_links())
    for link in links:
        by_index[link["index"]] = link.get("ifname")
    out = []
    for link in links:
        out.append({"name": link.get("ifname"), "up": bool(link["flags"] & 1),
                    "carrier": link.get("operstate") in ("UP", "UNKNOWN"),
                    "mac": link.get("address"), "addresses": addrs.get(link["index"], []),
                    "master": by_index.get(link.get("master"))})
    return out


def link_bytes(session, ns: str, dev: str) -> tuple[int, int] | None:
    """(bytes received, bytes sent) of dev in ns, from the kernel's 64-bit link counters; None if dev is gone."""
    idx = session.index(ns, dev)
    if idx is None:
        return None
    link = session.ipr(ns).get_links(idx)[0]
    stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
    return stats["rx_bytes"], stats["tx_bytes"]
