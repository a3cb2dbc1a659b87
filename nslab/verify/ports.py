"""A connection is its 4-tuple: many connections from one client to one server port, held open at once, each
with a client port of its own. Proven from the SYNs captured on the links and the server's own socket table
(as `ss -tan` shows it), read while every connection is still open."""

import errno
import socket

from ..kernel import inspect, netns
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


def check(i: int, exp, lab) -> Result:
    """expect[i] with `connections: N`: N connections from exp.sender to exp.to, open at the same time."""
    name, count = f"expect[{i}].connections", exp.connections
    target = _target(lab, exp.to)
    if target is None:
        return Result(name, False, f"{exp.to} is not a node with an app or IP:PORT: no port to connect to")
    ip, port = target
    server = next(iter(lab.holders(ip)), None)
    ns = lab.ns(exp.sender)
    cap = Capture(lab.taps, max_seconds=60).start()
    opened = []
    try:
        opened, failed = _open(ns, ip, port, count)
        ports = sorted(s.getsockname()[1] for s in opened)
        cap.wait_quiet(QUIET)
        rows = inspect.tcp_connections(lab.ns(server)) if server else []
    finally:
        for s in opened:
            s.close()
        frames = cap.stop()
    syns = sorted({f.ip.sport for f in transmissions(frames) if f.sender == exp.sender and f.ip
                   and f.ip.proto == "tcp" and f.ip.flags == "S" and (f.ip.dst, f.ip.dport) == (ip, port)})
    at_server = {(r[2], r[3]) for r in rows if (r[0], r[1]) == (ip, port) and r[4] == ESTABLISHED}
    seen_ports = {p for _, p in at_server}
    ev = [f"{exp.sender} port {p}: SYN {'captured' if p in syns else 'NOT captured'}; {server}'s socket table: "
          + next((f"{ip}:{port} <- {a}:{p} ESTABLISHED" for a, q in sorted(at_server) if q == p), "no row")
          for p in ports]
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
    return Result(name, True, f"{count} connections open at once from {exp.sender} to {ip}:{port}, each from its "
                  f"own client port ({ports[0]}-{ports[-1]}); {server}'s socket table holds the same {count} 4-tuples "
                  f"({', '.join(sources)}:PORT -> {ip}:{port}): one server port, told apart by the client port", ev)
