"""Checks of the host-kernel labs' lessons that read only the packet walk: the IP pair a lab says must stay,
and a private source that crossed to a public network with nobody to rewrite it (SNAT missing)."""

from ..model import reach
from .concepts import Result, hop_line


def check_same_ip(i: int, exp, walk, net) -> Result:
    """`same_ip: true` on an expect entry: every link the request crossed carries the IP pair it left with.
    A router that rewrites it (NAT) breaks the lesson 'the IP stays, the MAC changes'."""
    name = f"expect[{i}].same_ip"
    hops = walk.request
    ev = [hop_line(h) for h in hops]
    if len(hops) < 2:
        return Result(name, False, f"{exp.sender} -> {exp.to}: the request crossed {len(hops)} link(s); the IP "
                      "pair can only be compared across two or more" + (f" ({walk.broke})" if walk.broke else ""), ev)
    first = (hops[0].ip.src, hops[0].ip.dst)
    for prev, h in zip(hops, hops[1:]):
        if (h.ip.src, h.ip.dst) != first:
            who = h.sender
            node = net.topo.node(who) if net.topo.has_node(who) else None
            cause = (f"nodes.{who}.nat rewrites it (remove it: a router only forwards)" if node and node.nat
                     else f"{who} rewrote it")
            return Result(name, False, f"{who} changed the IP pair {first[0]} -> {first[1]} into {h.ip.src} -> "
                          f"{h.ip.dst} on {h.link} (hop {h.n}): the lab says the IP pair stays from end to end; "
                          + cause, ev)
    macs = {(h.frame.src_mac, h.frame.dst_mac) for h in hops}
    return Result(name, True, f"{first[0]} -> {first[1]} on all {len(hops)} links, with {len(macs)} different "
                  "MAC pairs: the IP stays, the MAC changes", ev)


def _out_iface(lab, node: str, segment: str | None) -> str | None:
    seg = lab.segment(segment) if segment else None
    end = seg.end(node) if seg else None
    return end.iface if end else None


def check_private_source(ctx) -> Result | None:
    """A request that reached its server with a private source the server has no route back to: the
    router that put it on a public network should have masqueraded it. None when that did not happen."""
    w, lab = ctx.walk, ctx.net.lab
    last = w.request[-1] if w.request else None
    if last is None or w.reply or not reach.private(last.ip.src) or reach.lookup(lab, last.receiver, last.ip.src):
        return None
    hops = [(h.sender, _out_iface(lab, h.sender, h.frame.segment)) for h in w.request[1:]]
    point = reach.snat_point(lab, hops)
    if point is None:
        return None
    router, iface = point
    return Result("snat", False, f"{last.receiver} got the request from {last.ip.src}, a private address it has "
                  f"no route back to: {router} forwarded it out of {iface} without rewriting the source to its own "
                  f"address, so the answer never leaves {last.receiver}; fix: "
                  + reach.snat_fix(lab, router, iface, last.ip.src), [hop_line(h) for h in w.request])


def check_dnat(ctx) -> Result | None:
    """A port forward the request went through: destination rewritten on the way in (the server sees the
    client's real address, the opposite of SNAT) and the reply's source restored on the way out. None when
    the traffic did not go through one."""
    w, lab = ctx.walk, ctx.net.lab
    for f in lab.port_forwards:
        came = next((h for h in w.request if h.receiver == f.router and h.ip.dst == str(f.address)
                     and h.ip.dport == f.port), None)
        sent = next((h for h in w.request if came and h.sender == f.router and h.frame.time > came.frame.time), None)
        if came is None:
            continue
        ev = [hop_line(h) for h in w.packets]
        if sent is None or (sent.ip.dst, sent.ip.dport) != (str(f.to_ip), f.to_port):
            got = f"{sent.ip.dst}:{sent.ip.dport}" if sent else "nowhere"
            return Result("dnat", False, f"{f.router} should forward {f.target} to {f.to_ip}:{f.to_port}, but sent it "
                          f"on to {got}", ev)
        src = came.ip.src
        back = next((h for h in w.reply if h.sender == f.router), None)
        if not w.reply:
            server = w.request[-1].receiver
            if lab.topology.has_node(server) and reach.lookup(lab, server, src) is None:
                gw = lab.address_on(f.router, sent.frame.segment)
                return Result("dnat", False, f"{server} got the request from {src}, the client's real address (DNAT "
                              f"rewrites only the destination), but has no route back to it: its answer never "
                              f"leaves {server}; fix: nodes.{server}.gateway: {gw}", ev)
            return Result("dnat", False, f"{f.router} forwarded {f.target} to {f.to_ip}:{f.to_port}, but no reply "
                          f"came back" + (f": {w.broke}" if w.broke else ""), ev)
        if back is None or (back.ip.src, back.ip.sport) != (str(f.address), f.port):
            got = f"{back.ip.src}:{back.ip.sport}" if back else "never passed it"
            return Result("dnat", False, f"the reply from {f.to_ip}:{f.to_port} left {f.router} as {got}, not "
                          f"{f.target}: the client would drop an answer from an address it never called", ev)
        return Result("dnat", True, f"port forward: {f.router} rewrote destination {f.target} -> {f.to_ip}:"
                      f"{f.to_port} on the way in (the server saw the client's own address {src}), and the reply's "
                      f"source {f.to_ip}:{f.to_port} -> {f.target} on the way out", ev)
    return None
