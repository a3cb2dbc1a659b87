"""The Python API users script and test with: the workflows (up, down, status, verify, trace, load, run, exec)
and the Lab context manager. The CLI is a thin layer over this; results are objects that print themselves.

Each workflow imports what it uses (planner, kernel, verify), so `down` never loads the planner or YAML."""

from __future__ import annotations

import os
import shutil
import time

from . import model, state
from .errors import EnvironmentMissing, KernelError, UsageError
from .model import names
from .record import field, record


def load_topology(path: str) -> Topology:
    """Load and validate a topology file. Raises TopologyError."""
    return model.load(path)


def plan(topo: Topology) -> list:
    """The ordered kernel actions that build the lab (pure; needs no root)."""
    from .plan import planner
    return planner.plan(model.resolve(topo))


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentMissing("this touches the kernel and needs root: run it with sudo")


def require_kernel_features(topo: Topology) -> None:
    """Fail before anything is created when the running kernel can't run the lab."""
    from .kernel import caps
    if any(i.vlans for n in topo.nodes for i in n.interfaces) and not caps.has_vlan():
        raise EnvironmentMissing(f"lab '{topo.name}' has VLANs, but the running kernel has no 802.1Q VLANs or "
                                 f"VLAN-filtering bridges (8021q, CONFIG_BRIDGE_VLAN_FILTERING). {_vm_hint(topo)}")
    impaired = [f"{n.name}:{i.name}" for n in topo.nodes for i in n.interfaces if i.impair]
    if impaired and not caps.has_netem():
        raise EnvironmentMissing(
            f"lab '{topo.name}' impairs {', '.join(impaired)}, but the running kernel has no netem (sch_netem, "
            f"sch_tbf). {_vm_hint(topo)}")
    proxies = [n.name for n in topo.nodes if n.proxy]
    if proxies and not shutil.which("haproxy"):
        raise EnvironmentMissing(f"lab '{topo.name}' runs haproxy on {', '.join(proxies)}, and it is not installed: "
                                 "apt-get install haproxy (scripts/install.sh installs it)")
    if not topo.services:
        return
    from .model.schema import Forward
    if not caps.has_ipvs():
        raise EnvironmentMissing(
            f"lab '{topo.name}' has services, but the running kernel has no IPVS (ip_vs). {_vm_hint(topo)}")
    if any(s.forward is Forward.TUN for s in topo.services) and not caps.has_ipip():
        raise EnvironmentMissing(
            f"lab '{topo.name}' uses LVS TUN, but the running kernel has no ipip module. {_vm_hint(topo)}")


def _vm_hint(topo):
    return (f"Run it in the kernel VM, in one go: nslab vm -- nslab verify {topo.source} ; or get a shell there "
            f"with `nslab vm` and run nslab up {topo.source} (see `nslab doctor`)")


@record(frozen=False)
class UpResult:
    lab: str
    changed: list  # the actions this run applied (new objects and attributes changed in place)
    total: int
    seconds: float
    removed: list = field(default_factory=list)  # journalled actions undone: the file no longer has them


