"""Resolved lab -> the ordered list of kernel actions that builds it, each with its reason (pure)."""

from ..model import names
from ..model.resolve import ResolvedLab
from ..model.schema import Forward
from ..model.sysctls import split_interface_sysctl
from . import keepalived
from .actions import (AddAddress, AddBridge, AddNetns, AddRoute, AddTunnel, AddVeth, AddVlan, BridgeVlan, Dnat,
                      Exec, IpvsDest, IpvsService, Masquerade, SetImpair, StartApp, StartKeepalived, StartProxy,
                      Sysctl)
from .haproxy import config as haproxy_config


class _Sysctls:
    """Per-namespace sysctl values; a later layer (derived, then the user's) overrides an earlier one,
    so every key is set once, to its final value, and `up` twice changes nothing."""

    def __init__(self):
        self.values: dict[str, dict[str, tuple[str, str]]] = {}

    def put(self, ns, key, value, reason):
        self.values.setdefault(ns, {})[key] = (str(value), reason)

    def actions(self, ns, interface_keys: bool):
        """One action per key, those of one reason together, reasons in first-seen order; interface keys
        (conf.<ifname>.*) only after links."""
        groups: dict[str, list] = {}
        for key, (value, reason) in self.values.get(ns, {}).items():
            if _is_interface_key(key) == interface_keys:
                groups.setdefault(reason, []).append(Sysctl(ns, key=key, value=value, reason=reason))
        return [a for group in groups.values() for a in group]


def _is_interface_key(key: str) -> bool:
    """A key of one interface (conf.<ifname>.*, neigh.<ifname>.*): it exists only once the link does."""
    parts = split_interface_sysctl(key)
    return bool(parts) and parts[1] not in ("all", "default")


def plan(rlab: ResolvedLab) -> list:
    """Every action, in an order the kernel accepts (links before their addresses, addresses before routes
    and IPVS, servers last). Reads only the resolved lab."""
    topo, lab = rlab.topology, rlab.name
    fab = names.fabric_ns(lab)
    sysctl = _Sysctls()
    out = [AddNetns(fab, mark=names.mark(lab, "fabric"),
                    reason="the lab's switches live in a namespace of their own, never in the host's")]
    why = "no IPv6 chatter (router solicitations, MLD) on the lab's links"
    out += [Sysctl(fab, key=f"net.ipv6.conf.{scope}.disable_ipv6", value="1", reason=why)
            for scope in ("all", "default")]
    why = "bridges hand frames to netfilter only if br_netfilter says so: keep the switches plain L2"
    out += [Sysctl(fab, key=f"net.bridge.bridge-nf-call-{table}", value="0", optional=True, reason=why)
            for table in ("iptables", "arptables")]
    vlan_switches = {i.switch for n in topo.nodes for i in n.interfaces if i.switch and i.vlans}
    out += [_bridge(fab, topo.switch(sw), sw in vlan_switches) for sw in topo.switches]

    for node in topo.nodes:
        ns = names.node_ns(lab, node.name)
        _baseline(sysctl, ns, node)
    for svc in rlab.services:
        _derive_service_sysctls(rlab, svc, sysctl)
    for node in topo.nodes:
        ns = names.node_ns(lab, node.name)
        for key, value in node.sysctls:
            sysctl.put(ns, key, value, f"set by hand in nodes.{node.name}.sysctls")

    for node in topo.nodes:
        ns = names.node_ns(lab, node.name)
        out.append(AddNetns(ns, mark=names.mark(lab, node.name), reason=f"node '{node.name}': its own network stack"))
        out += sysctl.actions(ns, interface_keys=False)
    out += _links(rlab)
    out += _vlans(rlab)
    for node in topo.nodes:
        ns = names.node_ns(lab, node.name)
        for iface in node.interfaces:
            out += [AddAddress(ns, dev=iface.name, cidr=str(a), reason=f"{node.name}:{iface.name} is {a.ip} on "
                               f"{a.network}") for a in iface.addresses]
    out += _service_addresses(rlab)
    out += _impairs(rlab)
    for node in topo.nodes:
        ns = names.node_ns(lab, node.name)
        out += sysctl.actions(ns, interface_keys=True)
        for r in node.routes:
            to = "default" if r.is_default else str(r.to)
            why = (f"{node.name} sends what it has no closer route for to {r.via}" if r.is_default
                   else f"{node.name} reaches {r.to} " + (f"through next hop {r.via}" if r.via else f"on {r.dev}"))
            out.append(AddRoute(ns, to=to, via=str(r.via) if r.via else None, dev=r.dev, reason=why))
        for nat in node.nat:
            out.append(Masquerade(ns, out=nat.out, source=str(nat.source) if nat.source else None,
                                  reason=f"SNAT: packets leaving {node.name}:{nat.out} get its address as source"))
        for f in node.dnat:
            arriving = f" arriving on {f.iface}" if f.iface else ""
            out.append(Dnat(ns, protocol=f.protocol, port=f.port, to_ip=str(f.to_ip), to_port=f.to_port, iface=f.iface,
                            reason=f"DNAT (port forward): {f.protocol} port {f.port} of {node.name}{arriving} goes on "
                            f"to {f.to_ip}:{f.to_port}; the replies get {node.name}'s address back as source"))
    out += _ipvs(rlab)
    out += _apps(rlab)
    out += _keepalived(rlab)
    out += [StartProxy(rlab.ns(p.node), node=p.node, port=p.port, config=haproxy_config(p),
                       reason=f"haproxy on {p.node}: ends each client's connection on port {p.port} and opens its "
                       f"own to {', '.join(n for n, _, _ in p.servers)}" + (", choosing by path" if p.paths else ""))
            for p in rlab.proxies]
    for node in topo.nodes:
        ns = names.node_ns(lab, node.name)
        out += [Exec(ns, argv=argv, node=node.name, reason=f"nodes.{node.name}.exec") for argv in node.exec]
    return out


