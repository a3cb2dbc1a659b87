"""VLANs split one switch into separate LANs: every broadcast stays inside its VLAN. Proven from the ports
each captured ARP broadcast was handed to (a frame's VLAN is its sender's: the access port's VLAN, or the
sub-interface it left by), and an ARP left unanswered because its target sits in another VLAN."""

from .concepts import Result, frame_line, skip
from .frames import BROADCAST
from .walk import transmissions


def _vlan_of(topo, node: str, ip: str) -> int | None:
    """The VLAN a node's address is in: its interface's (an access port or an 802.1Q sub-interface)."""
    n = topo.node(node) if topo.has_node(node) else None
    iface = next((i for i in n.interfaces for a in i.addresses if str(a.ip) == ip), None) if n else None
    return iface.vlans[0] if iface and iface.vlans and (iface.parent or not iface.trunk) else None


def _port_vlans(topo) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{node: (switch, VLANs its port carries)} for every switch port with VLANs."""
    return {n.name: (i.switch, i.vlans) for n in topo.nodes for i in n.interfaces if i.switch and i.vlans}


def check_vlans(ctx) -> Result | None:
    """None for a lab without VLANs."""
    topo = ctx.net.topo
    ports = _port_vlans(topo)
    if not ports:
        return None
    ev, leaks, split = [], [], []
    for f in transmissions(ctx.frames):
        if not f.arp or f.arp["op"] != 1 or f.dst_mac != BROADCAST:
            continue
        vlan = _vlan_of(topo, f.sender, f.arp["psrc"])
        if vlan is None:
            continue
        got = sorted({g.node for g in ctx.frames if g.direction == "to" and g.arp and g.arp == f.arp
                      and g.segment == f.segment and abs(g.time - f.time) < 1})
        outside = [n for n in got if n in ports and vlan not in ports[n][1]]
        line = f"VLAN {vlan}: {frame_line(f)} -> handed to {', '.join(got) or 'nobody'}"
        ev.append(line)
        if outside:
            leaks.append(f"{f.sender}'s broadcast in VLAN {vlan} reached {', '.join(outside)}, whose port is not in "
                         f"VLAN {vlan}")
        holder = next(iter(ctx.net.lab.holders(f.arp["pdst"])), None)
        there = _vlan_of(topo, holder, f.arp["pdst"]) if holder else None
        if there is not None and there != vlan and holder not in got:
            split.append(f"{f.sender} asked who-has {f.arp['pdst']} in VLAN {vlan}, but {holder} holds it in VLAN "
                         f"{there}: the broadcast never reaches it, so nobody answers. Two VLANs are two LANs even on "
                         "one switch: give them different subnets and a router on a trunk port between them")
    if leaks:
        return Result("vlans", False, leaks[0], ev)
    if split:
        return Result("vlans", False, split[0], ev)
    if not ev:
        return skip("vlans", "no ARP broadcast was captured, so no VLAN boundary could be seen")
    return Result("vlans", True, f"{len(ev)} broadcast(s), each handed only to ports of its own VLAN", ev)
