"""The pytest plugin installed with nslab (entry point `pytest11`): real labs in a user's own tests.

    def test_router_keeps_the_ip_pair(nslab_lab):
        lab = nslab_lab("topologies/routing.yaml")      # up now, down when the test ends, whatever happens
        with lab.capture() as cap:
            lab.run("host1", ["ping", "-c1", "192.168.2.10"])
        (a,) = [p for p in cap.packets("lan1") if p.haslayer("ICMP") and p["ICMP"].type == 8]
        ...

The lab is nslab.api.Lab: also lab.load(...), lab.fail(node, link=None, whole_node=False) and lab.heal(...).
Without root the fixture skips with the reason; on a kernel without what a lab needs (IPVS, ipip) it
skips naming `nslab vm -- python3 -m pytest ...`, which runs the same tests in the kernel VM.
`@pytest.mark.nslab_needs("ipvs")` lets a test say what it needs itself.
"""

import itertools
import os
import signal

import pytest

from . import interrupts
from .record import replace

_counter = itertools.count()
_alive = []  # labs the fixture brought up and has not yet taken down (for Ctrl-C)


def pytest_configure(config):
    config.addinivalue_line("markers", "nslab_needs(*features): the test needs these kernel features "
                            "(ipvs, ipip, vlan, netem); it is skipped, naming `nslab vm`, where they are missing")


def _missing(features) -> list[str]:
    from .kernel import caps
    probes = {"ipvs": caps.has_ipvs, "ipip": caps.has_ipip, "vlan": caps.has_vlan, "netem": caps.has_netem}
    unknown = [f for f in features if f not in probes]
    if unknown:
        raise pytest.UsageError(f"nslab_needs: unknown feature {unknown[0]!r} (known: {', '.join(probes)})")
    return [f for f in features if not probes[f]()]


def _vm_hint(features, item=None) -> str:
    where = item.nodeid.split("::")[0] if item is not None else "..."
    return (f"the running kernel lacks {', '.join(features)}: run these tests in the kernel VM with "
            f"`nslab vm -- python3 -m pytest {where}`")


def needs_of(topo) -> list[str]:
    """The kernel features a topology needs beyond namespaces, veth and bridges."""
    out = []
    if topo.services:
        out.append("ipvs")
    if any(s.forward.value == "tun" for s in topo.services):
        out.append("ipip")
    if any(i.vlans for n in topo.nodes for i in n.interfaces):
        out.append("vlan")
    if any(i.impair for n in topo.nodes for i in n.interfaces):
        out.append("netem")
    return out


def pytest_runtest_setup(item):
    for mark in item.iter_markers("nslab_needs"):
        missing = _missing(mark.args)
        if missing:
            pytest.skip(_vm_hint(missing, item))


def end_labs_on_sigterm() -> None:
    """Make SIGTERM (what `timeout` and CI runners send) end the session like Ctrl-C, so labs still go down.

    Only while nslab labs are in use, and only when nobody else handles SIGTERM: pytest itself dies on it
    without running any teardown, which would leave namespaces and processes behind."""
    interrupts.interrupt_on(signal.SIGTERM)


def _unique_name(topo) -> str:
    stem = "".join(c for c in topo.name if c.isalnum())[:6] or "lab"
    return f"{stem}{os.getpid() % 10000}x{next(_counter)}"


@pytest.fixture
def nslab_lab(request):
    """A factory: nslab_lab(path_or_topology, name=None) brings a lab up under a unique name (so tests can
    run side by side) and returns its nslab.api.Lab; every lab it made goes down when the test ends."""
    from . import api
    from .errors import EnvironmentMissing
    made = []

    def make(topology, name=None):
        if os.geteuid() != 0:
            pytest.skip("nslab labs need root (network namespaces): run pytest as root")
        topo = api.load_topology(str(topology)) if not hasattr(topology, "nodes") else topology
        missing = _missing(needs_of(topo))
        if missing:
            pytest.skip(_vm_hint(missing, request.node))
        end_labs_on_sigterm()
        lab = api.Lab(replace(topo, name=name or _unique_name(topo)))
        made.append(lab)
        _alive.append(lab)
        try:
            lab.up()
        except EnvironmentMissing as e:
            pytest.skip(str(e))
        return lab

    yield make
    for lab in reversed(made):
        if lab in _alive:  # after a Ctrl-C or SIGTERM, sessionfinish may have taken it down already
            _alive.remove(lab)
            lab.down_quietly()


def pytest_sessionfinish(session, exitstatus):
    """A Ctrl-C skips fixture teardown: take down whatever the fixture still has up."""
    while _alive:
        _alive.pop().down_quietly()