def up(topo: Topology, progress=None, wait: bool = False) -> UpResult:
    """Build the lab, or bring a running one in line with the topology: remove what nslab made that the
    topology no longer has (newest first, from the journal), then apply every step not in place. A
    second call changes nothing.

    Raises EnvironmentMissing (no root, no IPVS) before creating anything, KernelError
    (after undoing this run's changes) when a kernel step fails, LabBusy when another run holds the lab
    (unless wait=True: then it waits), StateError when the lab's state is unsafe or not nslab's.
    """
    from .kernel import apply as kapply
    from .kernel.session import Session
    require_root()
    require_kernel_features(topo)
    actions = plan(topo)
    wanted = {a.identity() for a in actions}
    started = time.monotonic()
    with state.locked(topo.name, wait):
        before = state.load(topo.name)
        record = {"lab": topo.name, "source": os.path.abspath(topo.source) if topo.source != "<string>" else None,
                  "topology": topo.text, "namespaces": [a.ns for a in actions if type(a).__name__ == "AddNetns"]}
        # Saved before the first step, marked incomplete: after a kill, `status` shows what is half-built.
        # (The faults `nslab fail` recorded stay until the run ends: a killed run may not have healed them.)
        state.save(topo.name, {**(before or {}), **record, "complete": False, "updated": time.time()})
        with state.Journal(topo.name) as journal, \
                Session(run_dir=state.lab_dir(topo.name), journalled=journal.latest()) as s:
            s.token = _lab_token(s, topo.name, before, journal)
            try:
                kapply.finish_unfinished(s, journal)
                removed = kapply.undo(s, [st for st in journal.steps() if st[0].identity() not in wanted], journal)
                changed = kapply.apply(s, actions, progress, journal)
            except BaseException:  # the kernel side is already rolled back; so is a new lab's state
                if before is None and not journal.steps():
                    state.remove(topo.name)
                elif before is not None:
                    state.save(topo.name, before)
                raise
            journal.compact()
        # A new state: the faults `nslab fail` recorded are gone, as this run brought the lab back to its file.
        state.save(topo.name, {**record, "token": s.token, "complete": True, "updated": time.time()})
    return UpResult(topo.name, changed, len(actions), time.monotonic() - started, removed)


def _known_token(st: dict | None, journal) -> str | None:
    """The lab's mark token as its state or journal recorded it; None if neither does (lost, or a lab from
    before tokens)."""
    if st and "token" in st:
        return st["token"]
    tokens = [u for a, u in journal.steps() if type(a).__name__ == "AddNetns" and isinstance(u, str)]
    return tokens[-1] if tokens else None


def _lab_token(session, lab: str, st: dict | None, journal) -> str:
    """The token `up` marks the lab's namespaces with: the one recorded, else the one its namespaces carry
    (the fabric's first: the state was lost), else a new one for a new lab."""
    from .kernel import observe
    known = _known_token(st, journal)
    if known is not None:
        return known
    found = observe.owned_namespaces(session, lab)
    fabric = found.get(names.fabric_ns(lab))
    if fabric or found:
        return (fabric or next(iter(found.values()))).token
    return names.new_token()


@record(frozen=False)
class PlanChanges:
    """What `up` of a topology would change in its running lab (read from the kernel and the journal)."""
    lab: str
    add: list  # actions not in place
    remove: list  # what up would undo, newest first: one (newest) journalled action per object, with its reason
    total: int  # actions in the whole plan


def plan_changes(topo: Topology) -> PlanChanges | None:
    """The difference `up` would make to the lab if it is up; None if it is down (or we aren't root: only
    root can read the kernel and /run/nslab). Changes nothing."""
    if os.geteuid() != 0:
        return None
    actions = plan(topo)
    wanted = {a.identity() for a in actions}
    with state.Journal(topo.name) as journal:
        st = state.load(topo.name)
        if st is None and not journal.steps():
            return None
        from .kernel import apply as kapply  # here: a lab that is down needs no kernel look
        from .kernel.session import Session
        gone = [step for step in journal.steps() if step[0].identity() not in wanted]
        with Session(journalled=journal.latest()) as s:
            s.token = _lab_token(s, topo.name, st, journal)
            add = kapply.missing(s, actions)
    return PlanChanges(topo.name, add, kapply.objects(a for a, _ in kapply.to_undo(gone)), len(actions))


@record(frozen=False)
class DownResult:
    lab: str
    namespaces: list = field(default_factory=list)
    processes: int = 0
    seconds: float = 0.0


