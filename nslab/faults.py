"""Faults on demand: fail a node's processes, one of its links, or the whole node, and heal exactly what
each fail did. Each fault is recorded in the lab's state (state.faults) until it is healed or `up` brings
the lab back to its file.

A fault record: {"node", "kind": processes | link | node, "iface" (link), "since" (epoch s), "processes":
[the journalled steps it stopped: action record and pid], "links": {ifname: [routes the kernel dropped]}}.
"""

import time

from . import state
from .errors import UsageError
from .model import names
from .plan.actions import Action
from .record import field, record


@record(frozen=False)
class FaultResult:
    """What one fail or heal did: changed is False when there was nothing to do (message says why)."""

    lab: str
    node: str
    kind: str
    iface: str | None = None
    changed: bool = True
    message: str = ""
    processes: list = field(default_factory=list)  # "kind :port (pid N)" of each process stopped or started
    links: list = field(default_factory=list)  # interfaces taken down or brought up
    routes: int = 0  # routes saved (fail) or put back (heal)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self):
        return self.message


def what(kind: str, node: str, iface: str | None = None) -> str:
    return {"processes": f"{node}'s processes", "link": f"{node}:{iface}", "node": f"node {node}"}[kind]


def heal_command(lab: str, fault: dict) -> str:
    flag = {"processes": "", "link": f" --link {fault.get('iface')}", "node": " --node"}[fault["kind"]]
    return f"nslab heal {lab} {fault['node']}{flag}"


def _kind(iface, whole_node) -> str:
    return "node" if whole_node else "link" if iface else "processes"


def _same(fault, node, kind, iface):
    return fault["node"] == node and fault["kind"] == kind and fault.get("iface") == iface


def _covers(fault, node, kind, iface):
    """A failed node covers its processes and the links it took down."""
    return (fault["node"] == node and fault["kind"] == "node" and kind != "node"
            and (kind == "processes" or iface in fault["links"]))


def _links(topo, node: str) -> list[str]:
    return [i.name for i in topo.node(node).interfaces if i.switch or i.peer]


def check_target(topo, node: str, iface: str | None) -> None:
    """Raises UsageError for a node or interface the lab doesn't have (with the ones it has)."""
    if not topo.has_node(node):
        raise UsageError(f"lab '{topo.name}' has no node '{node}' (nodes: {', '.join(n.name for n in topo.nodes)})")
    if iface is not None and iface not in _links(topo, node):
        raise UsageError(f"node '{node}' of lab '{topo.name}' has no link '{iface}' "
                         f"(its links: {', '.join(_links(topo, node)) or 'none'})")


def _processes(s, journal, ns: str) -> list:
    """The journalled steps of ns that run a lab process (apps, and any other executor that says it runs one)
    whose process runs now: (action, pid), newest step per object."""
    from .kernel.executors import executor, runs_process
    newest = {a.identity(): (a, u) for a, u in journal.steps() if a.ns == ns and runs_process(a)}
    return [(a, u) for a, u in newest.values() if executor(a).done(s, a)]


