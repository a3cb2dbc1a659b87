"""What each IPVS scheduler must do, judged on what a running service did (pure: the observations come from
verify/services.py): the bytes its director carried, where several client addresses landed (sh, mh, dh,
persistence), and each new connection's real server against the director's own counts before it (lc, wlc,
sed, nq)."""

from dataclasses import dataclass
from fractions import Fraction

from ..model.resolve import ServiceFacts
from ..model.schema import Forward
from .concepts import Result, skip


def check_director_bytes(name: str, svc: ServiceFacts, delta: dict, answered: int, reply_bytes: int) -> Result:
    """delta: {real server: IPVS counter increase} over traffic that got `answered` replies of at least
    `reply_bytes` body bytes each. NAT carries every reply back through the director; DR and TUN none."""
    bytes_in = sum(r.get("inbytes", 0) for r in delta.values())
    bytes_out = sum(r.get("outbytes", 0) for r in delta.values())
    ev = [f"{rs}: {r.get('conns', 0)} conns, {r.get('inpkts', 0)} pkts / {r.get('inbytes', 0)} B in, "
          f"{r.get('outpkts', 0)} pkts / {r.get('outbytes', 0)} B out" for rs, r in sorted(delta.items())]
    if not answered or not bytes_in:
        return skip(name, f"nothing to compare: {answered} answers, the director's counters moved by "
                    f"{bytes_in} B in", ev)
    least = answered * reply_bytes
    d, method = svc.director, svc.method.value.upper()
    if svc.method is Forward.NAT:
        if bytes_out < least:
            return Result(name, False, f"NAT: {answered} replies of {reply_bytes}+ B each, yet only {bytes_out} B "
                          f"left {d} towards the clients: in LVS NAT every reply must cross the director", ev)
        return Result(name, True, f"NAT: {d} carried {bytes_in} B of requests in and {bytes_out} B of replies out "
                      f"({bytes_out / bytes_in:.1f}x): every reply byte crosses the director", ev)
    if bytes_out:
        return Result(name, False, f"{method}: {bytes_out} B of replies crossed {d}: the real servers must answer "
                      "the client directly", ev)
    size = f" of {reply_bytes}+ B" if reply_bytes >= 1000 else ""
    return Result(name, True, f"{method}: {d} carried {bytes_in} B of requests in and 0 B out for {answered} "
                  f"replies{size}: they went from the real servers straight to the client", ev)


def check_sticky(name: str, svc: ServiceFacts, landed: dict) -> Result:
    """landed: {client address: [real server of each connection, in order]}."""
    how = _sticky_reason(svc)
    ev = [f"{addr}: " + " ".join(servers) for addr, servers in landed.items()]
    moved = {a: s for a, s in landed.items() if len(set(s)) > 1}
    if moved:
        addr, servers = next(iter(moved.items()))
        return Result(name, False, f"{svc.scheduler}{_p(svc)}: connections from {addr} went to "
                      f"{' then '.join(dict.fromkeys(servers))}; {how}", ev)
    firsts = {s[0] for s in landed.values() if s}
    live = [r.node for r in svc.real_servers if r.weight > 0]
    n = len(landed)
    if svc.scheduler == "dh" and not svc.persistence:
        if len(firsts) > 1:
            return Result(name, False, f"dh: clients of one VIP landed on {', '.join(sorted(firsts))}; {how}", ev)
        return Result(name, True, f"dh: all {n} client addresses landed on {firsts.pop()}: {how}", ev)
    # rr/wrr behind persistence hands each new client the next server: it must spread. A hash (sh, mh)
    # puts n addresses on one of two servers by chance once in 2^(n-1); from 4 addresses on it is judged.
    judged = len(live) > 1 and (svc.scheduler not in ("sh", "mh") or n >= 4)
    if judged and len(firsts) < 2:
        return Result(name, False, f"{svc.scheduler}{_p(svc)}: all {n} client addresses landed on "
                      f"{firsts.pop()}: different clients should spread over {', '.join(live)}", ev)
    spread = f"{n} client addresses spread over {', '.join(sorted(firsts))}"
    return Result(name, True, f"{svc.scheduler}{_p(svc)}: each client address kept its real server "
                  f"({spread}); {how}", ev)


def _p(svc):
    return f" with persistence {svc.persistence} s" if svc.persistence else ""


def _sticky_reason(svc):
    if svc.persistence:
        return "persistence keeps one client on one real server"
    return {"dh": "dh hashes the destination (the VIP), so every client goes to one real server",
            "mh": "mh (Maglev) hashes the client's address to one real server",
            "sh": "sh hashes the client's address to one real server"}[svc.scheduler]