def _bridge(fab, sw, vlans: bool):
    why = f"switch '{sw.name}': one Linux bridge per L2 segment"
    if vlans:
        why += "; VLAN filtering on: it forwards a frame only between ports of the frame's VLAN"
    if sw.ageing == 0:
        why += "; ageing 0: it forgets every MAC at once and floods every frame, like a hub"
    elif sw.ageing is not None:
        why += f"; it remembers the port of a MAC for {sw.ageing} s"
    return AddBridge(fab, name=sw.name, ageing=sw.ageing, vlan_filtering=vlans, reason=why)


def _baseline(sysctl, ns, node):
    why = "set explicitly so the lab behaves the same on any host (a new namespace inherits the host's values)"
    forward = bool(node.forward)
    sysctl.put(ns, "net.ipv4.ip_forward", int(forward),
               f"{node.name} {'routes' if forward else 'does not route'} packets between its interfaces"
               if node.forward is not None else why)
    for scope in ("all", "default"):
        sysctl.put(ns, f"net.ipv4.conf.{scope}.rp_filter", 0, why)
        sysctl.put(ns, f"net.ipv4.conf.{scope}.arp_ignore", 0, why)
        sysctl.put(ns, f"net.ipv4.conf.{scope}.arp_announce", 0, why)
    if not any(a.version == 6 for i in node.interfaces for a in i.addresses):
        for scope in ("all", "default"):
            sysctl.put(ns, f"net.ipv6.conf.{scope}.disable_ipv6", 1,
                       "no IPv6 in this lab: captures hold only the lab's own traffic")


