"""CLI glue for verify, trace and graph (registered by nslab.cli): run traffic under the sniffers, then print."""

import json
import os
import sys
import time
from dataclasses import dataclass

from ..errors import CheckFailed, UsageError
from ..model.schema import Forward, Topology
from ..plan import names

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


def observe(lab: str, client: str, target: Target, count: int = 3, timeout: float = 2.0):
    """Flush neighbour caches, sniff every link, send `count` requests from client; (frames, traffic, capture)."""
    from .. import api
    from .capture import Capture, taps_for
    from ..kernel import addrs
    from ..kernel.session import Session
    topo = api.topology_of(lab)
    with Session() as s:
        for node in topo.nodes:  # so every first packet to a neighbour needs ARP again
            addrs.flush_neighbours(s, names.node_ns(lab, node.name))
    cap = Capture(taps_for(topo, lab), max_seconds=60 + count * timeout).start()
    try:
        argv = [sys.executable, "-m", "nslab.verify.traffic", target.kind, "--target", f"{target.ip}:{target.port}",
                "--count", str(count), "--timeout", str(timeout), "--concurrency", str(min(count, CONCURRENCY))]
        proc = api.run(lab, client, argv, capture_output=True, text=True, timeout=30 + count * timeout)
        seen = -1
        while cap.seen != seen:  # wait for quiet, not for a fixed time: the last FIN/ACKs
            seen = cap.seen
            time.sleep(QUIET_SECONDS)
    finally:
        frames = cap.stop()
    try:
        traffic = json.loads(proc.stdout)
    except ValueError:
        traffic = {"error": (proc.stderr or proc.stdout).strip()[-300:]}
    return frames, traffic, cap


def analyse(lab: str, client: str, target: Target, frames, traffic):
    """(walk, net, checks results) for frames of a running lab."""
    from .. import api
    from . import checks, walk
    topo = api.topology_of(lab)
    net = walk.Net(topo, walk.macs_from_status(api.status(lab, settle=False)))
    ports = traffic.get("client_ports") or []
    w = walk.walk(frames, net, client, proto="udp" if target.kind == "udp" else "tcp",
                  sport=ports[0] if ports else None)
    ctx = checks.Context(net, frames, w, traffic, target.service, rp_filter=_rp_filters(lab, target.service))
    return w, net, checks.run_checks(ctx)


def _rp_filters(lab, svc):
    """{real server: effective rp_filter on tunl0} for TUN services, read from the running kernel."""
    from ..kernel import sysctl
    if not svc or svc.forward is not Forward.TUN:
        return {}
    out = {}
    for rs in svc.real_servers:
        ns = names.node_ns(lab, rs.node)
        values = [sysctl.read(ns, f"net.ipv4.conf.{scope}.rp_filter") for scope in ("all", "tunl0")]
        out[rs.node] = max(int(v) for v in values if v is not None)  # the kernel uses max(all, dev)
    return out


def _ensure_up(arg: str):
    """(lab name, brought_up) — ups the lab from a file if it isn't up already."""
    from .. import api, state
    if arg.endswith((".yaml", ".yml")) or os.path.sep in arg:
        topo = api.load(arg)
        if state.load(topo.name):
            return topo.name, False
        api.up(topo)
        return topo.name, True
    api.topology_of(arg)  # raises UsageError for a lab that isn't up
    return arg, False


def cmd_verify(args):
    from .. import api
    lab, brought = _ensure_up(args.lab)
    try:
        started = time.monotonic()
        topo = api.topology_of(lab)
        client, target = pick_client(topo), pick_target(topo)
        count = args.count or (60 if target.service else 3)
        frames, traffic, cap = observe(lab, client, target, count=count)
        w, net, results = analyse(lab, client, target, frames, traffic)
        results += _expectations(lab, topo)
        seconds = time.monotonic() - started
    finally:
        if brought:
            api.down(lab)
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"lab": lab, "client": client, "target": f"{target.ip}:{target.port}",
                          "traffic": traffic, "frames": len(frames), "seconds": round(seconds, 2),
                          "checks": [r.as_dict() for r in results], "ok": not failed}, indent=2))
    else:
        print(f"verify {lab}: {count} {target.kind} request(s) {client} -> {target.ip}:{target.port}; "
              f"{traffic.get('ok', 0)} answered, {len(frames)} frames on {len(cap.taps)} links, "
              f"{seconds:.1f} s")
        for r in results:
            print(f"{'PASS' if r.ok else 'FAIL'} {r.name:<21} {r.summary}")
            for line in r.evidence[: (12 if not r.ok or args.evidence else 0)]:
                print(f"     {line}")
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} checks failed in lab '{lab}'")
    return 0