def down(lab: str, wait: bool = False) -> DownResult:
    """Remove every trace of a lab: its processes, namespaces and state.

    Undoes what the journal says was done, newest first (deleting a namespace takes all in it), then
    sweeps what is left by name: a namespace is deleted only if it carries this lab's mark (with the token
    its state or journal recorded, if any), so this works without journal or state too (after a crash, a
    kill -9 of `up`, a state file that is garbage). Every process inside the lab's namespaces is ended,
    whoever started it, and inside a namespace of the lab deleted by hand that a recorded lab process keeps
    alive. Raises UsageError if nothing of the lab exists, LabBusy if another run holds it (unless
    wait=True), StateError if its state directory is unsafe (a symlink, someone else's).
    """
    from .errors import StateError
    from .kernel import netns, observe
    from .kernel.session import Session
    model.check_name(lab)
    require_root()
    started = time.monotonic()
    with state.locked(lab, wait):
        try:
            st = state.load(lab)
        except StateError:
            st = {}  # garbage: the journal and the marks still say what to remove
        with state.Journal(lab) as journal, Session() as s:
            steps, pending = journal.steps(), journal.pending()
            token = _known_token(st, journal)
            marked = observe.owned_namespaces(s, lab, token)
            s.marks.update({ns: names.mark(*owner) for ns, owner in marked.items()})  # read just now
            owned = sorted(marked)
            if not owned and st is None and not steps and not pending:
                state.remove(lab)
                raise UsageError(f"no lab named '{lab}' is up (see `nslab status`)")
            from .kernel import apply as kapply  # here: a lab that is not up costs no executors
            from .kernel import procs
            candidates = set(owned) | {a.ns for a, _ in steps if type(a).__name__ == "AddNetns"} | {
                a.ns for a in pending}
            existed = sorted(n for n in candidates if netns.taken(n))
            with netns.held(owned) as inside:  # the namespaces themselves, whatever becomes of their names
                ended = procs.end_inside(inside)  # one pass over /proc for the whole lab, not one per namespace
                lost = procs.lost_namespaces(s, steps, lab, token)
                with netns.held(lost) as held:  # only if each is still the one found marked (pids are recycled)
                    ended += procs.end_inside({i: where for i, where in held.items() if lost[where] == i})
                s.emptied.update(owned)
                kapply.finish_unfinished(s, journal)
                # Not journalled: the journal goes below, and a down cut short undoes it all again.
                kapply.undo(s, steps, strict=False)
                stuck = _sweep(s, lab, token, owned, candidates)
                # A process that entered between the first pass and the delete (through a name, or an fd it
                # opened before) would keep a namespace and all in it alive with no name to find it by.
                ended += procs.end_inside(inside)
            if stuck:  # the journal and state stay, so the next down tries again
                stuck = [f"{ns} ({why})" for ns, why in sorted(stuck.items())]
                raise KernelError(f"lab '{lab}': could not remove namespace(s) {', '.join(stuck)}; the rest is "
                                  f"removed. Run `nslab down {lab}` again (or end what holds them)")
        state.remove(lab)
    gone = [n for n in existed if not netns.taken(n)]
    return DownResult(lab, gone, ended, time.monotonic() - started)


def _sweep(s, lab: str, token: str | None, owned: list, candidates: set) -> dict:
    """Delete what is left of the lab's namespaces that are marked as its own (read before: owned), then look
    again; return namespace -> why for each that is still there (a mount nslab did not make kept it busy, or
    hid a namespace of the lab until a delete uncovered it): `down` must not say the lab is gone."""
    from .kernel import netns, observe
    stuck = {}
    for ns in owned:  # marked as this lab's, but not in the journal
        if netns.exists(ns):
            s.forget(ns)
            try:
                netns.delete(ns)
            except OSError as e:  # busy: go on with the rest
                stuck[ns] = e.strerror
    for ns in set(observe.owned_namespaces(s, lab, token)) | {
            n for n in candidates if netns.taken(n) and not netns.exists(n)}:
        stuck.setdefault(ns, "still there")
    return stuck


def down_all(wait: bool = False) -> tuple[list, list]:
    """Take down every nslab lab on this machine (each found by its state or by the marks on its
    namespaces), and nothing else. Returns (DownResults, LabBusy errors of the labs another run holds: they
    are left as they are unless wait=True)."""
    from .errors import LabBusy
    results, busy = [], []
    for lab in labs():
        try:
            results.append(down(lab, wait))
        except UsageError:  # gone meanwhile (another down)
            continue
        except LabBusy as e:
            busy.append(e)
    return results, busy