def _derive_service_sysctls(rlab, svc, sysctl):
    if svc.health:
        why = (f"service '{svc.name}': keepalived takes a dead real server out of IPVS, but IPVS keeps that "
               "server's connection entries (60 s for a refused SYN, 15 min for an established connection) and "
               "drops every packet on them, the SYN of a client port used again included; with "
               "expire_nodest_conn=1 such a packet ends its entry and is scheduled anew")
        for d in svc.directors:
            sysctl.put(rlab.ns(d), "net.ipv4.vs.expire_nodest_conn", 1, why)
    director = rlab.topology.node(svc.director)
    if svc.method is Forward.NAT and director.forward is None:
        sysctl.put(rlab.ns(svc.director), "net.ipv4.ip_forward", 1,
                   f"LVS NAT: {svc.director} forwards requests to real servers and replies back to clients")
    if svc.method is Forward.NAT:
        return
    for rs in svc.backends:
        ns = rlab.ns(rs.node)
        if svc.arp_tuning:
            why = (f"{svc.method.value.upper()}: {rs.node} holds the VIP too but must not answer ARP for it "
                   "(arp_ignore=1) nor announce it (arp_announce=2), or the router would send clients to it")
            node = rlab.topology.node(rs.node)
            for scope in ["all"] + [i.name for i in node.interfaces if i.name != "lo"]:
                sysctl.put(ns, f"net.ipv4.conf.{scope}.arp_ignore", 1, why)
                sysctl.put(ns, f"net.ipv4.conf.{scope}.arp_announce", 2, why)
        if svc.method is Forward.TUN and svc.rp_filter_relax:
            why = (f"TUN: the decapsulated packet (client -> VIP) arrives on tunl0, which has no route back "
                   f"to the client: rp_filter must not drop it on {rs.node}")
            for scope in ("all", "tunl0"):
                sysctl.put(ns, f"net.ipv4.conf.{scope}.rp_filter", 0, why)


def _links(rlab):
    """A veth per switch port (switch end in the fabric), one per direct cable (in the first node declared)."""
    out = []
    for node in rlab.topology.nodes:
        for iface in node.interfaces:
            seg = rlab.segment_of(node.name, iface.name)
            end = seg.end(node.name, iface.name) if seg else None
            if end is None:
                continue
            if seg.kind == "switch" and end.port:
                out.append(AddVeth(rlab.fabric_ns, name=end.port, peer_ns=rlab.ns(node.name), peer=iface.name,
                                   master=seg.name, peer_mac=end.mac,
                                   reason=f"cable from {node.name}:{iface.name} to switch '{seg.name}'"))
            elif seg.kind == "cable" and len(seg.ends) == 2 and seg.ends[0] == end:
                other = seg.ends[1]
                out.append(AddVeth(rlab.ns(node.name), name=iface.name, peer_ns=rlab.ns(other.node), peer=other.iface,
                                   mac=end.mac, peer_mac=other.mac,
                                   reason=f"direct cable {node.name}:{iface.name} <-> {other.node}:{other.iface}"))
    return out


def _impairs(rlab):
    out = []
    for node in rlab.topology.nodes:
        for iface in node.interfaces:
            m = iface.impair
            if m:
                what = ", ".join(w for w in (m.delay_us and f"{m.delay_us / 1000:g} ms delay"
                                             + (f" ±{m.jitter_us / 1000:g} ms" if m.jitter_us else ""),
                                             m.loss_pct and f"{m.loss_pct:g}% loss",
                                             m.rate_bit and f"a {m.rate_bit / 1e6:g} Mbit/s line") if w)
                out.append(SetImpair(rlab.ns(node.name), dev=iface.name, delay_us=m.delay_us, jitter_us=m.jitter_us,
                                     loss_pct=m.loss_pct, rate_bit=m.rate_bit,
                                     reason=f"nodes.{node.name}.interfaces.{iface.name}.impair: {what} on what "
                                     f"{node.name} sends out of {iface.name}"))
    return out


def _vlans(rlab):
    """Each switch port's VLANs (the bridge filters by them), then each node's 802.1Q sub-interfaces."""
    out = []
    for node in rlab.topology.nodes:
        for iface in node.interfaces:
            if iface.switch and iface.vlans:
                port = names.bridge_port(node.name, iface.name)
                kind = (f"a trunk: VLANs {', '.join(map(str, iface.vlans))} tagged" if iface.trunk
                        else f"an access port of VLAN {iface.vlans[0]}: its frames untagged")
                out.append(BridgeVlan(rlab.fabric_ns, port=port, vids=iface.vlans, access=not iface.trunk,
                                      reason=f"{node.name}:{iface.name}'s port on '{iface.switch}' is {kind}; "
                                      "no longer in the default VLAN 1"))
    for node in rlab.topology.nodes:
        for iface in node.interfaces:
            if iface.parent:
                out.append(AddVlan(rlab.ns(node.name), name=iface.name, parent=iface.parent, vid=iface.vlans[0],
                                   reason=f"{node.name}:{iface.name} sends and receives {iface.parent}'s frames "
                                   f"tagged VLAN {iface.vlans[0]}: the router's leg in that VLAN"))
    return out


