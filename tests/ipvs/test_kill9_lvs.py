"""`kill -9` of `up` of the LVS labs, at known moments: the test hook's kinds `kill` and `kill-after`
(NSLAB_TEST_FAULT=K:kill, kernel/apply.py) send the run SIGKILL before step K, or once step K made its change.
dr.yaml's director gets its IPVS table from nslab, dr-health.yaml's from keepalived. After each kill `status`
shows the lab half-built without failing on what isn't there yet (a director not made: it once raised
FileNotFoundError), and `down` ends the apps and keepalived the killed run started and leaves nothing. The run
is forked, not a new Python: in the emulated VM a Python start with nslab's imports takes seconds. (The netns
tier kills `up` and `down` of a 40-node lab at 20 moments each, by time.)"""

import os
import signal
from dataclasses import replace

import pytest
from conftest import lab_leftovers, running

from nslab import api
from nslab.kernel import netns
from nslab.kernel.apply import FAULT_ENV


def _moments(topo, plan) -> list[tuple[int, str]]:
    """(1-based step, kill or kill-after): nothing made yet; the director's namespace not made yet; and
    once each kind of action only LVS labs have was done the first time, and the last step."""
    first = {}
    for k, a in enumerate(plan, 1):
        first.setdefault(type(a).__name__, k)
    director = next(k for k, a in enumerate(plan, 1) if type(a).__name__ == "AddNetns" and
                    a.ns.endswith("-" + topo.services[0].director))
    after = {first[kind] for kind in ("IpvsService", "IpvsDest", "StartApp", "StartKeepalived") if kind in first}
    return [(1, "kill"), (director, "kill")] + [(k, "kill-after") for k in sorted(after | {len(plan)})]


def _up_killed_at(topo, k, how) -> int:
    pid = os.fork()
    if pid == 0:  # the child never returns to pytest
        try:
            os.environ[FAULT_ENV] = f"{k}:{how}"
            api.up(topo)
        finally:
            os._exit(70)
    return os.waitpid(pid, 0)[1]



@pytest.mark.parametrize("lab", ["dr", "dr-health"])
def test_up_killed_at_known_moments_then_status_and_down_leave_nothing(root_dir, host_unchanged, lab):
    topo = api.load_topology(str(root_dir / "topologies" / f"{lab}.yaml"))
    topo = replace(topo, name=f"kill{os.getpid() % 1000}{lab[-1]}")
    plan = api.plan(topo)
    before, seen = host_unchanged.snapshot(), []
    for k, how in _moments(topo, plan):
        where = f"{how} at step {k} ({type(plan[k - 1]).__name__})"
        status = _up_killed_at(topo, k, how)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{where}: not killed ({status})"
        st = api.status(topo.name, settle=False)
        assert st["complete"] is False, f"{where}: {st}"
        made = [n["namespace"] for n in st["nodes"] if n["exists"]]
        inside = [p for found in netns.pids_inside(made).values() for p in found]
        seen.append((where, len(made), len(inside)))
        api.down(topo.name)
        assert lab_leftovers(topo.name) == [], where
        assert not [p for p in inside if running(p)], f"{where}: processes outlived down"
    host_unchanged(before, topo.name, f"after {len(seen)} kills")
    # the moments reached what they are for: a lab without its director yet, and one with processes running
    assert any(made < len(topo.nodes) for _, made, _ in seen) and any(n > 0 for *_, n in seen), seen
