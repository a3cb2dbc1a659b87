"""Concept checks over captured frames and the packet walk: each a PASS or FAIL with the frames as evidence,
or a SKIP that says what it would need to compare (a check that compared nothing never passes)."""

import math
from ipaddress import IPv4Address
from dataclasses import dataclass, field

from ..model.resolve import ServiceFacts
from ..model.schema import Forward
from .frames import BROADCAST, describe_ip
from .walk import Hop, Net, Walk, innermost, transmissions


@dataclass
class Result:
    name: str
    ok: bool  # False only for a failure: a SKIP is ok but not a pass
    summary: str
    evidence: list = field(default_factory=list)
    skipped: bool = False  # nothing was compared; summary says what it would need

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.ok else "FAIL")

    def as_dict(self) -> dict:
        return {"check": self.name, "status": self.status, "ok": self.ok, "summary": self.summary,
                "evidence": self.evidence}


def skip(name: str, why: str, evidence=()) -> Result:
    return Result(name, True, why, list(evidence), skipped=True)


@dataclass
class Context:
    """Everything a check may look at; traffic is the traffic generator's JSON (None in unit tests)."""

    net: Net
    frames: list
    walk: Walk
    traffic: dict | None = None
    service: ServiceFacts | None = None
    rp_filter: dict = field(default_factory=dict)  # TUN: {real server: effective rp_filter on tunl0}


def hop_line(h: Hop) -> str:
    f = h.frame
    return (f"hop {h.n} {f.link}: {h.sender} -> {h.receiver} [{f.src_mac} -> {f.dst_mac}] "
            f"{f.summary()}" + (f" — {h.note}" if h.note else ""))


def frame_line(f) -> str:
    return f"{f.link} {f.direction} {f.node}: [{f.src_mac} -> {f.dst_mac}] {f.summary()}"


def check_path(ctx: Context) -> Result:
    w = ctx.walk
    ev = [hop_line(h) for h in w.packets]
    if w.broke:
        return Result("path", False, w.broke, ev)
    return Result("path", True, f"request {w.client} -> {w.server} in {len(w.request)} hop(s), "
                  f"reply back in {len(w.reply)} hop(s)", ev)


def _arps_on(frames, op, sender, seg, before):
    return [f for f in transmissions(frames) if f.arp and f.arp["op"] == op and f.sender == sender
            and f.segment == seg and f.time <= before]


def check_arp(ctx: Context) -> Result:
    """Before the first IP packet to a new neighbour its sender asked who-has by broadcast and got a
    unicast reply; a neighbour that asked us first was learned from its own request (also fine).
    The address asked for is the next hop, which may be a VIP: the receiver's answer is what counts."""
    ev, bad = [], []
    for h in ctx.walk.request + ctx.walk.reply:
        if h.receiver == "broadcast" or not ctx.net.topo.has_node(h.receiver):
            continue
        seg, t = h.frame.segment, h.frame.time
        answers = {f.arp["psrc"]: f for f in _arps_on(ctx.frames, 2, h.receiver, seg, t)
                   if f.dst_mac != BROADCAST}
        ask = next((f for f in _arps_on(ctx.frames, 1, h.sender, seg, t)
                    if f.dst_mac == BROADCAST and f.arp["pdst"] in answers), None)
        if ask:
            ans = answers[ask.arp["pdst"]]
            ev.append(f"{h.sender} -> {h.receiver} on {seg}: {ask.summary()}, then {ans.summary()}, then hop {h.n}")
            continue
        learned = next((f for f in _arps_on(ctx.frames, 1, h.receiver, seg, t)
                        if ctx.net.owns(h.sender, f.arp["pdst"])), None)
        if learned:
            ev.append(f"{h.sender} -> {h.receiver} on {seg}: learned from {h.receiver}'s own request "
                      f"({learned.summary()})")
            continue
        bad.append(f"hop {h.n}: {h.sender} sent to {h.receiver} on {seg} with no ARP exchange before it "
                   "(the neighbour was already cached: were the caches flushed?)")
    if bad:
        return Result("arp", False, bad[0], bad + ev)
    return Result("arp", True, f"{len(ev)} new neighbour(s), each known before the first IP packet to it: "
                  "a broadcast who-has answered by unicast, or learned from the neighbour's own who-has", ev)


