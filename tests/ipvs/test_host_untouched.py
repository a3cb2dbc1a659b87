"""Host untouched around the LVS labs (the others are in tests/netns/test_host_untouched.py): the host's
links, addresses, routes, static neighbours, nft ruleset, the sysctls nslab knows (keys ip_vs adds when it
loads aside) and /run/netns are the same before `up`, while the lab is up, and after `down` (see
host_snapshot in tests/conftest.py). The first TUN lab loads the ipip module, whose fallback device tunl0
then appears in every namespace, the host's too: that, and only that, is excused (MODULE_DEVICES).

Here the three forwarding methods' labs: in the emulated VM each up and down of a lab with apps takes about
a minute, so the broken variants and the keepalived labs (built of the same actions) are not repeated."""

import os
from dataclasses import replace

import pytest

from nslab import api
from nslab.pytest_plugin import needs_of

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "topologies")
LABS = ["tun.yaml", "dr.yaml", "nat.yaml"]  # tun first: its module load is what the snapshot must excuse


def test_these_are_lvs_labs():
    assert all(needs_of(api.load_topology(os.path.join(ROOT, p))) for p in LABS)


@pytest.mark.parametrize("path", LABS)
def test_up_and_down_leave_the_host_as_it_was(host_unchanged, path):
    topo = api.load_topology(os.path.join(ROOT, path))
    host_unchanged.around(replace(topo, name=f"crash{os.getpid() % 1000}v{LABS.index(path)}"))
