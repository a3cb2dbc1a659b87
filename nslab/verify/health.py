"""verify's health-check experiment on a keepalived service: stop one real server's app, wait for keepalived
to take it out, send traffic; heal it, wait for it to come back, send again (concepts.check_health judges)."""

import time

from .. import faults, state
from ..kernel import keepalived
from ..kernel.session import Session
from . import concepts, run


def _serving_view(rlab, svc, node):
    """(healthy, ipvs weight) of node as the director holding the VIP sees it (the first one for a single)."""
    with Session() as s:
        view = keepalived.status(s, rlab, svc)
    director = next((d for d in view if d["holds_vip"]), view[0])
    rs = next(r for r in director["real_servers"] if r["node"] == node)
    return rs["healthy"], rs["weight"]


def _wait(rlab, svc, node, want, within):
    """Seconds until node's (healthy, in the table) is want; None after `within`."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        healthy, weight = _serving_view(rlab, svc, node)
        if (healthy, bool(weight)) == want:
            return round(time.monotonic() - start, 2)
        time.sleep(0.1)
    return None


def check(rlab, client, target, count=30):
    """The health concept's Result for the target's service, or None when it has no health checks."""
    svc = target.service
    if not svc or not svc.health:
        return None
    h = svc.health
    bound = h.interval * (h.retries + 1) + 2
    ev = {"bound": bound, "waited": 5 * bound}
    rs = next((r for r in svc.real_servers if r.weight > 0 and rlab.app(r.node)), None)
    if rs is None:
        ev["skip"] = "no real server with a weight runs an app nslab could stop and start again"
    elif rs.node in {f["node"] for f in state.faults(rlab.name)}:
        ev["skip"] = f"{rs.node} is failed already (nslab fail): heal it first"
    if ev.get("skip"):
        return concepts.check_health(svc, ev)
    ev["node"] = rs.node
    faults.fail(rlab.topology, rs.node)
    try:
        ev["out_after"] = _wait(rlab, svc, rs.node, (False, False), ev["waited"])
        ev["failed"] = run.send(rlab, client, target, count, concurrency=3)
    finally:
        faults.heal(rlab.topology, rs.node)
    ev["back_after"] = _wait(rlab, svc, rs.node, (True, True), ev["waited"])
    ev["healed"] = run.send(rlab, client, target, count, concurrency=3)
    return concepts.check_health(svc, ev)