def check_ip_stays_mac_changes(ctx: Context) -> Result | None:
    ev, bad = [], []
    for chain in (ctx.walk.request, ctx.walk.reply):
        for a, b in zip(chain, chain[1:]):
            if a.ip.inner or b.ip.inner or (a.ip.src, a.ip.dst) != (b.ip.src, b.ip.dst):
                continue  # a rewrite: the SNAT/LVS checks judge it
            macs_a, macs_b = (a.frame.src_mac, a.frame.dst_mac), (b.frame.src_mac, b.frame.dst_mac)
            line = (f"{b.sender}: {a.ip.src} -> {a.ip.dst} on {a.link} and {b.link}; MACs "
                    f"{macs_a[0]} -> {macs_a[1]} then {macs_b[0]} -> {macs_b[1]}")
            (ev if macs_a != macs_b and macs_b[0] != macs_a[0] else bad).append(line)
    if not ev and not bad:
        return None
    if bad:
        return Result("ip-stays-mac-changes", False, "a forwarded frame kept its MAC pair: " + bad[0], bad + ev)
    return Result("ip-stays-mac-changes", True, f"{len(ev)} forwarding step(s): same IP pair, new MAC pair", ev)


def check_snat(ctx: Context) -> Result | None:
    topo = ctx.net.topo
    routers = [n for n in topo.nodes if n.nat]
    if not routers:
        return None
    out = []
    for node in routers:
        for nat in node.nat:
            outside = next((str(a.ip) for a in node.interface(nat.out).addresses), None)
            sent = [h for h in ctx.walk.request if h.sender == node.name]
            came = [h for h in ctx.walk.request if h.receiver == node.name]
            if not sent or not came:
                continue
            before, after = came[0].ip.src, sent[0].ip.src
            inside = nat.source is None or IPv4Address(before) in nat.source
            ok = after == outside and (before != after or not inside)
            back = [h for h in ctx.walk.reply if h.sender == node.name]
            into = [h for h in ctx.walk.reply if h.receiver == node.name]
            ev = [hop_line(came[0]), hop_line(sent[0])] + [hop_line(h) for h in into[:1] + back[:1]]
            restored = bool(back and into and into[0].ip.dst == outside and back[0].ip.dst == before)
            if not ok:
                out.append(Result("snat", False, f"{node.name} should rewrite source {before} to its outside "
                                  f"address {outside} on {nat.out}, but the packet left with source {after}", ev))
            elif not restored:
                out.append(Result("snat", False, f"{node.name} rewrote the source to {outside}, but the reply was "
                                  f"not rewritten back to {before}", ev))
            else:
                out.append(Result("snat", True, f"SNAT: {node.name} rewrote source {before} -> {outside} going "
                                  f"out of {nat.out}, and the reply's destination {outside} -> {before}", ev))
    return out[0] if out else None


def connection_segments(frames, client: str, sport: int) -> list:
    """The client's own transmissions and what reached it, for one TCP connection, on its first link."""
    first = next((f for f in transmissions(frames) if f.sender == client and f.ip and f.ip.sport == sport), None)
    if first is None:
        return []
    return [f for f in frames if f.link == first.link and f.ip and innermost(f.ip).proto == "tcp"
            and sport in (innermost(f.ip).sport, innermost(f.ip).dport)
            and ((f.direction == "from" and f.sender == client) or (f.direction == "to" and f.node == client))]


def check_tcp(ctx: Context) -> Result | None:
    w = ctx.walk
    if not w.request or w.request[0].ip.proto != "tcp":
        return None
    sport = w.request[0].ip.sport
    segs = connection_segments(ctx.frames, w.client, sport)
    mine = [(f.direction == "from", innermost(f.ip).flags) for f in segs]
    ev = [("client " if out else "server ") + f"[{flags}] " + describe_ip(innermost(f.ip)) for (out, flags), f in zip(mine, segs)]
    want = [(True, "S"), (False, "SA"), (True, "A")]
    pos, missing = 0, []
    for step in want:
        idx = next((i for i in range(pos, len(mine)) if mine[i] == step), None)
        if idx is None:
            missing.append(("client " if step[0] else "server ") + step[1])
        else:
            pos = idx + 1
    fin_c = any(out and "F" in fl for out, fl in mine)
    fin_s = any(not out and "F" in fl for out, fl in mine)
    if not fin_c:
        missing.append("client FIN")
    if not fin_s:
        missing.append("server FIN")
    if fin_c and fin_s:
        last_fin = max(i for i, (out, fl) in enumerate(mine) if "F" in fl)
        if not any("A" in fl and out != mine[last_fin][0] for out, fl in mine[last_fin + 1:]):
            missing.append("ACK of the last FIN")
    if missing:
        return Result("tcp", False, f"connection from port {sport}: missing " + ", ".join(missing), ev)
    return Result("tcp", True, f"connection from port {sport}: SYN, SYN-ACK, ACK opened it; "
                  "FIN/ACK each way closed it", ev)