def lab_name(arg: str) -> str:
    """A lab name from a name or a topology file path."""
    if arg.endswith((".yaml", ".yml")) or os.path.sep in arg:
        return model.load(arg).name
    return model.check_name(arg)


def labs() -> list[str]:
    """Names of the labs that are up (from state and from marked namespaces)."""
    from .kernel import observe
    from .kernel.session import Session
    with Session() as s:
        found = {owner.lab for owner in observe.owned_namespaces(s).values()}
    return sorted(found | set(state.labs()))


def complete(lab: str) -> bool:
    """False for a half-built lab: an `up` of it is running, or was killed or interrupted (or it has marked
    namespaces and no state at all)."""
    st = state.load(lab)
    return bool(st) and st.get("complete", True)


def resolved(lab: str):
    """The resolved facts of a running lab (see model/resolve.py), for the commands that send traffic
    through it. Raises UsageError for a lab that isn't up, or isn't whole: half-built (an `up` killed,
    interrupted or still running) or with a namespace gone (deleted by hand), where sniffers and senders
    would meet namespaces and links that aren't there."""
    from .kernel import netns
    rlab = model.resolve(topology_of(lab))
    if not complete(lab):
        raise UsageError(f"lab '{lab}' is half-built (an `up` did not finish: killed, interrupted, or still "
                         f"running): `nslab up FILE` finishes it, `nslab down {lab}` removes it")
    missing = [ns for ns in state.load(lab)["namespaces"] if not netns.exists(ns)]
    if missing:
        raise UsageError(f"lab '{lab}' has lost namespace(s) {', '.join(missing)} (deleted by hand?): "
                         f"`nslab up FILE` puts back what is missing, `nslab down {lab}` removes the rest")
    return rlab


def topology_of(lab: str) -> Topology:
    """The topology a running lab was built from (kept in its state). Raises UsageError."""
    model.check_name(lab)
    st = state.load(lab)
    if not st:
        if lab in labs():
            raise UsageError(f"lab '{lab}' has namespaces but no state (lost, or an `up` was killed): "
                             f"`nslab down {lab}` removes it, then `nslab up` builds it again")
        raise UsageError(f"no lab named '{lab}' is up (see `nslab status`)")
    from .record import replace
    topo = model.loads(st["topology"], st.get("source") or f"{lab} (from its state)")
    return replace(topo, name=lab)  # a copy may run under another name


def status(lab: str, connections: bool = False, settle: bool = True) -> dict:
    """Nodes of a running lab with interfaces, addresses, MACs and whether each is up; for each
    service, its IPVS counters per real server (after the kernel's next 2 s counter fold unless
    settle=False) and, with connections=True, the IPVS connection table."""
    from .kernel import netns, observe, procs
    from .kernel.session import Session
    require_root()
    topo = topology_of(lab)
    steps = state.Journal(lab).steps()  # the apps it started, with their pids
    faults = state.faults(lab)
    # complete: False while an `up` runs, or after one was killed or interrupted: the lab is half-built
    out = {"lab": lab, "description": topo.description, "nodes": [], "switches": list(topo.switches),
           "faults": faults, "complete": complete(lab)}
    with Session() as s:
        for node in topo.nodes:
            ns = names.node_ns(lab, node.name)
            entry = {"name": node.name, "namespace": ns, "exists": netns.exists(ns), "interfaces": [], "apps": []}
            try:
                found = observe.interfaces(s, ns) if entry["exists"] else []
            except OSError:  # gone meanwhile (a down), or only its name (an `up` killed while making it)
                entry["exists"], found = False, []
            declared = {i.name for i in node.interfaces}
            # lo only when it holds more than 127.0.0.1 (a VIP); kernel-made devices (tunl0 once ipip
            # is loaded) only when something uses them
            entry["interfaces"] = [i for i in found if i["name"] in declared or
                                   (i["name"] == "lo" and len(i["addresses"]) > 1) or
                                   (i["name"] not in ("lo",) and (i["up"] or i["addresses"]))]
            entry["apps"] = [{k: v for k, v in p.items() if k != "action"}
                             for p in procs.recorded_processes(steps, ns, state.lab_dir(lab))]
            entry["faults"] = [f for f in faults if f["node"] == node.name]
            out["nodes"].append(entry)
        out["services"] = [_service_status(s, topo, svc, connections, settle) for svc in topo.services]
    return out


