"""`nslab fail` and `heal`: argument parsing and printing over nslab.api, and the faults part of `status`."""

import argparse
import json
import time

from .cli import lazy_module

api = lazy_module("nslab.api")

EPILOG = """\
what fails:
  nslab fail LAB NODE               the node's lab processes (its app; keepalived on a director): a client
                                    then sees its connections refused, and IPVS keeps sending it new ones
                                    unless a health check takes it out
  nslab fail LAB NODE --link IFACE  that link down; the kernel drops the routes through it (heal puts
                                    them back)
  nslab fail LAB NODE --node        the node dies: every link down, every lab process stopped

Each fault is recorded in the lab's state: `nslab status LAB` shows it, `nslab heal` with the same arguments
undoes exactly it, `nslab up FILE` brings the whole lab back to its file, `nslab down` removes the lab as
usual. Failing what has failed already, or healing what has not, changes nothing and says so (exit 0).
`nslab load LAB -d SECONDS --fail-at S NODE --heal-at S` does it during a load and shows what a client saw.
exit codes: 0 ok, 2 unknown lab, node or link (or nothing to stop), 1 a kernel step failed
"""


def add_commands(sub):
    for name, func, text in (
            ("fail", cmd_fail, "break a node of a running lab on purpose: stop its processes (default), take one "
             "of its links down (--link), or cut every link and stop every process (--node)"),
            ("heal", cmd_heal, "undo exactly what `nslab fail` with the same arguments did: links up again with "
             "the routes the kernel dropped put back, processes started again as `up` starts them")):
        sp = sub.add_parser(name, help=text, description=text, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=func)
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        sp.add_argument("lab", help="lab name")
        sp.add_argument("node", help="node name")
        which = sp.add_mutually_exclusive_group()
        which.add_argument("--link", metavar="IFACE", help="one link of the node, e.g. eth0 (its end goes down, "
                           "so the switch port loses carrier: a pulled cable)")
        which.add_argument("--node", dest="whole_node", action="store_true",
                           help="the whole node: every link down and every lab process stopped")
        sp.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_fail(args):
    return _print(api.fail(api.lab_name(args.lab), args.node, args.link, args.whole_node), args)


def cmd_heal(args):
    return _print(api.heal(api.lab_name(args.lab), args.node, args.link, args.whole_node), args)


def _print(result, args):
    print(json.dumps(result.as_dict(), indent=1) if args.json else result.message)
    return 0


def print_faults(st):
    """The lab's faults, as `status` shows them after its nodes."""
    from . import faults
    from .cli import _table
    if not st.get("faults"):
        return
    print("\nfailed (by `nslab fail`):")
    rows = [("what", "since", "stopped", "links down", "heal with")]
    for f in st["faults"]:
        stopped = ", ".join(f"{p['action']['fields'].get('kind', p['action']['kind'])} (pid {p['pid']})"
                            for p in f["processes"])
        rows.append((faults.what(f["kind"], f["node"], f.get("iface")),
                     f"{time.strftime('%H:%M:%S', time.localtime(f['since']))} ({time.time() - f['since']:.0f} s ago)",
                     stopped or "-", ", ".join(f["links"]) or "-", faults.heal_command(st["lab"], f)))
    _table(rows, indent="  ")