def _rs_hops(ctx, svc):
    rips = {r.node: str(r.address) for r in svc.real_servers}
    return rips, [h for h in ctx.walk.request if h.receiver in rips]


def _vip_arp_liars(ctx, svc):
    """ARP replies for the VIP from anyone but the director: the classic DR/TUN breakage."""
    vip = str(svc.vip)
    return [f for f in transmissions(ctx.frames)
            if f.arp and f.arp["op"] == 2 and f.arp["psrc"] == vip and f.sender != svc.director]


def check_lvs(ctx: Context, svc: ServiceFacts) -> Result:
    name, vip, d = f"lvs-{svc.method.value}", str(svc.vip), svc.director
    liars = _vip_arp_liars(ctx, svc)
    if liars and svc.method is not Forward.NAT:
        rs = liars[0].sender
        tuning = "arp_tuning is off" if not svc.arp_tuning else "arp_ignore/arp_announce did not hold"
        return Result(name, False, f"{rs} answered ARP for the VIP {vip} ({tuning}): the router cached {rs}'s "
                      "MAC, so requests bypass the director", [frame_line(f) for f in liars])
    rips, at_rs = _rs_hops(ctx, svc)
    ev = [hop_line(h) for h in ctx.walk.packets]
    if svc.method is Forward.NAT:
        bypass = _nat_bypass(ctx, svc, rips)
        if bypass:
            f, rs, via = bypass
            return Result(name, False, f"{rs} sent its reply from {f.ip.src} to {f.ip.dst} through {via}, not "
                          f"through the director {d}: nobody rewrote the source back to the VIP {vip}, so the "
                          f"client dropped an answer it never asked for ({rs}'s gateway must be {d})",
                          [frame_line(f)])
    if not at_rs:
        return Result(name, False, f"no request reached a real server of {svc.name}"
                      + (f": {ctx.walk.broke}" if ctx.walk.broke else ""), ev)
    h, rs = at_rs[0], at_rs[0].receiver
    ip = h.ip
    reply_via_director = [r for r in ctx.walk.reply if d in (r.sender, r.receiver)]
    if svc.method is Forward.NAT:
        if ip.dst != rips[rs]:
            return Result(name, False, f"{rs} received dst {ip.dst}, not its RIP {rips[rs]}: the director did "
                          "not rewrite the destination", ev)
        out = [r for r in ctx.walk.reply if r.sender == d]
        if not out or out[0].ip.src != vip:
            got = f"left it with source {out[0].ip.src}" if out else "never passed it"
            return Result(name, False, f"the reply from {rs} {got}: in LVS NAT the reply must pass {d}, which "
                          f"rewrites the source back to the VIP {vip} (is {rs}'s gateway {d}?)", ev)
        return Result(name, True, f"NAT: {d} rewrote dst {vip} -> {rips[rs]} ({rs}); the reply passed {d} "
                      f"and left it with source {vip}", ev)
    if not ctx.walk.reply:
        why = ""
        if ctx.rp_filter.get(rs):
            why = (f": the decapsulated packet from {ip.inner.src if ip.inner else 'the client'} arrives on tunl0, "
                   f"but {rs}'s route back to it leaves by another interface, and {rs}'s rp_filter "
                   f"({ctx.rp_filter[rs]}, strict) drops such packets silently; rp_filter must be 0 (or 2) there")
        return Result(name, False, f"{rs} received the request (hop {h.n}, {h.link}) but never answered{why}", ev)
    if reply_via_director:
        return Result(name, False, f"the reply crossed the director {d} (hop {reply_via_director[0].n}): in "
                      f"{svc.method.value.upper()} the real server answers the client directly", ev)
    if ctx.walk.reply and ctx.walk.reply[0].ip.src != vip:
        return Result(name, False, f"{rs} answered from {ctx.walk.reply[0].ip.src}, not the VIP {vip}: the "
                      "client would drop it", ev)
    rs_macs = {m for m, n in ctx.net.macs.items() if n == rs}
    if svc.method is Forward.DR:
        if ip.inner or ip.dst != vip or h.frame.dst_mac not in rs_macs:
            return Result(name, False, f"{rs} got dst {ip.dst} / MAC {h.frame.dst_mac}: in DR it must get "
                          f"dst IP = VIP {vip} with dst MAC = its own", ev)
        return Result(name, True, f"DR: {rs} received dst IP {vip} with dst MAC {h.frame.dst_mac} (its own); "
                      f"the reply from {vip} never crossed a link of {d}", ev)
    dips = {str(a.ip) for i in ctx.net.topo.node(d).interfaces for a in i.addresses}
    inner = ip.inner
    if ip.proto != "ipip" or not inner or ip.src not in dips or ip.dst != rips[rs] or inner.dst != vip:
        return Result(name, False, f"on {h.link} {rs} got {describe_ip(ip)}: in TUN it must get proto 4, "
                      f"outer DIP -> {rips[rs]} around inner CIP -> {vip}", ev)
    return Result(name, True, f"TUN: on {h.link} proto 4, outer {ip.src} -> {ip.dst} around inner "
                  f"{inner.src} -> {inner.dst}; the reply bypassed {d}", ev)