def fail(lab: str, node: str, link: str | None = None, whole_node: bool = False):
    """Fail a node of a running lab: stop every lab process it runs (its app, and any other process nslab
    started there), or take one of its links down (link), or both for all its links (whole_node). The
    fault is recorded in the lab's state and shown by status. Returns a faults.FaultResult (.changed is
    False, with a message, when it had failed already); raises UsageError for an unknown lab, node or link."""
    from . import faults
    require_root()
    return faults.fail(topology_of(lab), node, link, whole_node)


def heal(lab: str, node: str, link: str | None = None, whole_node: bool = False):
    """Undo exactly what the matching fail did: links up, with the routes the kernel dropped along with them
    put back, then the processes started again as `up` starts them. Returns a faults.FaultResult (.changed is
    False when nothing of that kind had failed); raises UsageError, KernelError."""
    from . import faults
    require_root()
    return faults.heal(topology_of(lab), node, link, whole_node)


def _service_status(session, topo, svc, connections, settle):
    from .kernel import ipvs, netns
    rlab = model.resolve(topo)
    facts = rlab.service(svc.name)
    director, pair = svc.director, None
    if facts.keepalived:
        from .kernel import keepalived
        pair = keepalived.status(session, rlab, facts)
        director = next((d["node"] for d in pair if d["holds_vip"]), director)  # the table that gets the traffic
    ns = names.node_ns(topo.name, director)
    read = ipvs.read_services_settled if settle else ipvs.read_services
    by_addr = {str(rs.address): rs.node for rs in facts.backends}
    entry = {"name": svc.name, "director": director, "forward": svc.forward.value, "vip": str(svc.vip),
             "port": svc.port, "protocol": svc.protocol, "programmed": False, "real_servers": []}
    if pair is not None:
        entry["keepalived"] = pair
    if not netns.exists(ns):  # a half-built lab (its `up` killed before it made the director): nothing there
        return entry
    for found in read(session, ns):
        if found["vip"] == str(svc.vip) and found["port"] == svc.port and found["protocol"] == svc.protocol:
            entry.update(programmed=True, scheduler=found["scheduler"], stats=found["stats"])
            for rs in found["real_servers"]:
                entry["real_servers"].append(dict(rs, node=by_addr.get(rs["address"], "?")))
    if connections:
        entry["connections"] = [c for c in ipvs.read_connections(ns) if c["vip"] == f"{svc.vip}:{svc.port}"]
    return entry


def _up_for_a_while(arg: str):
    """(lab name, brought_up): a lab name as is; a file's lab brought up if it isn't up already."""
    if arg.endswith((".yaml", ".yml")) or os.path.sep in arg:
        topo = load_topology(arg)
        if state.load(topo.name):
            return topo.name, False
        up(topo)
        return topo.name, True
    topology_of(arg)  # raises UsageError for a lab that isn't up
    return arg, False