def fail(topo, node: str, iface: str | None = None, whole_node: bool = False) -> FaultResult:
    """Stop every lab process of the node (default), take one link down (iface), or both for every link
    (whole_node). Raises UsageError for an unknown node or link, or a node with nothing to stop."""
    from .kernel import apply as kapply
    from .kernel import faults as kfaults
    from .kernel.session import Session
    check_target(topo, node, iface)
    lab, ns, kind = topo.name, names.node_ns(topo.name, node), _kind(iface, whole_node)
    result = FaultResult(lab, node, kind, iface)
    with state.locked(lab):
        faults = state.faults(lab)
        done = next((f for f in faults if _same(f, node, kind, iface) or _covers(f, node, kind, iface)), None)
        if done:
            result.changed = False
            by = "" if done["kind"] == kind else f" with {what(done['kind'], node)}"
            result.message = (f"{what(kind, node, iface)} failed already{by} (since "
                              f"{time.strftime('%H:%M:%S', time.localtime(done['since']))}); nothing changed. "
                              f"`{heal_command(lab, done)}` heals it")
            return result
        record = {"node": node, "kind": kind, "since": time.time(), "processes": [], "links": {}}
        if iface:
            record["iface"] = iface
        with state.Journal(lab) as journal, Session(run_dir=state.lab_dir(lab), journalled=journal.latest()) as s:
            running = _processes(s, journal, ns) if kind != "link" else []
            links = [iface] if iface else _links(topo, node) if whole_node else []
            links = [i for i in links if kfaults.is_up(s, ns, i)]
            if kind == "processes" and not running:
                raise UsageError(f"node '{node}' runs no lab process to stop (no app, or it has stopped already: "
                                 f"see `nslab status {lab}`)")
            if kind == "link" and not links:
                raise UsageError(f"{node}:{iface} is down already, and not by `nslab fail`: `nslab up` the lab's "
                                 "file to bring it back")
            # A dying node drops off its links first: whatever its processes send as they stop (keepalived's
            # VRRP goodbye) never reaches its peers, which must notice it is gone by themselves.
            for i in links:
                record["links"][i] = kfaults.link_down(s, ns, i)
            kapply.undo(s, running, journal)  # journalled as undone: status and `up` see them stopped
            record["processes"] = [{"action": a.record(), "pid": pid} for a, pid in running]
        state.set_faults(lab, faults + [record])
    result.processes = [_describe(Action.rebuild(p["action"]), p["pid"]) for p in record["processes"]]
    result.links = list(record["links"])
    result.routes = sum(len(r) for r in record["links"].values())
    parts = ([f"stopped {', '.join(result.processes)}"] if result.processes else []) + (
        [f"took {', '.join(result.links)} down ({result.routes} route(s) went with it)"] if result.links else [])
    result.message = f"failed {what(kind, node, iface)}: {'; '.join(parts)}. `{heal_command(lab, record)}` heals it"
    return result


def heal(topo, node: str, iface: str | None = None, whole_node: bool = False) -> FaultResult:
    """Undo exactly what the matching fail did: its links up with the routes the kernel dropped put back,
    then its processes started again as `up` starts them. Raises UsageError for an unknown node or link,
    KernelError when a process does not start."""
    from .kernel import apply as kapply
    from .kernel import faults as kfaults
    from .kernel.session import Session
    check_target(topo, node, iface)
    lab, ns, kind = topo.name, names.node_ns(topo.name, node), _kind(iface, whole_node)
    result = FaultResult(lab, node, kind, iface)
    with state.locked(lab):
        faults = state.faults(lab)
        record = next((f for f in faults if _same(f, node, kind, iface)), None)
        if record is None:
            others = [f for f in faults if f["node"] == node]
            result.changed = False
            result.message = f"{what(kind, node, iface)}: not failed, nothing to heal" + (
                "; failed: " + ", ".join(f"{what(f['kind'], node, f.get('iface'))} (`{heal_command(lab, f)}`)"
                                         for f in others) if others else "")
            return result
        with state.Journal(lab) as journal, Session(run_dir=state.lab_dir(lab), journalled=journal.latest()) as s:
            for i, routes in record["links"].items():
                result.routes += len(kfaults.link_up(s, ns, i, routes))
                result.links.append(i)
            actions = [Action.rebuild(p["action"]) for p in record["processes"]]
            kapply.apply(s, actions, journal=journal)
            pids = journal.latest()
            result.processes = [_describe(a, pids.get(a.identity())) for a in actions]
        state.set_faults(lab, [f for f in faults if f is not record])
    parts = ([f"brought {', '.join(result.links)} up ({result.routes} route(s) put back)"] if result.links else []) + (
        [f"started {', '.join(result.processes)}"] if result.processes else [])
    result.message = f"healed {what(kind, node, iface)}: {'; '.join(parts) or 'nothing was left to undo'}"
    return result


