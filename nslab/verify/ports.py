"""A connection is its 4-tuple: many connections from one client to one server port, held open at once, each
with a client port of its own. Proven from the SYNs captured on the links and the server's own socket table
(as `ss -tan` shows it), read while every connection is still open; to a service, also from the director's
IPVS connection table (as `ipvsadm -Lnc` shows it), one entry per client port, and the real servers' tables."""

import errno
import socket

from ..kernel import inspect, ipvs, netns
from .concepts import Result
from .sniff import Capture
from .walk import transmissions

CONNECT_TIMEOUT = 3.0
QUIET = 0.3
ESTABLISHED = "01"


def _target(lab, to: str) -> tuple[str, int] | None:
    """(ip, port) of a node's app, or of IP:PORT."""
    app = lab.app(to) if lab.topology.has_node(to) else None
    if app:
        return str(app.address), app.port
    ip, sep, port = to.rpartition(":")
    return (ip, int(port)) if sep and port.isdigit() else None


def _open(ns: str, ip: str, port: int, count: int) -> tuple[list, dict]:
    """(connected sockets, {error name: how many}) of `count` connects from inside ns, all held open."""
    with netns.entered(ns):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    opened, failed = [], {}
    for s in socks:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect((ip, port))
            opened.append(s)
        except OSError as e:
            s.close()
            kind = f"{errno.errorcode.get(e.errno, 'timeout')} ({e.strerror})" if e.errno else "a timeout"
            failed[kind] = failed.get(kind, 0) + 1
    return opened, failed


def _servers(lab, svc, ip: str, port: int) -> list[tuple[str, str, int]]:
    """(node, local ip, local port) where the connections end: the node holding ip:port, or for a service
    each real server, on its own address (NAT) or on the VIP (DR, TUN)."""
    if svc is None:
        return [(n, ip, port) for n in list(lab.holders(ip))[:1]]
    nat = svc.method.value == "nat"
    return [(r.node, str(r.address) if nat else ip, r.port if nat else port) for r in svc.backends if r.address]


def _ipvs_rows(lab, svc, ip: str, port: int, clients: set) -> dict[int, dict]:
    """{client port: entry} of the director's IPVS connection table for ip:port, from the client addresses
    (empty without a service)."""
    if svc is None:
        return {}
    return {int(c["client"].rpartition(":")[2]): c for c in ipvs.read_connections(lab.ns(svc.director))
            if c["vip"] == f"{ip}:{port}" and c["protocol"] == "tcp" and c["client"].rpartition(":")[0] in clients}


def check(i: int, exp, lab) -> Result:
    """expect[i] with `connections: N`: N connections from exp.sender to exp.to, open at the same time."""
    name, count = f"expect[{i}].connections", exp.connections
    svc = lab.service(exp.to)
    target = (str(svc.vip), svc.port) if svc else _target(lab, exp.to)
    if target is None:
        return Result(name, False, f"{exp.to} is not a node with an app, a service or IP:PORT: no port to connect to")
    ip, port = target
    servers = _servers(lab, svc, ip, port)
    server = ", ".join(n for n, _, _ in servers) or None
    ns = lab.ns(exp.sender)
    cap = Capture(lab.taps, max_seconds=60).start()
    opened, table = [], {}
    try:
        opened, failed = _open(ns, ip, port, count)
        ports = sorted(s.getsockname()[1] for s in opened)
        cap.wait_quiet(QUIET)
        table = _ipvs_rows(lab, svc, ip, port, {s.getsockname()[0] for s in opened})
        rows = [(node, r) for node, lip, lport in servers for r in inspect.tcp_connections(lab.ns(node))
                if (r[0], r[1]) == (lip, lport)]
    finally:
        for s in opened:
            s.close()
        frames = cap.stop()
    syns = sorted({f.ip.sport for f in transmissions(frames) if f.sender == exp.sender and f.ip
                   and f.ip.proto == "tcp" and f.ip.flags == "S" and (f.ip.dst, f.ip.dport) == (ip, port)})
    at_server = {(r[2], r[3]): (node, f"{r[0]}:{r[1]}") for node, r in rows if r[4] == ESTABLISHED}
    seen_ports = {p for _, p in at_server}

    def row(p):
        line = f"{exp.sender} port {p}: SYN {'captured' if p in syns else 'NOT captured'}"
        if svc:
            c = table.get(p)
            line += (f"; {svc.director}'s IPVS table: {c['client']} -> {c['vip']} -> {c['real_server']} {c['state']}"
                     if c else f"; {svc.director}'s IPVS table: no entry")
        found = next(((a, node, local) for (a, q), (node, local) in sorted(at_server.items()) if q == p), None)
        return line + (f"; {found[1]}'s socket table: {found[2]} <- {found[0]}:{p} ESTABLISHED" if found
                       else f"; {server}'s socket table: no row")
    ev = [row(p) for p in ports]
    if failed:
        kind, n = max(failed.items(), key=lambda kv: kv[1])
        limit = inspect.sysctls(ns, ["net.ipv4.ip_local_port_range"]).get("net.ipv4.ip_local_port_range")
        hint = (f": {exp.sender} has local ports {limit.replace(chr(9), '-')} (ip_local_port_range) and each "
                f"connection to {ip}:{port} needs one of its own; ports are a resource" if "EADDRNOTAVAIL" in kind
                and limit else "")
        return Result(name, False, f"only {len(opened)} of {count} connections to {ip}:{port} opened; {n} connect() "
                      f"failed with {kind}{hint}", ev)
    missing = [p for p in ports if p not in seen_ports]
    if len(set(ports)) != count or missing:
        return Result(name, False, f"{count} connections opened from ports {ports[:5]}..., but {server}'s socket "
                      f"table lacks {len(missing)} of them (e.g. port {missing[:1]})", ev)
    if set(syns) != set(ports):
        return Result(name, False, f"the SYNs captured ({len(syns)}) are not the {count} connections opened", ev)
    sources = sorted({a for a, _ in at_server})
    ends = sorted({local for _, local in at_server.values()})
    if svc:
        absent = [p for p in ports if p not in table]
        if absent:
            return Result(name, False, f"{len(absent)} of the {count} client ports have no entry in "
                          f"{svc.director}'s IPVS connection table for {ip}:{port} (e.g. port {absent[0]})", ev)
        split = {}
        for p in ports:
            rs = table[p]["real_server"]
            split[rs] = split.get(rs, 0) + 1
        return Result(name, True, f"{count} connections open at once from {exp.sender} to service {svc.name} "
                      f"({ip}:{port}), each from its own client port ({ports[0]}-{ports[-1]}); {svc.director}'s IPVS "
                      f"connection table holds one entry per client port (to "
                      f"{', '.join(f'{rs} x{n}' for rs, n in sorted(split.items()))}), and the real servers' "
                      f"socket tables the same {count} client ports ({', '.join(ends)}): IPVS keeps a connection by "
                      "its client's 4-tuple too", ev)
    return Result(name, True, f"{count} connections open at once from {exp.sender} to {ip}:{port}, each from its "
                  f"own client port ({ports[0]}-{ports[-1]}); {server}'s socket table holds the same {count} 4-tuples "
                  f"({', '.join(sources)}:PORT -> {ip}:{port}): one server port, told apart by the client port", ev)