def verify(lab: str, count: int | None = None):
    """Send traffic under sniffers on every link and check the lab's concepts from the captures, then its
    own `expect:` entries. `lab` is a running lab's name, or a file (brought up, and down again after, if
    it isn't up). Returns a verify.report.VerifyReport; raises UsageError, EnvironmentMissing."""
    from .verify import run, services
    from .verify.report import VerifyReport
    require_root()
    name, brought = _up_for_a_while(lab)
    try:
        started = time.monotonic()
        rlab = resolved(name)
        client, target = run.pick_client(rlab), run.pick_target(rlab)
        count = count or (60 if target.service else 3)
        before = services.counters(rlab) if rlab.services else {}
        frames, traffic, cap = run.capture_traffic(rlab, client, target, count=count)
        _, _, results = run.analyse(rlab, client, target, frames, traffic)
        if rlab.services:
            results += services.checks(rlab, client, target.service, traffic, before, results)
        if rlab.impairs:
            from .verify import impair
            results += impair.measure(rlab, traffic)
        if rlab.proxies:
            from .verify import layers
            results += layers.measure(rlab, client)
        from .verify import health
        results += [r for r in [health.check(rlab, client, target)] if r]
        results += run.expectations(rlab)
        return VerifyReport(name, client, str(target), target.kind, count, traffic, len(frames), len(cap.taps),
                            time.monotonic() - started, results)
    finally:
        if brought:
            down(name)


def trace(lab: str, source: str, target: str | None = None):
    """One request from node `source` to a target (a service, a node's app, or IP:PORT; default: the first
    service) and its reply, hop by hop. Returns a verify.report.Trace; raises UsageError."""
    from .verify import run
    from .verify.report import Trace
    require_root()
    rlab = resolved(lab)
    if not rlab.topology.has_node(source):
        raise UsageError(f"lab '{lab}' has no node '{source}'")
    tgt = run.pick_target(rlab, target)
    frames, traffic, _ = run.capture_traffic(rlab, source, tgt, count=1)
    w, net, _ = run.analyse(rlab, source, tgt, frames, traffic)
    return Trace(lab, source, str(tgt), tgt.kind, traffic, w, net, frames)


