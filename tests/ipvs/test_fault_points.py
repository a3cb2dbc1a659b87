"""Every fault point of `up` for dr.yaml, where the kernel has IPVS (the VM tier): the test hook
NSLAB_TEST_FAULT (kernel/apply.py) makes step k fail before it changes anything, and a real SIGINT arrive
before it, for every k; the other two kinds (a failure, or a SIGINT, once the step made its change) at the
steps of the kinds of action the netns tier's labs never meet (IPVS service and real servers), and the first
and last step. (The netns tier runs all four kinds at every step of routing.yaml and snat.yaml; in the
emulated VM each `up` of dr.yaml takes seconds.) After each: no namespace, no process, no state, the host (the VM's own namespace)
as it was, and the error names the step."""

import os
from dataclasses import replace

import pytest

from nslab import api
from nslab.kernel.apply import FAULT_KINDS


def _dr(root_dir, tag):
    topo = api.load_topology(str(root_dir / "topologies" / "dr.yaml"))
    return replace(topo, name=f"crash{os.getpid() % 1000}d{tag}")


def spread(root_dir, plan) -> set:
    """1-based steps: those of the kinds of action the netns tier's labs (routing, snat) never meet, there
    faulted every way at every step, and the first and the last step."""
    met = {type(a) for lab in ("routing", "snat")
           for a in api.plan(api.load_topology(str(root_dir / "topologies" / f"{lab}.yaml")))}
    return {1, len(plan)} | {k for k, a in enumerate(plan, 1) if type(a) not in met}


@pytest.mark.parametrize("how", ["fail", "sigint"])
def test_every_step_of_dr_up_failing_or_interrupted_leaves_nothing(root_dir, fault_every_step, how):
    topo = _dr(root_dir, str(FAULT_KINDS.index(how)))
    total = len(api.plan(topo))
    assert fault_every_step(topo, how) == total >= 80


@pytest.mark.parametrize("how", ["fail-after", "sigint-after"])
def test_the_other_faults_at_a_spread_of_dr_steps_leave_nothing(root_dir, fault_every_step, how):
    topo = _dr(root_dir, str(FAULT_KINDS.index(how)))
    plan = api.plan(topo)
    steps = spread(root_dir, plan)
    assert {type(plan[k - 1]).__name__ for k in steps} >= {"IpvsService", "IpvsDest", "StartApp"}
    assert fault_every_step(topo, how, steps) == len(steps)