def _describe(action, pid) -> str:
    kind, port = getattr(action, "kind", None), getattr(action, "port", None)
    label = f"{kind} :{port}" if kind and port else type(action).__name__
    return f"{label} (pid {pid})"


@record
class Scheduled:
    """A fault injected during a load: `node` failed (its processes, one link, or the whole node) fail_at
    seconds into it, and healed heal_at seconds into it (None: left failed after the load)."""

    node: str
    fail_at: float
    heal_at: float | None = None
    link: str | None = None
    whole_node: bool = False

    def check(self, topo, duration: float) -> None:
        """Raises UsageError for an unknown node or link, or times outside the load."""
        check_target(topo, self.node, self.link)
        if not 0 <= self.fail_at < duration:
            raise UsageError(f"the fail at {self.fail_at:g} s must fall within the load's {duration:g} s")
        if self.heal_at is not None and not self.fail_at < self.heal_at < duration:
            raise UsageError(f"the heal at {self.heal_at:g} s must come after the fail ({self.fail_at:g} s) "
                             f"and within the load's {duration:g} s")

    def describe(self) -> str:
        return what(_kind(self.link, self.whole_node), self.node, self.link)


class Injector:
    """Runs a Scheduled fault on time from a thread of its own; events: what happened when (seconds after
    t0), with the fail's or heal's message, or the error that stopped it. before() is called right before
    each."""

    def __init__(self, topo, fault: Scheduled, before=None):
        import threading
        from .kernel import faults as kfaults
        kfaults.prepare()
        self.topo, self.fault, self.events, self._before = topo, fault, [], before
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nslab-fault", daemon=True)
        self._t0 = None

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def _at(self, when: float, name: str, func) -> bool:
        if self._cancel.wait(max(0.0, self._t0 + when - time.monotonic())):
            return False
        if self._before:
            self._before()
        began = time.monotonic() - self._t0
        f = self.fault
        event = {"at": round(began, 3), "what": f"{name} {f.describe()}", "planned_at": when}
        try:
            event["message"] = func(self.topo, f.node, f.link, f.whole_node).message
        except Exception as e:  # noqa: BLE001 - reported with the load (the lab may be left failed)
            event["error"] = str(e)
        event["took_s"] = round(time.monotonic() - self._t0 - began, 3)
        self.events.append(event)
        return "error" not in event

    def _run(self):
        if self._at(self.fault.fail_at, "fail", fail) and self.fault.heal_at is not None:
            self._at(self.fault.heal_at, "heal", heal)

    def stop(self) -> list:
        """Cancel what has not happened yet (the load ended early); wait for what is under way."""
        self._cancel.set()
        if self._t0 is not None:  # started
            self._thread.join()
        return self.events


class LoadWatch:
    """A fault injected during a wrk load, and the client's view of it (verify/timeline.py): started with
    wrk, the sampler stopped once every wrk thread is done (before wrk ends its idle connections)."""

    def __init__(self, topo, client_ns, tgt, fault, progress, stop_hook):
        from .verify import timeline
        self.fault, self._progress, self._stop_hook = fault, progress, stop_hook
        self.sampler = timeline.Sampler(client_ns, tgt.ip, tgt.port)
        self.injector = Injector(topo, fault, before=self.sampler.sample)
        self.samples = None

    def start(self, t0: float) -> None:
        self.sampler.start(t0)
        self.injector.start(t0)

    def progress(self, answered, elapsed):
        self.sampler.note_answered(answered)
        if self._progress:
            self._progress(answered, elapsed)

    def before_stop(self):
        self.samples = self.sampler.stop()
        if self._stop_hook:
            self._stop_hook()

    def finish(self) -> dict:
        from .verify import timeline
        events = self.injector.stop()
        if self.samples is None:  # wrk ended without its threads saying they were done
            self.samples = self.sampler.stop()
        return timeline.summarize(self.samples, events, self.fault.fail_at, self.fault.heal_at)