def load(lab: str, source: str | None = None, target: str | None = None, count: int | None = 1000,
         concurrency: int = 50, timeout: float = 3.0, duration: float | None = None, threads: int = 2,
         keepalive: bool = False, progress=None, fault=None):
    """Send `count` requests, or send for `duration` seconds, from a node (default: the lab's client) to
    a target (default: the first service), and report rate, latency, errors by kind, each real server's
    share and what crossed the director, from the IPVS counters after the kernel's next fold.

    HTTP targets get wrk (verify/wrk.py) inside the node: `concurrency` connections over `threads`
    threads, a new connection per request (IPVS schedules connections) unless keepalive=True;
    progress(answered, elapsed_s) is called while it runs. Other targets (TCP/UDP echo) get the Python
    generator, by count only. fault (a faults.Scheduled; HTTP and a duration only) fails a node during the
    load and heals it: the report then has, second by second, the answers and what the client's kernel saw
    fail (refused, reset, stalled SYNs), and when the service recovered. Returns a verify.report.LoadReport;
    raises UsageError, EnvironmentMissing."""
    from .kernel.session import Session
    from .verify import concepts, run
    from .verify.report import LoadReport
    require_root()
    if duration is not None:
        count = None
    elif count is None:
        raise UsageError("give a request count or a duration")
    if (count is not None and count < 1) or concurrency < 1 or threads < 1:
        raise UsageError("the count, the concurrency and the threads must be at least 1")
    if duration is not None and not duration > 0:
        raise UsageError("the duration must be positive")
    rlab = resolved(lab)
    topo = rlab.topology
    client = source or run.pick_client(rlab)
    if not topo.has_node(client):
        raise UsageError(f"lab '{lab}' has no node '{client}'")
    tgt = run.pick_target(rlab, target)
    if tgt.kind != "http" and (duration is not None or keepalive):
        raise UsageError(f"target {tgt} is {tgt.kind}: a duration and keep-alive need an HTTP target (wrk)")
    if fault is not None:
        if tgt.kind != "http" or duration is None:
            raise UsageError("a fail during a load needs an HTTP target (wrk) and a duration (-d SECONDS)")
        fault.check(topo, duration)
    svc = tgt.service
    declared = next((s for s in topo.services if svc and s.name == svc.name), None)
    with Session() as s:
        before = _service_status(s, topo, declared, False, settle=False) if svc else None
    unused = faults_seen = None
    if tgt.kind == "http":
        from .verify import wrk
        stop_hook = None
        if svc and not keepalive:
            director, vip = rlab.ns(svc.director), f"{svc.vip}:{svc.port}"
            unused = {}

            def stop_hook():
                # Every answer is in and wrk still holds the connections it opened for its next requests:
                # they are the client's only sockets to the VIP it hasn't closed (a local fact, so no race
                # with FINs in flight). The director's table says which real server each was given to.
                idle = _open_sockets_to(rlab.ns(client), str(svc.vip), svc.port)
                for c in _ipvs_connections(director, vip):
                    if c["client"] in idle:
                        rip = c["real_server"].rpartition(":")[0]
                        unused[rip] = unused.get(rip, 0) + 1
        from . import faults
        watch = faults.LoadWatch(topo, rlab.ns(client), tgt, fault, progress, stop_hook) if fault else None
        traffic = wrk.run(rlab.ns(client), tgt.ip, tgt.port, count=count, duration=duration,
                          connections=concurrency, threads=threads, keepalive=keepalive, timeout=timeout,
                          progress=watch.progress if watch else progress,
                          before_stop=watch.before_stop if watch else stop_hook, probe=svc is None,
                          started=watch.start if watch else None)
        faults_seen = watch.finish() if watch else None
    else:
        traffic = run.send(rlab, client, tgt, count, concurrency, timeout)
        traffic.setdefault("sent", count)
        traffic["engine"] = "python"
    report = LoadReport(lab, client, str(tgt), traffic.get("connections", concurrency), traffic)
    report.faults = faults_seen
    if svc:
        with Session() as s:
            after = _service_status(s, topo, declared, False, settle=True)
        old = {rs["address"]: rs["stats"] for rs in before["real_servers"]}
        expected = concepts.expected_share(svc, sum(traffic.get("by_server", {}).values())) or {}
        rows = []
        for rs in after["real_servers"]:
            delta = {k: v - old.get(rs["address"], {}).get(k, 0) for k, v in rs["stats"].items()}
            rows.append({"node": rs["node"], "address": rs["address"], "weight": rs["weight"],
                         "answered": traffic.get("by_server", {}).get(rs["node"], 0),
                         "expected": expected.get(rs["node"]), **delta,
                         "unused": None if unused is None else unused.get(rs["address"], 0)})
        report.service = {"name": svc.name, "forward": svc.method.value, "scheduler": after.get("scheduler"),
                          "real_servers": rows}
    return report


def _ipvs_connections(director_ns: str, vip: str) -> list:
    from .kernel import ipvs
    return [c for c in ipvs.read_connections(director_ns) if c["vip"] == vip]


def _open_sockets_to(ns: str, ip: str, port: int) -> set:
    """{'ip:port'} of the TCP sockets in ns to ip:port that are still open at this end: ESTABLISHED,
    SYN_SENT, and CLOSE_WAIT (the peer closed it, the owner hasn't yet: an idle one the server timed out)."""
    import socket
    import struct
    from .kernel import netns
    with netns.entered(ns):
        with open("/proc/thread-self/net/tcp") as f:
            lines = f.read().splitlines()[1:]

    def addr(text):  # the address is the kernel's 32-bit word printed in host byte order
        hexip, hexport = text.split(":")
        return socket.inet_ntoa(struct.pack("=I", int(hexip, 16))), int(hexport, 16)
    out = set()
    for line in lines:
        p = line.split()
        if len(p) > 3 and p[3] in ("01", "02", "08") and addr(p[2]) == (ip, port):
            local = addr(p[1])
            out.add(f"{local[0]}:{local[1]}")
    return out


