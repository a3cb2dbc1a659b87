"""`nslab verify`, `trace` and `graph`: argument parsing and printing over nslab.api."""

import json
import os

from .cli import lazy_module
from .errors import CheckFailed, UsageError

api = lazy_module("nslab.api")


def cmd_verify(args):
    report = api.verify(args.lab, args.count)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines(evidence=args.evidence)))
    if not report.ok:
        raise CheckFailed(f"{len(report.failed)} of {len(report.results)} checks failed in lab '{report.lab}'")
    return 0


def cmd_trace(args):
    trace = api.trace(args.lab, args.source, args.target)
    if args.pcap:
        _writing(args.pcap, lambda: trace.write_pcaps(args.pcap))
    if args.svg:
        _writing(args.svg, lambda: trace.write_svg(args.svg))
    print(json.dumps(trace.as_dict(), indent=2) if args.json else str(trace))
    if not trace.ok:
        raise CheckFailed(trace.walk.broke)
    return 0


def cmd_why(args):
    report = api.why(args.lab, args.source, args.target)
    print(json.dumps(report.as_dict(), indent=2) if args.json else str(report))
    if not report.ok:
        raise CheckFailed(report.finding.headline)
    return 0


def cmd_graph(args):
    arg = args.lab
    topo = api.load_topology(arg) if arg.endswith((".yaml", ".yml")) or os.path.sep in arg else api.topology_of(arg)
    if not args.svg:
        raise UsageError("graph needs --svg FILE")
    from .verify import export
    _writing(args.svg, lambda: export.write_graph(topo, args.svg))
    print(f"wrote {args.svg}")
    return 0


def _writing(path, write):
    """write() an output file the user named: a path that can't be written is theirs to fix (exit 2), where
    it was an OSError traceback."""
    try:
        write()
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


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
    sp = cmd("why", cmd_why, "send a probe and say where it stops, the kernel's reason (route, sysctl, counter) "
             "and the fix in the lab's YAML; exit 0 when it is answered")
    sp.add_argument("lab", help="lab name, or a topology file (brought up and down again if it isn't up)")
    sp.add_argument("source", metavar="FROM", help="node to send from")
    sp.add_argument("target", metavar="TARGET", help="service name, IP:PORT, or node name")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = cmd("graph", cmd_graph, "draw the topology: nodes, switches, addresses, services")
    sp.add_argument("lab", help="lab name or topology file")
    sp.add_argument("--svg", metavar="FILE", help="SVG file to write")
