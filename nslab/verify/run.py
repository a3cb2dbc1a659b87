"""Runs traffic under the lab-wide sniffers and judges what was captured: the engine of verify and trace."""

import json
import sys
import time
from dataclasses import dataclass

from ..errors import UsageError
from ..kernel import addrs, netns, observe as kobserve, procs, sysctl
from ..kernel.session import Session
from ..model.schema import Forward, Topology
from ..plan import names
from . import checks, walk
from .capture import Capture, taps_for

QUIET_SECONDS = 0.2  # after the traffic: wait until no frame arrived for this long (closing FINs in flight)
CONCURRENCY = 10  # requests in flight: a broken lab's timeouts then cost count/10 x timeout, not count x


@dataclass
class Target:
    ip: str
    port: int
    kind: str  # traffic kind: http | tcp-echo | udp
    service: object = None
    node: str | None = None


def pick_client(topo: Topology) -> str:
    """A node named client, else the first that is no director, real server, router or app server."""
    if topo.has_node("client"):
        return "client"
    busy = {s.director for s in topo.services} | {r.node for s in topo.services for r in s.real_servers}
    for n in topo.nodes:
        if n.name not in busy and not n.forward and not n.app:
            return n.name
    raise UsageError(f"lab '{topo.name}' has no node to send from (name one 'client')")


def _app_target(topo: Topology, node) -> Target:
    addr = next((str(a.ip) for i in node.interfaces if i.name != "lo" for a in i.addresses), None)
    if addr is None:
        raise UsageError(f"node '{node.name}' has no address to send to")
    kind = node.app.kind if node.app else "http"
    port = (node.app.port if node.app and node.app.port else None) or (7 if kind == "echo" else 80)
    return Target(addr, port, "tcp-echo" if kind == "echo" else "http", node=node.name)


def _service_target(svc) -> Target:
    return Target(str(svc.vip), svc.port, "udp" if svc.protocol == "udp" else "http", service=svc)


def pick_target(topo: Topology, spec: str | None = None) -> Target:
    """A service name, IP:PORT, or a node name (its first address; 80 for http); default: the
    first service's VIP, else the first node with an app. Raises UsageError."""
    if spec is None:
        if topo.services:
            return _service_target(topo.services[0])
        node = next((n for n in topo.nodes if n.app), None)
        if node is None:
            raise UsageError(f"lab '{topo.name}' has no service and no node with an app to send to")
        return _app_target(topo, node)
    svc = next((s for s in topo.services if s.name == spec), None)
    if svc:
        return _service_target(svc)
    if topo.has_node(spec):
        return _app_target(topo, topo.node(spec))
    ip, sep, port = spec.rpartition(":")
    if sep and port.isdigit():
        svc = next((s for s in topo.services if str(s.vip) == ip and s.port == int(port)), None)
        return Target(ip, int(port), "http", service=svc)
    raise UsageError(f"target '{spec}' is not a service, node or IP:PORT of lab '{topo.name}'")


def observe(topo: Topology, lab: str, client: str, target: Target, count: int = 3, timeout: float = 2.0):
    """Flush neighbour caches, sniff every link, send `count` requests from client; (frames, traffic, capture)."""
    with Session() as s:
        for node in topo.nodes:  # so every first packet to a neighbour needs ARP again
            addrs.flush_neighbours(s, names.node_ns(lab, node.name))
    cap = Capture(taps_for(topo, lab), max_seconds=60 + count * timeout).start()
    try:
        traffic = send(lab, client, target, count, min(count, CONCURRENCY), timeout)
        seen = -1
        while cap.seen != seen:  # wait for quiet, not for a fixed time: the last FIN/ACKs
            seen = cap.seen
            time.sleep(QUIET_SECONDS)
    finally:
        frames = cap.stop()
    return frames, traffic, cap


def send(lab: str, client: str, target: Target, count: int, concurrency: int, timeout: float = 2.0) -> dict:
    """Run the traffic generator inside the client node; its JSON result (or {"error": ...})."""
    argv = [sys.executable, "-m", "nslab.verify.traffic", target.kind, "--target", f"{target.ip}:{target.port}",
            "--count", str(count), "--timeout", str(timeout), "--concurrency", str(concurrency)]
    waves = -(-count // max(1, concurrency))
    proc = procs.capture(names.node_ns(lab, client), argv, timeout=30 + waves * timeout * 2)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr or proc.stdout).strip()[-300:], "ok": 0, "failed": count}


def macs(topo: Topology, lab: str) -> dict:
    """{mac: node} for every interface of the running lab (lo left out)."""
    out = {}
    with Session() as s:
        for node in topo.nodes:
            ns = names.node_ns(lab, node.name)
            if netns.exists(ns):
                for i in kobserve.interfaces(s, ns):
                    if i["mac"] and i["name"] != "lo":
                        out[i["mac"]] = node.name
    return out


def analyse(topo: Topology, lab: str, client: str, target: Target, frames, traffic):
    """(walk, net, checks results) for frames of a running lab."""
    net = walk.Net(topo, macs(topo, lab))
    ports = traffic.get("client_ports") or []
    w = walk.walk(frames, net, client, proto="udp" if target.kind == "udp" else "tcp",
                  sport=ports[0] if ports else None)
    ctx = checks.Context(net, frames, w, traffic, target.service, rp_filter=_rp_filters(lab, target.service))
    return w, net, checks.run_checks(ctx)


def _rp_filters(lab, svc):
    """{real server: effective rp_filter on tunl0} for TUN services, read from the running kernel."""
    if not svc or svc.forward is not Forward.TUN:
        return {}
    out = {}
    for rs in svc.real_servers:
        ns = names.node_ns(lab, rs.node)
        values = sysctl.read_many(ns, [f"net.ipv4.conf.{scope}.rp_filter" for scope in ("all", "tunl0")])
        out[rs.node] = max(int(v) for v in values.values() if v is not None)  # the kernel uses max(all, dev)
    return out


def expectations(topo: Topology, lab: str) -> list:
    """The topology's own `expect:` entries, each observed with a few requests of its own."""
    out = []
    for i, exp in enumerate(topo.expect):
        target = pick_target(topo, exp.to)
        frames, traffic, _ = observe(topo, lab, exp.frm, target, count=1)
        w, _, _ = analyse(topo, lab, exp.frm, target, frames, traffic)
        out.append(checks.check_expectation(i, exp, w, traffic))
    return out