def node_namespace(lab: str, node: str) -> str:
    """The namespace to enter for a node of a running lab. Raises UsageError."""
    from .kernel import netns
    ns = names.node_ns(model.check_name(lab), model.check_name(node, "node"))
    if not netns.exists(ns):
        topo = topology_of(lab)
        known = ", ".join(n.name for n in topo.nodes)
        raise UsageError(f"lab '{lab}' has no node '{node}' (nodes: {known})")
    return ns


def run(lab: str, node: str, argv, **kwargs) -> subprocess.CompletedProcess:
    """Run argv inside a node and wait (subprocess.run keywords pass through)."""
    from .kernel import procs
    require_root()
    return procs.run_in(node_namespace(lab, node), argv, **kwargs)


def exec(lab: str, node: str, argv) -> None:  # noqa: A001 - `nslab exec`, as ip netns exec
    """Replace this process with argv running inside a node (its exit status becomes ours); with no argv,
    the user's shell. Never returns; raises UsageError, and FileNotFoundError for an unknown command."""
    from .kernel import netns
    require_root()
    ns = node_namespace(lab, node)
    argv = list(argv) or [os.environ.get("SHELL") or "/bin/sh"]
    netns.setns_path(ns)
    os.environ["NSLAB_LAB"], os.environ["NSLAB_NODE"] = lab, node
    os.execvp(argv[0], argv)


def why(lab: str, source: str, target: str | None = None):
    """Send a probe from node `source` to a target (a service, a node's app, or IP:PORT; default: the first
    service) under sniffers on every link, and say where it stopped, why (with the kernel's evidence: the
    route, the sysctl, the counter that moved) and the fix in the lab's YAML terms. `lab` is a running lab's
    name, or a file (brought up, and down again after, if it isn't up). Returns a verify.why.Why (.ok,
    .finding, lines(), as_dict()); raises UsageError."""
    from .verify import run
    from .verify import why as explain
    require_root()
    name, brought = _up_for_a_while(lab)
    try:
        rlab = resolved(name)
        if not rlab.topology.has_node(source):
            raise UsageError(f"lab '{name}' has no node '{source}'")
        return explain.why(rlab, source, run.pick_target(rlab, target))
    finally:
        if brought:
            down(name)


class Lab:
    """A lab as a context manager: built on enter, removed on exit (even on error).

        with Lab("topologies/routing.yaml") as lab:
            lab.run("host1", ["ping", "-c1", "192.168.2.10"])
    """

    def __init__(self, topo, name: str | None = None):
        self.topo = load_topology(topo) if isinstance(topo, str) else topo
        if name is not None:  # "" is no name either: never the file's own, silently
            from .record import replace
            self.topo = replace(self.topo, name=model.check_name(name))
        self.name = self.topo.name

    def up(self, progress=None, wait: bool = False) -> UpResult:
        return up(self.topo, progress, wait)

    def down(self, wait: bool = False) -> DownResult:
        return down(self.name, wait)

    def run(self, node: str, argv, check=False, capture=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        return run(self.name, node, argv, check=check, capture_output=capture, text=True, timeout=timeout, **kw)

    def status(self) -> dict:
        return status(self.name)

    def verify(self, count: int | None = None):
        return verify(self.name, count)

    def trace(self, source: str, target: str | None = None):
        return trace(self.name, source, target)

    def load(self, **kwargs):
        return load(self.name, **kwargs)

    def why(self, source: str, target: str | None = None):
        return why(self.name, source, target)

    def fail(self, node: str, link: str | None = None, whole_node: bool = False):
        return fail(self.name, node, link, whole_node)

    def heal(self, node: str, link: str | None = None, whole_node: bool = False):
        return heal(self.name, node, link, whole_node)

    def capture(self, links=None):
        """A context manager sniffing every link (or the named segments/taps) around a block of traffic;
        afterwards .packets(link) gives scapy packets and .pcap(dir) writes pcap files."""
        from .verify.captured import Captured
        return Captured(model.resolve(self.topo), links)

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down_quietly()
            raise
        return self

    def down_quietly(self):
        try:
            self.down()
        except UsageError:
            pass

    def __exit__(self, *exc):
        self.down_quietly()
