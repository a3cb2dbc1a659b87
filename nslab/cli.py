"""The `nslab` command: a thin layer over nslab.api; the only place that prints for humans and sets exit codes.

Exit codes: 0 ok, 1 a check or kernel step failed, 2 bad input or usage, 3 the environment lacks something
(or nslab's state under /run/nslab is unsafe), 4 the lab is busy (another up or down holds it; --wait waits).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

from .errors import NslabError


def lazy_module(name: str):
    """The module, imported on first attribute access (the standard library's LazyLoader recipe): `--help`
    and commands that never touch it don't pay for it, which matters in the emulated VM (seconds)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


api = lazy_module("nslab.api")

EPILOG = """\
examples:
  sudo nslab up topologies/routing.yaml        build a lab (idempotent)
  sudo nslab exec routing host1 -- ping -c1 192.168.2.10
  sudo nslab status routing                    nodes, interfaces, addresses, MACs (and IPVS counters)
  sudo nslab verify routing                    send traffic, sniff every link, PASS/FAIL per concept
  sudo nslab trace routing host1 host2         one request and its reply, hop by hop
  sudo nslab load dr -n 1000 -c 50             rate, latency, share per real server, bytes via the director
  sudo nslab fail dr rs1 ; sudo nslab heal dr rs1   stop rs1's app, then start it again
  sudo nslab load dr -d 12 --fail-at 4 rs1 --heal-at 8   the errors a dead real server causes, second by second
  nslab plan topologies/dr.yaml                the same lab as ip/sysctl/ipvsadm commands, with reasons
  sudo nslab down routing                      remove every trace of it
  sudo nslab vm -- nslab verify topologies/dr.yaml   LVS in a VM whose kernel has IPVS

exit codes: 0 ok, 1 a check failed, 2 bad input or usage, 3 the environment lacks something (or nslab's
state under /run/nslab is unsafe), 4 the lab is busy: another up or down holds it (--wait waits for it)
"""


def main(argv=None) -> int:
    try:  # a Ctrl-C while the parser is built (a command's first few hundred ms) is an interrupt like any other
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return args.func(args) or 0
    except NslabError as e:
        if args.debug:
            raise
        sys.stdout.flush()  # the report first, then the verdict
        print(f"nslab: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print("nslab: interrupted" + (f" {e}" if str(e) else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`nslab plan ... | head`): finish quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser():
    p = argparse.ArgumentParser(prog="nslab", description="Real Linux network labs in network namespaces: "
                                "routing, SNAT and LVS (NAT/DR/TUN on the kernel's IPVS), with packet-level proof.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(metavar="COMMAND")

    def cmd(name, func, help_text):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(func=func)
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return sp

    sp = cmd("up", cmd_up, "build a lab from a topology file (as root; running it again changes nothing)")
    sp.add_argument("file", help="topology YAML, e.g. topologies/routing.yaml")
    sp.add_argument("--name", help="run under another lab name (two copies of one file side by side)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary")
    sp.add_argument("--wait", action="store_true", help="if another up or down holds the lab, wait for it "
                    "(default: say who holds it and exit 4)")

    sp = cmd("down", cmd_down, "remove a lab: its processes, namespaces and state (works without the state)")
    sp.add_argument("lab", nargs="?", help="lab name or topology file")
    sp.add_argument("--all", action="store_true", help="remove every nslab lab on this machine (and nothing else)")
    sp.add_argument("--wait", action="store_true", help="if another up or down holds the lab, wait for it "
                    "(default: say who holds it and exit 4)")

    sp = cmd("status", cmd_status, "list labs, or show one lab's nodes, interfaces, addresses and MACs")
    sp.add_argument("lab", nargs="?", help="lab name or topology file")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--connections", action="store_true", help="also the IPVS connection table")

    sp = cmd("load", cmd_load, "send many requests and report rate, latency, errors, each real server's share "
             "and what crossed the director (IPVS counters); HTTP load runs wrk inside the node")
    sp.add_argument("lab", help="lab name")
    sp.add_argument("--from", dest="source", metavar="NODE", help="node to send from (default: client)")
    sp.add_argument("--target", help="service name, IP:PORT or node (default: the first service)")
    how_long = sp.add_mutually_exclusive_group()
    how_long.add_argument("-n", "--count", type=int, default=1000, help="requests (default 1000)")
    how_long.add_argument("-d", "--duration", type=float, metavar="SECONDS", help="send for this long instead")
    sp.add_argument("-c", "--concurrency", type=int, default=50,
                    help="connections open at once (default 50)")
    sp.add_argument("-t", "--threads", type=int, default=2, help="wrk threads (default 2)")
    sp.add_argument("--keepalive", action="store_true",
                    help="keep connections open for many requests (default: a new connection per request, "
                    "because IPVS schedules connections)")
    sp.add_argument("--timeout", type=float, default=3.0, help="seconds a request may take (default 3)")
    fault = sp.add_argument_group("a fault during the load (needs -d; the report adds, second by second, the "
                                  "answers and the connections the client saw fail, and when the service "
                                  "recovered)")
    fault.add_argument("--fail-at", nargs=2, metavar=("SECONDS", "NODE"),
                       help="`nslab fail` NODE that many seconds into the load (its processes: e.g. a real "
                       "server's app)")
    which = fault.add_mutually_exclusive_group()
    which.add_argument("--fail-link", metavar="IFACE", help="fail this link of NODE instead")
    which.add_argument("--fail-node", action="store_true", help="fail the whole NODE instead (links and processes)")
    fault.add_argument("--heal-at", type=float, metavar="SECONDS",
                       help="`nslab heal` it that many seconds into the load (default: it stays failed)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = cmd("plan", cmd_plan, "print the lab as the ip/sysctl/nft/ipvsadm commands that build it (no root)")
    sp.add_argument("file", help="topology YAML")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--no-reasons", action="store_true", help="commands only, no '#' reason lines")

    sp = cmd("exec", cmd_exec, "run a command inside a node (default: an interactive shell)")
    sp.add_argument("lab", help="lab name")
    sp.add_argument("node", help="node name")
    sp.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")

    sp = cmd("validate", cmd_validate, "check a topology file and report every problem (no root)")
    sp.add_argument("file", help="topology YAML")

    sp = cmd("schema", cmd_schema, "print the JSON Schema (draft 2020-12) of topology files, for editors (no root)")
    sp.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")

    sp = cmd("doctor", cmd_doctor, "what this kernel and machine can run, and how to get the rest (exit 0: every "
             "lab runs, here or, for kernel features marked in-vm, through `nslab vm`; 3: something is missing)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = cmd("vm", cmd_vm, "run a command (default: a shell) as root in a throwaway VM whose kernel has IPVS "
             "(virtme-ng over QEMU; the project directory stays writable, everything else is discarded)")
    sp.add_argument("--kernel", help="kernel image (default: newest /boot/vmlinuz-* with IP_VS)")
    sp.add_argument("--memory", help="VM memory, e.g. 2G (default: 2G)")
    sp.add_argument("--dry-run", action="store_true", help="print the VM command line instead of running it")
    sp.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")

    from . import cli_verify  # verify, trace, graph: their parsers and handlers
    cli_verify.add_commands(cmd)
    from . import cli_faults  # fail, heal
    cli_faults.add_commands(sub)
    return p


def _progress_printer(quiet):
    if quiet or not sys.stderr.isatty():
        return None

    def show(i, n, action):
        sys.stderr.write(f"\r\033[K[{i + 1}/{n}] {action.ns}: {action.reason[:70]}")
        if i + 1 == n:
            sys.stderr.write("\r\033[K")
        sys.stderr.flush()
    return show


def cmd_up(args):
    topo = api.load_topology(args.file)
    lab = api.Lab(topo, name=args.name)
    result = lab.up(progress=_progress_printer(args.quiet), wait=args.wait)
    if args.quiet:
        return 0
    done = "built" if result.changed or result.removed else "already up, nothing changed"
    print(f"lab '{result.lab}' {done}: {len(result.changed)} of {result.total} steps applied, "
          f"{len(result.removed)} removed, in {result.seconds:.2f} s")
    _print_nodes(api.status(result.lab, settle=False))
    print("\ntry:")
    for line in _next_steps(lab.topo, result.lab):
        print(f"  {line}")
    return 0


def _next_steps(topo, lab):
    """What a student would type next, for this lab."""
    first = topo.nodes[0].name
    steps = [f"nslab exec {lab} {first} -- ip route"]
    if topo.services:
        svc = topo.services[0]
        client = next((n.name for n in topo.nodes if n.name == "client"), first)
        steps += [f"nslab exec {lab} {client} -- python3 -m nslab.verify.traffic http --target {svc.vip}:{svc.port} "
                  "--count 60", f"nslab status {lab} --connections", f"nslab trace {lab} {client} {svc.name}"]
    else:
        target = next((n.name for n in topo.nodes if n.app), None)
        if target:
            steps.append(f"nslab trace {lab} {first} {target}")
    steps += [f"nslab verify {lab}", f"nslab down {lab}"]
    return steps


def cmd_down(args):
    if args.all == bool(args.lab):
        raise api.UsageError("name one lab, or give --all for every nslab lab on this machine")
    results, busy = api.down_all(args.wait) if args.all else ([api.down(api.lab_name(args.lab), args.wait)], [])
    for result in results:
        print(f"lab '{result.lab}' removed: {len(result.namespaces)} namespaces, {result.processes} processes "
              f"ended, in {result.seconds:.2f} s")
    if args.all and not results and not busy:
        print("no labs are up")
    for e in busy:
        print(f"nslab: {e}", file=sys.stderr)
    return busy[0].exit_code if busy else 0


def _table(rows, indent="", left=None):
    from .verify.report import table
    print("\n".join(table(rows, indent, left)))


def _print_nodes(st):
    rows = [("node", "interface", "address", "mac", "state")]
    for node in st["nodes"]:
        if not node["exists"]:
            rows.append((node["name"], "-", "-", "-", "missing"))
        for i in node["interfaces"]:
            rows.append((node["name"], i["name"] + (f"@{i['master']}" if i["master"] else ""),
                         ",".join(i["addresses"]) or "-", i["mac"] or "-", "up" if i["up"] else "DOWN"))
        for app in node["apps"]:
            rows.append((node["name"], "app", app["kind"] + (f" :{app['port']}" if app["port"] else ""),
                         f"pid {app['pid']}", "running" if app["running"] else _dead(app.get("exit_status"))))
        for fault in node.get("faults", []):  # what `nslab fail` stopped: no longer in the journal
            for p in fault["processes"]:
                fields = p["action"]["fields"]
                kind = fields.get("kind") or {"StartProxy": "haproxy"}.get(p["action"]["kind"], "keepalived")
                what = f"{kind} :{fields['port']}" if "port" in fields else kind
                rows.append((node["name"], "app" if "port" in fields else "process", what, f"pid {p['pid']}",
                             "FAILED (nslab fail)"))
    _table(rows)


def _dead(status):
    """How a dead app ended, from the exit status its watcher recorded (128+N: killed by signal N)."""
    if status is None:
        return "DEAD (exit status unknown)"
    if status > 128:
        import signal
        try:
            return f"DEAD (killed by {signal.Signals(status - 128).name})"
        except ValueError:
            pass
    return f"DEAD (exit status {status})"


def cmd_status(args):
    if not args.lab:
        api.require_root()
        names = api.labs()
        if args.json:
            print(json.dumps(names))
        else:
            print("\n".join(n + _lab_condition(n) for n in names) or "no labs are up")
        return 0
    st = api.status(api.lab_name(args.lab), connections=args.connections)
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"lab {st['lab']}: {st['description']}")
    if not st["complete"]:
        held = [n for n in st["nodes"] if n["exists"]]
        print(f"HALF-BUILT: an `up` did not finish (killed, interrupted, or still running); {len(held)} of "
              f"{len(st['nodes'])} nodes exist. `nslab up FILE` finishes it, `nslab down {st['lab']}` removes it.")
    _print_nodes(st)
    from . import cli_faults
    cli_faults.print_faults(st)
    for svc in st["services"]:
        _print_service(svc)
    return 0


def _lab_condition(lab: str) -> str:
    """What the list of labs says after a lab's name: nothing for a whole one. A lab whose state can't be
    read is named with why, and the others are still listed."""
    from .errors import StateError
    try:
        return "" if api.complete(lab) else "  (half-built)"
    except StateError as e:
        return f"  (state unreadable: {e})"


def _print_service(svc):
    """Like `ipvsadm -Ln --stats`, with each real server's node name."""
    print(f"\nservice {svc['name']}: {svc['protocol'].upper()} {svc['vip']}:{svc['port']} on {svc['director']}, "
          f"{svc['forward'].upper()}" + (f", scheduler {svc['scheduler']}" if svc["programmed"] else ", NOT PROGRAMMED"))
    rows = [("real server", "node", "method", "weight", "active", "inactive", "conns", "inpkts", "outpkts",
             "inbytes", "outbytes")]
    for rs in svc["real_servers"]:
        st = rs["stats"]
        rows.append((f"{rs['address']}:{rs['port']}", rs["node"], rs["method"], rs["weight"], rs["active"],
                     rs["inactive"], st["conns"], st["inpkts"], st["outpkts"], st["inbytes"], st["outbytes"]))
    _table(rows, indent="  ", left=3)
    if "keepalived" in svc:
        _print_keepalived(svc["keepalived"])
    if "connections" in svc:
        print(f"  connections ({len(svc['connections'])}):")
        for c in svc["connections"]:
            print(f"    {c['protocol']} {c['client']} -> {c['vip']} -> {c['real_server']}  {c['state']}  "
                  f"expires in {c['expires_s']} s")


def _print_keepalived(directors):
    """Per director: keepalived, VRRP state, the VIP; per real server: health as its checker sees it."""
    def since(t):
        return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 10)}" if t else "-"
    rows = [("director", "keepalived", "vrrp", "since", "holds vip")]
    for d in directors:
        rows.append((d["node"], "running" if d["keepalived"] else "STOPPED", d["vrrp"] or "-", since(d["vrrp_since"]),
                     "yes" if d["holds_vip"] else "no"))
    _table(rows, indent="  ")
    rows = [("director", "real server", "node", "health", "since", "ipvs weight")]
    for d in directors:
        for rs in d["real_servers"]:
            health = "sorry server" if rs["sorry"] else "-" if rs["healthy"] is None else (
                "healthy" if rs["healthy"] else "FAILED")
            rows.append((d["node"], f"{rs['address']}:{rs['port']}", rs["node"], health, since(rs["since"]),
                         "not in table" if rs["weight"] is None else rs["weight"]))
    _table(rows, indent="  ")


def _scheduled_fault(args):
    from .errors import UsageError
    if not args.fail_at:
        if args.fail_link or args.fail_node or args.heal_at is not None:
            raise UsageError("--fail-link, --fail-node and --heal-at go with --fail-at SECONDS NODE")
        return None
    try:
        at = float(args.fail_at[0])
    except ValueError:
        raise UsageError(f"--fail-at SECONDS NODE: '{args.fail_at[0]}' is not a number of seconds") from None
    from .faults import Scheduled
    return Scheduled(args.fail_at[1], at, args.heal_at, args.fail_link, args.fail_node)


def cmd_load(args):
    fault = _scheduled_fault(args)
    progress = None
    if sys.stderr.isatty():
        goal = f"/{args.count}" if args.duration is None else ""

        def progress(answered, elapsed):
            left = f", {max(0.0, args.duration - elapsed):.0f} s left" if args.duration else ""
            sys.stderr.write(f"\r\033[K{answered}{goal} answered, {elapsed:.1f} s{left}")
            sys.stderr.flush()
    try:
        report = api.load(args.lab, args.source, args.target, args.count, args.concurrency, timeout=args.timeout,
                          duration=args.duration, threads=args.threads, keepalive=args.keepalive, progress=progress,
                          fault=fault)
    finally:
        if progress:
            sys.stderr.write("\r\033[K")
    print(json.dumps(report.as_dict(), indent=1) if args.json else str(report))
    return 0 if report.ok else 1


def cmd_plan(args):
    topo = api.load_topology(args.file)
    changes = api.plan_changes(topo)  # None when the lab is down: then the whole plan
    if changes is not None:
        return _print_plan_changes(changes, args)
    actions = api.plan(topo)
    if args.json:
        print(json.dumps([_plan_item(a) for a in actions], indent=1))
        return 0
    print(f"# lab '{topo.name}': {len(actions)} steps. Every line can be typed by hand, as root.")
    _print_steps(actions, args.no_reasons)
    return 0


def _plan_item(a):
    return {"action": type(a).__name__, "namespace": a.ns, "reason": a.reason, "commands": a.commands()}


def _print_steps(actions, no_reasons, prefix="", why=""):
    """Each action's commands; consecutive actions with one reason under one '# reason' line."""
    last = None
    for a in actions:
        if not no_reasons and a.reason != last:
            print(f"\n# {why}{a.reason}")
        last = a.reason
        for c in a.commands():
            print(prefix + c)


def _print_plan_changes(changes, args):
    if args.json:
        print(json.dumps({"lab": changes.lab, "up": True, "remove": [_plan_item(a) for a in changes.remove],
                          "add": [_plan_item(a) for a in changes.add]}, indent=1))
        return 0
    if not changes.add and not changes.remove:
        print(f"# lab '{changes.lab}' is up and matches the file: `nslab up` would change nothing.")
        return 0
    print(f"# lab '{changes.lab}' is up: `nslab up` would remove {len(changes.remove)} and apply "
          f"{len(changes.add)} of the file's {changes.total} steps ('-': undone, newest first; '+': applied).")
    _print_steps(changes.remove, args.no_reasons, "- ", "no longer in the file: ")
    _print_steps(changes.add, args.no_reasons, "+ ")
    return 0


def cmd_validate(args):
    topo = api.load_topology(args.file)
    print(f"{args.file}: ok (lab '{topo.name}', {len(topo.nodes)} nodes, {len(topo.switches)} switches, "
          f"{len(topo.services)} services)")
    from . import model  # what the declared routes say will break: warnings, not errors
    from .model import reach
    for text in reach.warnings(model.resolve(topo)):
        print(f"warning: {text}")
    return 0


def cmd_schema(args):
    from .errors import UsageError
    from .model import jsonschema
    text = json.dumps(jsonschema.schema(), indent=2) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"{args.output}: cannot write the schema: {e.strerror}") from None
    return 0


