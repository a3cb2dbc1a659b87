"""Link impairment on an interface: the kernel's netem as its root qdisc (delay, jitter, loss) and, for a
rate, tbf beneath it (netem's one child class, 1:1), through pyroute2's tc."""

import errno

from .addrs import GONE, _netlink_error

ROOT = 0x10000  # handle 1:
CHILD = 0x100000  # handle 10:
NETEM_CHILD = 0x10001  # class 1:1, where netem hands packets on


def _qdiscs(s, a):
    idx = s.index(a.ns, a.dev)
    if idx is None:
        return None, []
    return idx, [q for q in s.ipr(a.ns).get_qdiscs(index=idx)]


def _netem_opts(q) -> dict:
    opts = q.get_attr("TCA_OPTIONS")
    return {} if opts is None else {k: opts.get(k) for k in ("delay", "jitter", "loss")}


def _shows(s, a) -> bool:
    """The interface has exactly this netem root (and the tbf child iff a rate is set)."""
    from pyroute2.netlink.rtnl.tcmsg.sched_netem import get_parameters
    idx, qdiscs = _qdiscs(s, a)
    root = next((q for q in qdiscs if q["parent"] == 0xFFFFFFFF), None)
    if root is None or root.get_attr("TCA_KIND") != "netem" or root["handle"] != ROOT:
        return False
    want = get_parameters(_netem_args(a))
    got = _netem_opts(root)
    if any(got.get(k) != want[k] for k in ("delay", "jitter", "loss")):
        return False
    tbf = [q for q in qdiscs if q["parent"] == NETEM_CHILD and q.get_attr("TCA_KIND") == "tbf"]
    return bool(tbf) == bool(a.rate_bit)


def _netem_args(a) -> dict:
    return {"delay": a.delay_us, "jitter": a.jitter_us, "loss": a.loss_pct}


class ImpairExecutor:
    """netem (and tbf) on an interface. Undo data: None; undo removes the root qdisc, which takes the
    child with it and gives the interface back its default."""

    @staticmethod
    def done(s, a):
        return s.index(a.ns, a.dev) is not None and _shows(s, a)

    @staticmethod
    def do(s, a):
        idx = s.index(a.ns, a.dev)
        ipr = s.ipr(a.ns)
        ipr.tc("replace", "netem", idx, ROOT, **_netem_args(a))
        if a.rate_bit:
            ipr.tc("replace", "tbf", idx, CHILD, parent=NETEM_CHILD, rate=f"{a.rate_bit}bit",
                   burst=a.burst, latency=f"{a.TBF_LATENCY_MS}ms")
        return None

    @staticmethod
    def undo(s, a, undo_data):
        from . import netns
        idx = s.index(a.ns, a.dev) if netns.exists(a.ns) else None
        if idx is None:
            return
        try:
            s.ipr(a.ns).tc("del", "netem", idx, ROOT)
        except _netlink_error() as e:
            if e.code not in GONE + (errno.EINVAL,):  # EINVAL: no such qdisc to delete
                raise


def qdisc_counts(s, ns: str, dev: str) -> dict[str, tuple[int, int]]:
    """{kind: (packets sent, packets dropped)} of each qdisc on dev (netem's drops are its loss, tbf's are
    what came faster than the rate)."""
    idx = s.index(ns, dev)
    out = {}
    for q in (s.ipr(ns).get_qdiscs(index=idx) if idx is not None else []):
        basic = q.get_attr("TCA_STATS2")
        basic = basic.get_attr("TCA_STATS_BASIC") if basic else None
        queue = q.get_attr("TCA_STATS2").get_attr("TCA_STATS_QUEUE") if q.get_attr("TCA_STATS2") else None
        out[q.get_attr("TCA_KIND")] = (basic["packets"] if basic else 0, queue["drops"] if queue else 0)
    return out
