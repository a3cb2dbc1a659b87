"""A bridge's forwarding database (FDB): the MACs it has learned and the port each was seen on."""

import errno

NUD_PERMANENT = 0x80  # the bridge's own and static entries; learned ones are reachable or stale
NTF_MASTER = 0x04  # the entry is the bridge's (not the port device's own table)


def _learned(s, ns: str, bridge: str) -> list:
    br = s.index(ns, bridge)
    return [e for e in s.ipr(ns).fdb("dump") if e.get_attr("NDA_MASTER") == br and not e["state"] & NUD_PERMANENT]


def learned(s, ns: str, bridge: str) -> dict[str, str]:
    """{mac: port name} of the entries the bridge learned from traffic."""
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in s.ipr(ns).get_links()}
    return {e.get_attr("NDA_LLADDR"): names.get(e["ifindex"], str(e["ifindex"])) for e in _learned(s, ns, bridge)}


def forget(s, ns: str, bridge: str) -> None:
    """Delete every learned entry (as `bridge fdb flush dev BRIDGE dynamic`): the next frame to any MAC is
    to an unknown destination again."""
    from pyroute2.netlink.exceptions import NetlinkError
    for e in _learned(s, ns, bridge):
        try:
            s.ipr(ns).fdb("del", ifindex=e["ifindex"], lladdr=e.get_attr("NDA_LLADDR"), flags=NTF_MASTER)
        except NetlinkError as err:
            if err.code != errno.ENOENT:  # aged out meanwhile: what we wanted
                raise
