"""Layer 4 against layer 7, from the servers' own view: each reply names the peer the server accepted (our
http app's X-Client). Through IPVS that peer is the client's own socket (one TCP connection end to end);
through the proxy it is the proxy (two connections, the second the proxy's own). And the proxy chooses
by path, which IPVS, seeing no HTTP, cannot."""

from ..model.resolve import ProxyFacts, ResolvedLab
from .concepts import Result
from .httpget import get

ROUNDS = 4  # requests per path, per way in


def measure(rlab: ResolvedLab, client: str) -> list:
    """One Result per proxy."""
    return [_one(rlab, client, p) for p in rlab.proxies]


def _service_of(rlab, p: ProxyFacts):
    """The IPVS service in front of the same servers, if the lab has one (TCP)."""
    mine = {n for n, _, _ in p.servers}
    return next((s for s in rlab.services if s.protocol == "tcp" and {r.node for r in s.real_servers} & mine), None)


def _ask(ns, ip, port, path):
    """(our end, the server that answered, the peer it saw)."""
    _, headers, local = get(ns, ip, port, path)
    return local, headers.get("x-served-by", "?"), headers.get("x-client", "?")


def _one(rlab, client, p: ProxyFacts) -> Result:
    name, ns = f"l4-l7:{p.node}", rlab.ns(client)
    paths = ["/"] + [prefix for prefix, _ in p.paths]
    try:
        via_proxy = {path: [_ask(ns, str(p.address), p.port, path) for _ in range(ROUNDS)] for path in paths}
        svc = _service_of(rlab, p)
        via_ipvs = ({path: [_ask(ns, str(svc.vip), svc.port, path) for _ in range(ROUNDS)] for path in paths}
                    if svc else {})
    except OSError as exc:
        return Result(name, False, f"a request from {client} failed: {exc}", [])
    return judge(name, p, str(p.address), via_proxy, svc.name if svc else None, via_ipvs)


def judge(name, p: ProxyFacts, proxy_ip: str, via_proxy: dict, service: str | None, via_ipvs: dict) -> Result:
    """via_*: {path: [(our end, server, the peer the server saw)]}."""
    ev = [f"proxy {path}: client {c} -> {s} saw {peer}" for path, rows in via_proxy.items() for c, s, peer in rows]
    ev += [f"IPVS {path}: client {c} -> {s} saw {peer}" for path, rows in via_ipvs.items() for c, s, peer in rows]
    proxied = [r for rows in via_proxy.values() for r in rows]
    direct = [(c, peer) for c, _, peer in proxied if peer.split(":")[0] != proxy_ip]
    if direct:
        c, peer = direct[0]
        return Result(name, False, f"through {p.node} a server saw {peer}, not the proxy {proxy_ip}: the proxy "
                      "should end the client's connection and open its own", ev)
    for prefix, node in p.paths:
        got = {s for _, s, _ in via_proxy[prefix]}
        if got != {node}:
            return Result(name, False, f"{p.node} sent {prefix} to {', '.join(sorted(got))}, the lab's path rule "
                          f"says {node} (nodes.{p.node}.proxy.paths)", ev)
    c, s, peer = proxied[0]
    says = [f"through the proxy two TCP connections ({c} -> {p.node}, then {peer} -> {s}: the server sees "
            f"{p.node}, not the client)"]
    if p.paths:
        says.append("the proxy read each path and chose: " + ", ".join(f"{x} -> {n}" for x, n in p.paths))
    if service:
        rows = [r for rows in via_ipvs.values() for r in rows]
        moved = [(c, peer) for c, _, peer in rows if c != peer]
        if moved:
            c, peer = moved[0]
            return Result(name, False, f"through IPVS ({service}) the server saw {peer}, but the client's end was "
                          f"{c}: IPVS forwards the client's own connection and should not change it", ev)
        says.insert(0, f"through IPVS ({service}) one TCP connection end to end (the server saw the client's own "
                    f"{rows[0][0]})")
        for prefix, node in p.paths:
            spread = sorted({s for _, s, _ in via_ipvs[prefix]})
            if len(spread) > 1:
                says.append(f"IPVS sent {prefix} to {', '.join(spread)}: it never sees the path")
    return Result(name, True, "; ".join(says), ev)