def _service_addresses(rlab):
    out = []
    for svc in rlab.services:
        dif = svc.vip_interface
        if not svc.vip_is_own and not svc.vrrp:  # a pair's VIP is keepalived's: VRRP gives it to the master
            out.append(AddAddress(rlab.ns(svc.director), dev=dif, cidr=f"{svc.vip}/32",
                                  reason=f"service '{svc.name}': the director answers for the VIP on {dif}"))
        for rs in svc.backends:
            ns = rlab.ns(rs.node)
            if svc.method is Forward.DR:
                out.append(AddAddress(ns, dev="lo", cidr=f"{svc.vip}/32",
                                      reason=f"DR: {rs.node} accepts packets for the VIP (hidden on lo) and "
                                      "replies from it straight to the client"))
            elif svc.method is Forward.TUN:
                out.append(AddTunnel(ns, reason=f"TUN: {rs.node} unwraps IP-in-IP packets from the director on tunl0; "
                                          "`modprobe ipip` loads the ipip module (tunl0 appears in every namespace)"))
                out.append(AddAddress(ns, dev="tunl0", cidr=f"{svc.vip}/32",
                                      reason=f"TUN: the inner packet is for the VIP; {rs.node} holds it on tunl0"))
    return out


def _ipvs(rlab):
    out = []
    for svc in rlab.services:
        if svc.keepalived:  # keepalived programs it and changes weights; nslab must not fight it
            continue
        ns = rlab.ns(svc.director)
        out.append(IpvsService(ns, protocol=svc.protocol, vip=str(svc.vip), port=svc.port, scheduler=svc.scheduler,
                               persistence=svc.persistence,
                               reason=f"service '{svc.name}': {svc.director} balances {svc.vip}:{svc.port} "
                               f"with {svc.scheduler}"))
        for rs in svc.real_servers:
            out.append(IpvsDest(ns, protocol=svc.protocol, vip=str(svc.vip), port=svc.port, rip=str(rs.address),
                                rport=rs.port, weight=rs.weight, method=svc.method.value,
                                reason=f"{rs.node} ({rs.address}) serves '{svc.name}' by "
                                f"{svc.method.value.upper()}, weight {rs.weight}"))
    return out


def _apps(rlab):
    return [StartApp(rlab.ns(app.node), node=app.node, kind=app.kind, port=app.port, protocol=app.protocol,
                     reply_size=app.reply_size,
                     reason=f"built-in {app.kind} server on {app.node}, answering with its name"
                     + (f" in {app.reply_size}-byte replies" if app.reply_size else ""))
            for app in rlab.apps]


def _keepalived(rlab):
    """keepalived in each director of a health-checked or paired service, after the apps it checks."""
    lab, out = rlab.name, []
    for node in keepalived.directors(rlab):
        served = [s for s in rlab.services if s.keepalived and node in s.directors]
        what = "; ".join(f"'{s.name}': " + ", ".join(
            (["health-checks its real servers (" + s.health.check + ")"] if s.health else [])
            + ([f"VRRP {'master' if s.directors[0] == node else 'backup'} of {s.vip}"] if s.vrrp else [])
            + ["programs its IPVS table"]) for s in served)
        out.append(StartKeepalived(
            rlab.ns(node), node=node, config=keepalived.config(rlab, node), conf=keepalived.conf_path(lab, node),
            pids=tuple(keepalived.pid_path(lab, node, p) for p in keepalived.PROCESSES),
            notify_dir=keepalived.notify_dir(lab), reason=f"keepalived on {node}: {what}"))
    return out