def _nat_bypass(ctx, svc, rips):
    """(frame, real server, next hop) of a reply that left a NAT real server towards someone other than
    the director, or None."""
    director_macs = {m for m, n in ctx.net.macs.items() if n == svc.director}
    by_ip = {ip: rs for rs, ip in rips.items()}
    for f in ctx.frames:
        ip = f.ip
        if not ip or ip.src not in by_ip or f.node != by_ip[ip.src] or f.direction != "from":
            continue
        if ip.dst in rips.values() or ctx.net.owns(svc.director, ip.dst):
            continue
        if f.dst_mac not in director_macs:
            return f, by_ip[ip.src], ctx.net.macs.get(f.dst_mac, f.dst_mac)
    return None


def expected_share(svc: ServiceFacts, n: int) -> dict | None:
    """{rs: expected connections of n} for schedulers whose split is fixed by the weights alone; None for
    the others (load-driven, hash-driven, or sticky through persistence)."""
    if svc.persistence:
        return None
    weights = {r.node: r.weight for r in svc.real_servers}
    if svc.scheduler == "rr":
        live = [k for k, w in weights.items() if w > 0]
        return {k: (n / len(live) if k in live else 0) for k in weights}
    if svc.scheduler == "wrr":
        total = sum(weights.values())
        return {k: n * w / total for k, w in weights.items()}
    return None


# What a share check would need for the schedulers whose split the weights alone don't fix.
NEEDS = {
    "lc": "connections held open on one real server, then new ones going to the others",
    "wlc": "connections held open on one real server, then new ones going to the others by weight",
    "sed": "connections held open, then new ones going where the expected delay is shortest",
    "nq": "an idle real server taking the next connection first",
    "sh": "several client addresses, each landing on one real server every time",
    "dh": "several destination addresses, each going to one real server every time",
    "mh": "several client addresses, each landing on one real server every time",
    "lblc": "several destination addresses and their per-destination server choice",
    "lblcr": "several destination addresses and their per-destination server sets",
    "fo": "the highest-weight available real server taking every connection",
    "ovf": "the highest-weight server taking connections until its weight's worth are active",
    "twos": "the split of two random choices by load, over many connections",
}


STICKY = ("sh", "mh", "dh")  # the real server follows from a hash of the client (sh, mh) or of the VIP (dh)
LEAST = ("lc", "wlc", "sed", "nq")  # the real server follows from the director's connection counts


def experiment(svc: ServiceFacts) -> str | None:
    """The experiment verify/services.py runs to prove svc's scheduler: 'sticky' (several client addresses,
    each kept on one real server), 'least' (connections held open on one real server, new ones judged
    against the director's counts), or None (rr/wrr: the share of many requests; the rest: SKIP)."""
    if svc.protocol != "tcp":
        return None
    if svc.persistence or svc.scheduler in STICKY:
        return "sticky"
    if svc.scheduler in LEAST:
        return "least"
    return None


def check_scheduler(svc: ServiceFacts, by_server: dict) -> Result:
    n = sum(by_server.values())
    want = expected_share(svc, n)
    got = ", ".join(f"{k} {by_server.get(k, 0)}" for k in sorted({r.node for r in svc.real_servers} | set(by_server)))
    if want is None:
        if svc.persistence:
            need = (f"persistence {svc.persistence} s keeps one client on one real server: comparing needs several "
                    "clients, each sticking to its first server")
        else:
            need = (f"{svc.scheduler}: not compared; a check would need "
                    + NEEDS.get(svc.scheduler, "more than one round of connections"))
        return skip("scheduler", f"{need} (seen: {n} connections split {got})", [got])
    per = 1 if svc.scheduler == "rr" else 2
    slack = per * max(1, math.ceil(n / 60))
    off = {k: by_server.get(k, 0) - e for k, e in want.items() if abs(by_server.get(k, 0) - e) > slack}
    ev = [f"{k}: got {by_server.get(k, 0)}, expected {e:.1f} ±{slack}" for k, e in want.items()]
    if off:
        k = next(iter(off))
        return Result("scheduler", False, f"{svc.scheduler} with weights "
                      f"{ {r.node: r.weight for r in svc.real_servers} }: {k} got {by_server.get(k, 0)} of {n}, "
                      f"expected {want[k]:.1f} ±{slack}", ev)
    return Result("scheduler", True, f"{svc.scheduler}: {n} connections split {got}, as the weights say", ev)