@dataclass(frozen=True)
class Load:
    """One real server in the director's table: what lc, wlc, sed and nq look at."""

    active: int
    inactive: int
    weight: int


def choice(scheduler: str, table: dict) -> set:
    """The real servers the kernel's scheduler would pick from table {node: Load} (all of a tie)."""
    live = {n: d for n, d in table.items() if d.weight > 0}
    if not live:
        return set()
    if scheduler == "nq":
        idle = {n for n, d in live.items() if d.active == 0}
        if idle:
            return idle  # never queue: an idle server takes it at once
    if scheduler == "lc":
        cost = {n: Fraction(d.active * 256 + d.inactive) for n, d in live.items()}  # ip_vs_dest_conn_overhead
    elif scheduler == "wlc":
        cost = {n: Fraction(d.active * 256 + d.inactive, d.weight) for n, d in live.items()}
    else:  # sed, and nq with no idle server: the shortest expected delay
        cost = {n: Fraction(d.active + 1, d.weight) for n, d in live.items()}
    low = min(cost.values())
    return {n for n, c in cost.items() if c == low}


def _table_line(table):
    return ", ".join(f"{n} {d.active} active/{d.inactive} inactive (weight {d.weight})"
                     for n, d in sorted(table.items()))


def check_least(name: str, svc: ServiceFacts, loaded: str | None, held: int, steps: list) -> Result:
    """steps: [(director's table before the connection, real server it went to)], after `held` connections
    were left open on `loaded` (the others closed)."""
    live = [r.node for r in svc.real_servers if r.weight > 0]
    if len(live) < 2:
        return skip(name, f"{svc.scheduler}: needs two real servers with weight > 0 to choose between", [])
    if not loaded or not steps:
        return skip(name, f"{svc.scheduler}: could not hold connections open on one real server", [])
    ev = [f"{loaded} holds {held} open connection(s)"]
    wrong = []
    for k, (table, went) in enumerate(steps, 1):
        want = choice(svc.scheduler, table)
        ev.append(f"new connection {k}: table {_table_line(table)} -> {svc.scheduler} picks "
                  f"{'/'.join(sorted(want))}; went to {went}")
        if went not in want:
            wrong.append((k, table, want, went))
    if wrong:
        k, table, want, went = wrong[0]
        return Result(name, False, f"{svc.scheduler}: new connection {k} went to {went}, but with the director's "
                      f"table at {_table_line(table)} {svc.scheduler} picks {'/'.join(sorted(want))}", ev)
    got = {}
    for _, went in steps:
        got[went] = got.get(went, 0) + 1
    split = ", ".join(f"{n} {c}" for n, c in sorted(got.items()))
    rr = len(steps) // len(live)
    return Result(name, True, f"{svc.scheduler}: with {held} connection(s) held open on {loaded}, the next "
                  f"{len(steps)} new ones went {split}, each where the director's counts say (rr would have "
                  f"given {loaded} {rr})", ev)


def check_expected_share(i: int, exp, svc: ServiceFacts, by_server: dict) -> Result:
    """A lab's `expect: [{to: SERVICE, share: {rs: weight}}]`, judged on the answers per real server."""
    name, n = f"expect[{i}]", sum(by_server.values())
    want = dict(exp.share)
    total = sum(want.values())
    slack = 2 * max(1, -(-n // 60))
    ev = [f"{rs}: got {by_server.get(rs, 0)}, expected {n * w / total:.1f} ±{slack}" for rs, w in want.items()]
    said = ", ".join(f"{rs} {w}" for rs, w in want.items())
    if not n:
        return Result(name, False, f"{exp.sender} -> {exp.to}: no answer to compare with the share {said}", ev)
    for rs, w in want.items():
        expected = n * w / total
        if abs(by_server.get(rs, 0) - expected) > slack:
            weights = {r.node: r.weight for r in svc.real_servers}
            set_ = ", ".join(f"{k} {v}" for k, v in weights.items())
            return Result(name, False, f"{exp.sender} -> {exp.to}: {rs} answered {by_server.get(rs, 0)} of {n}, the "
                          f"lab expects {expected:.1f} ±{slack} (share {said}); the service runs {svc.scheduler} "
                          f"with weights {set_}: services.{svc.name}.real_servers.{rs}.weight", ev)
    return Result(name, True, f"{exp.sender} -> {exp.to}: {n} answers split as the share {said} says", ev)