def cmd_exec(args):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        api.exec(args.lab, args.node, command)  # replaces this process: the command's exit status is ours
    except FileNotFoundError:
        print(f"nslab: {command[0]}: command not found", file=sys.stderr)
        return 127


def cmd_doctor(args):
    from .kernel import caps
    checks = caps.probe()
    # A kernel feature this kernel lacks is no obstacle when the kernel VM works: the labs that need it run
    # there (that is what `nslab vm` is for), so doctor says so and still exits 0.
    vm_works = all(c.ok for c in checks if c.name.startswith("vm-"))
    via_vm = {c.name for c in checks if c.vm_has_it and vm_works}
    if args.json:
        print(json.dumps([dict(c.__dict__, via_vm=c.name in via_vm) for c in checks], indent=1))
    else:
        for c in checks:
            label = "ok" if c.ok else "in-vm" if c.name in via_vm else "MISSING"
            print(f"{label:<7}  {c.name}: {c.detail}")
            if c.name in via_vm:
                print(f"{'':<9}labs that need it run in the kernel VM: {c.fix}")
            elif not c.ok and c.fix:
                print(f"{'':<9}fix: {c.fix}")
    return 0 if all(c.ok or c.name in via_vm for c in checks) else 3


def cmd_vm(args):
    from . import vm
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        if not sys.stdin.isatty():
            raise api.UsageError("nothing to run: nslab vm -- COMMAND [ARG...] (or run `nslab vm` on a terminal "
                                 "for a shell in the VM)")
        print("nslab vm: a root shell in a throwaway VM whose kernel has IPVS; `exit` ends it and everything "
              "in it", file=sys.stderr)
        command = ["bash", "-i"]
    if args.dry_run:
        print(" ".join(vm.build_argv(command, kernel=args.kernel, memory=args.memory)))
        return 0
    return vm.run(command, kernel=args.kernel, memory=args.memory)


if __name__ == "__main__":
    sys.exit(main())
