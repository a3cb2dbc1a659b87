"""Host untouched around every shipped lab that needs the kernel VM (the others are in
tests/netns/test_host_untouched.py). The tier's other tests bring each of them up anyway, so rather than a
third up and down of each (a minute apiece in the emulated VM), every lab any test here brings up is watched
(watch_the_host in tests/conftest.py): the host's links, addresses, routes, static
neighbours, nft ruleset, the sysctls nslab knows and /run/netns are as before the module once `up` returns,
just before `down`, and after the module. This file's test runs last and checks that every such lab was
watched. The first TUN lab loads the ipip module, whose fallback device tunl0 then appears in every
namespace, the host's too: that, and only that, is excused (MODULE_DEVICES in tests/conftest.py)."""

import os

import pytest
from conftest import ROOT, WATCHED, shipped_labs

from .conftest import whole_tier_ran

VM_LABS = shipped_labs(vm=True)


def test_every_vm_lab_was_watched(request):
    if not whole_tier_ran(request.session):
        pytest.skip("reads what the whole tier brought up: run all of tests/ipvs, nothing deselected")
    assert len(VM_LABS) >= 20 and {"dr.yaml", "nat.yaml", "tun.yaml"} <= set(VM_LABS)
    missing = [p for p in VM_LABS if os.path.abspath(ROOT / "topologies" / p) not in WATCHED]
    assert not missing, f"no test of the tier brought these up with the host watched: {missing}"