def nodes_along(hops) -> list:
    """The nodes a packet visited, in order: first sender, then each receiver."""
    return [hops[0].sender] + [h.receiver for h in hops] if hops else []


def check_expectation(i: int, exp, walk, traffic) -> Result:
    """A topology's own `expect:` entry, judged on one observed request and its reply."""
    name = f"expect[{i}]"
    what = f"{exp.sender} -> {exp.to}"
    answered = bool(traffic and traffic.get("ok"))
    ev = [hop_line(h) for h in walk.packets]
    if answered != exp.reaches:
        said = "got an answer" if answered else "got no answer" + (f" ({walk.broke})" if walk.broke else "")
        return Result(name, False, f"{what} {said}, but the lab expects it {'to' if exp.reaches else 'not to'} "
                      "be answered", ev)
    for key, hops in (("path", walk.request), ("reply_path", walk.reply)):
        want, got = list(getattr(exp, key)), nodes_along(hops)
        if want and got != want:
            return Result(name, False, f"{what}: {key} was {' -> '.join(got) or '(nothing)'}, the lab expects "
                          f"{' -> '.join(want)}", ev)
    shown = " -> ".join(nodes_along(walk.request)) or "no path"
    return Result(name, True, f"{what} {'answered' if answered else 'unanswered, as expected'}: {shown}", ev)


def run_checks(ctx: Context) -> list:
    """Every check that applies to the lab, in teaching order."""
    from .lessons import check_dnat, check_private_source
    from .vlans import check_vlans
    results = [check_path(ctx), check_arp(ctx)]
    for fn in (check_ip_stays_mac_changes, check_snat, check_private_source, check_dnat, check_vlans, check_tcp):
        r = fn(ctx)
        if r:
            results.append(r)
    if ctx.service:
        results.append(check_lvs(ctx, ctx.service))
        if ctx.traffic and ctx.traffic.get("by_server") and experiment(ctx.service) is None:
            results.append(check_scheduler(ctx.service, ctx.traffic["by_server"]))
    return results


def check_health(svc: ServiceFacts, ev: dict) -> Result:
    """keepalived's health checks, from verify/health.py's evidence: once a real server's app is stopped it
    gets no new connections (keepalived took it out), and once healed it gets them again."""
    node, bound = ev.get("node"), ev.get("bound")
    if ev.get("skip"):
        return skip("health", ev["skip"])
    lines = [f"{when}: {len(t.get('by_server', {}))} server(s) answered {t.get('by_server')}, {t.get('failed', 0)} "
             f"failed {t.get('errors') or ''}".rstrip() for when, t in (("with " + node + " failed", ev["failed"]),
                                                                      ("after the heal", ev["healed"]))]
    lines[:0] = [f"{node} out of the director's table {ev['out_after']} s after its app stopped (bound {bound} s)",
                 f"{node} back {ev['back_after']} s after it listened again"]
    if ev["out_after"] is None:
        return Result("health", False, f"keepalived did not take {node} out within {ev['waited']} s of its app "
                      f"stopping ({svc.health.check} check every {svc.health.interval} s, {svc.health.retries} "
                      "retries)", lines)
    got = ev["failed"].get("by_server", {})
    if got.get(node):
        return Result("health", False, f"{node} answered {got[node]} new connections after keepalived took it out",
                      lines)
    if not got:
        return skip("health", f"nothing answered while {node} was out (no other real server up, no sorry server): "
                    "no connection showed where new ones go", lines)
    if ev["back_after"] is None or not ev["healed"].get("by_server", {}).get(node):
        return Result("health", False, f"{node} got no new connections after it was healed"
                      + ("" if ev["back_after"] is not None else f": keepalived did not put it back within "
                         f"{ev['waited']} s"), lines)
    return Result("health", True, f"{node} failed: out of the table in {ev['out_after']} s (bound {bound} s), "
                  f"its new connections went to {', '.join(sorted(got))}; healed: back in {ev['back_after']} s, "
                  f"answering {ev['healed']['by_server'][node]} of {sum(ev['healed']['by_server'].values())}", lines)
