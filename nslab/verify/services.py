"""The checks every LVS service of a running lab gets, each with traffic of its own from the client: its
scheduler proven (shares for rr/wrr; for the others an experiment: several client addresses, connections
held open) and the bytes its director carried. balance.py judges what is observed here."""

import time

from ..kernel import ipvs
from ..kernel.session import Session
from ..model.resolve import ResolvedLab, ServiceFacts
from . import balance, concepts, httpget, run

SHARE_COUNT = 30  # requests that show a non-first service's rr/wrr split
STICKY_ROUNDS = 3  # connections from each client address
HELD = 3  # connections left open on one real server for lc/wlc/sed/nq
NEW = 6  # new connections judged against the director's counts (far below 256, an active connection's cost)
TIMEOUT = 10.0  # per connection of an experiment: slow emulated VMs
SHARE_TIMEOUT = 5.0  # per request of the share traffic (10 at once: a dead service costs 3 x this)


def counters(rlab: ResolvedLab, settled: bool = False) -> dict:
    """{service: {real server node: IPVS counters}} of every service, read from its director."""
    out = {}
    read = ipvs.read_services_settled if settled else ipvs.read_services
    with Session() as s:
        by_ns = {}
        for svc in rlab.services:
            ns = rlab.ns(svc.director)
            if ns not in by_ns:
                by_ns[ns] = read(s, ns)
            out[svc.name] = _dests(svc, by_ns[ns], lambda d: d["stats"])
    return out


def _dests(svc: ServiceFacts, services: list, pick) -> dict:
    node_of = {str(r.address): r.node for r in svc.real_servers}
    for found in services:
        if found["vip"] == str(svc.vip) and found["port"] == svc.port and found["protocol"] == svc.protocol:
            return {node_of.get(d["address"], d["address"]): pick(d) for d in found["real_servers"]}
    return {}


def checks(rlab: ResolvedLab, client: str, primary: ServiceFacts | None, traffic: dict, before: dict,
           primary_results: list) -> list:
    """Per service: the scheduler's proof and the director's bytes. The first service's traffic (and its
    share check, among primary_results) come from verify's own run, with counters `before` it; the other
    services get theirs here: requests for a share (rr, wrr, and those with no experiment) and the bytes
    they moved, else the scheduler's experiment alone."""
    many = len(rlab.services) > 1
    answered, results = {}, []
    for r in primary_results:
        if primary and many and r.name == "scheduler":
            r.name = f"scheduler:{primary.name}"
    for svc in rlab.services:
        t = traffic if primary and svc.name == primary.name else None
        if t is None and concepts.experiment(svc):
            continue  # its experiment below is its traffic and its proof
        if t is None:
            t = run.send(rlab, client, run.pick_target(rlab, svc.name), SHARE_COUNT, 10, SHARE_TIMEOUT)
            if t.get("ok", 0) < SHARE_COUNT:
                results.append(_unanswered(svc, t))
            else:
                results.append(_named(concepts.check_scheduler(svc, t["by_server"]), f"scheduler:{svc.name}"))
        answered[svc.name] = t.get("ok", 0)
    after = counters(rlab, settled=True)  # one fold for every service's traffic
    for svc in rlab.services:
        if svc.name not in answered:
            continue
        delta = {rs: {k: v - before.get(svc.name, {}).get(rs, {}).get(k, 0) for k, v in stats.items()}
                 for rs, stats in after.get(svc.name, {}).items()}
        results.append(balance.check_director_bytes(_name("director-bytes", svc, many), svc, delta,
                                                    answered[svc.name], _reply_bytes(rlab, svc)))
    for svc in rlab.services:
        kind = concepts.experiment(svc)
        name = _name("scheduler", svc, many)
        if kind == "sticky":
            results.append(_sticky(rlab, svc, client, name))
        elif kind == "least":
            results.append(_least(rlab, svc, client, name))
    return results


def _unanswered(svc, t):
    errors = ", ".join(f"{k} {v}" for k, v in sorted((t.get("errors") or {}).items())) or t.get("error", "")
    return concepts.Result(f"answers:{svc.name}", False, f"{svc.name}: {t.get('ok', 0)} of {SHARE_COUNT} requests to "
                           f"{svc.target} answered ({errors}); `nslab why LAB client {svc.name}` shows where "
                           "they stop", [])


def _name(check, svc, many):
    return f"{check}:{svc.name}" if many else check


def _named(result, name):
    result.name = name
    return result


def _reply_bytes(rlab, svc) -> int:
    """The smallest reply body a real server of svc sends (its app's reply_size, else its name's line)."""
    sizes = [(app.reply_size or len(app.node) + 1) for r in svc.real_servers if (app := rlab.app(r.node))]
    return min(sizes, default=1)


def _client_addresses(rlab, client):
    node = rlab.topology.node(client)
    return [str(a.ip) for i in node.interfaces if i.name != "lo" for a in i.addresses]


def _sticky(rlab, svc, client, name):
    addresses = _client_addresses(rlab, client)
    if len(addresses) < 2:
        return concepts.skip(name, f"{svc.scheduler}{' with persistence' if svc.persistence else ''}: comparing "
                             f"needs several client addresses: give {client} more (interfaces.eth0.addresses: "
                             "[...]), each landing on one real server every time")
    landed = {}
    ns = rlab.ns(client)
    try:
        for addr in addresses:
            landed[addr] = [_get(ns, svc, source=addr)[1] for _ in range(STICKY_ROUNDS)]
    except OSError as exc:
        return concepts.Result(name, False, f"{svc.scheduler}: a connection from {addr} to {svc.target} failed: "
                               f"{exc}", [f"{a}: {' '.join(s)}" for a, s in landed.items()])
    return balance.check_sticky(name, svc, landed)


def _least(rlab, svc, client, name):
    ns, director = rlab.ns(client), rlab.ns(svc.director)
    held, loaded, steps = [], None, []
    try:
        try:
            for _ in range(HELD * len(svc.real_servers) * 3):
                sock, server = _get(ns, svc, keep=True)
                held.append((sock, server))
                loaded = loaded or server
                if sum(1 for _, s in held if s == loaded) >= HELD:
                    break
            for sock, server in held:
                if server != loaded:
                    sock.close()
            time.sleep(0.2)  # the closes' FINs pass the director: those connections turn inactive
            for _ in range(NEW):
                table = _table(director, svc)
                steps.append((table, _get(ns, svc)[1]))
        finally:
            for sock, _ in held:
                sock.close()
    except OSError as exc:
        return concepts.Result(name, False, f"{svc.scheduler}: a connection to {svc.target} failed: {exc}", [])
    return balance.check_least(name, svc, loaded, sum(1 for _, s in held if s == loaded), steps)


def _table(director_ns, svc):
    with Session() as s:
        found = ipvs.read_services(s, director_ns)
    return _dests(svc, found, lambda d: balance.Load(d["active"], d["inactive"], d["weight"]))


def _get(ns, svc, source=None, keep=False):
    """(the open socket if keep, else None; the real server that answered). Raises OSError."""
    sock, headers, _ = httpget.get(ns, str(svc.vip), svc.port, source=source, keep=keep, timeout=TIMEOUT)
    return sock, headers.get("x-served-by", "?")