def _expectations(lab, topo) -> list:
    """The topology's own `expect:` entries, each observed with a few requests of its own."""
    from . import checks
    out = []
    for i, exp in enumerate(topo.expect):
        target = pick_target(topo, exp.to)
        frames, traffic, _ = observe(lab, exp.frm, target, count=1)
        w, _, _ = analyse(lab, exp.frm, target, frames, traffic)
        out.append(checks.check_expectation(i, exp, w, traffic))
    return out


def format_walk(w) -> list:
    """The hop table: two lines a hop, readable at a glance."""
    lines = [f"{'#':>2}  {'kind':<7} {'link':<18} {'from -> to':<22} packet"]
    for h in w.hops:
        f = h.frame
        lines.append(f"{h.n:>2}  {h.kind:<7} {f.link:<18} {h.sender + ' -> ' + h.receiver:<22} {f.summary()}")
        lines.append(f"{'':>4}{'':<8}{f.src_mac} -> {f.dst_mac}" + (f"   {h.note}" if h.note else ""))
    if w.broke:
        lines.append(f"BROKEN: {w.broke}")
    return lines


def cmd_trace(args):
    from .. import api
    topo = api.topology_of(args.lab)
    if not topo.has_node(args.source):
        raise UsageError(f"lab '{args.lab}' has no node '{args.source}'")
    target = pick_target(topo, args.target)
    frames, traffic, _ = observe(args.lab, args.source, target, count=1)
    w, net, _ = analyse(args.lab, args.source, target, frames, traffic)
    if args.pcap or args.svg:
        from . import export
        if args.pcap:
            export.write_pcaps(frames, args.pcap)
        if args.svg:
            export.write_ladder(w, args.svg, net)
    if args.json:
        print(json.dumps({"lab": args.lab, "from": args.source, "target": f"{target.ip}:{target.port}",
                          "hops": [h.row() for h in w.hops], "broke": w.broke}, indent=2))
    else:
        print(f"trace {args.lab}: {args.source} -> {target.ip}:{target.port} ({target.kind}), "
              f"client port {(traffic.get('client_ports') or ['?'])[0]}")
        print("\n".join(format_walk(w)))
    if w.broke:
        raise CheckFailed(w.broke)
    return 0


def cmd_graph(args):
    from .. import api
    from . import export
    arg = args.lab
    topo = api.load(arg) if arg.endswith((".yaml", ".yml")) or os.path.sep in arg else api.topology_of(arg)
    if not args.svg:
        raise UsageError("graph needs --svg FILE")
    export.write_graph(topo, args.svg)
    print(f"wrote {args.svg}")
    return 0


def add_commands(cmd):
    """cmd(name, func, help) -> argparse subparser; add the verify-side subcommands."""
    sp = cmd("verify", cmd_verify, "send traffic under sniffers and check the lab's concepts from the captures")
    sp.add_argument("lab", help="lab name, or a topology file (brought up and down again if it isn't up)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--count", type=int, help="requests to send (default: 60 for LVS labs, else 3)")
    sp.add_argument("--evidence", action="store_true", help="show the frames behind passed checks too")
    sp = cmd("trace", cmd_trace, "one request and its reply, hop by hop, with what changed at each hop")
    sp.add_argument("lab", help="lab name")
    sp.add_argument("source", metavar="FROM", help="node to send from")
    sp.add_argument("target", metavar="TARGET", help="service name, IP:PORT, or node name")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--pcap", metavar="DIR", help="also write one pcap per link into DIR")
    sp.add_argument("--svg", metavar="FILE", help="also draw the walk as a ladder diagram")
    sp = cmd("graph", cmd_graph, "draw the topology: nodes, switches, addresses, services")
    sp.add_argument("lab", help="lab name or topology file")
    sp.add_argument("--svg", metavar="FILE", help="SVG file to write")
