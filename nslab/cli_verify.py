"""`nslab verify`, `trace` and `graph`: argument parsing and printing over nslab.api and nslab.verify."""

import json
import os
import time

from . import api, state
from .errors import CheckFailed, UsageError
from .verify import export, run


def _ensure_up(arg: str):
    """(lab name, brought_up) — ups the lab from a file if it isn't up already."""
    if arg.endswith((".yaml", ".yml")) or os.path.sep in arg:
        topo = api.load(arg)
        if state.load(topo.name):
            return topo.name, False
        api.up(topo)
        return topo.name, True
    api.topology_of(arg)  # raises UsageError for a lab that isn't up
    return arg, False


def cmd_verify(args):
    lab, brought = _ensure_up(args.lab)
    try:
        started = time.monotonic()
        topo = api.topology_of(lab)
        client, target = run.pick_client(topo), run.pick_target(topo)
        count = args.count or (60 if target.service else 3)
        frames, traffic, cap = run.observe(topo, lab, client, target, count=count)
        w, net, results = run.analyse(topo, lab, client, target, frames, traffic)
        results += run.expectations(topo, lab)
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
    topo = api.topology_of(args.lab)
    if not topo.has_node(args.source):
        raise UsageError(f"lab '{args.lab}' has no node '{args.source}'")
    target = run.pick_target(topo, args.target)
    frames, traffic, _ = run.observe(topo, args.lab, args.source, target, count=1)
    w, net, _ = run.analyse(topo, args.lab, args.source, target, frames, traffic)
    if args.pcap or args.svg:
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
