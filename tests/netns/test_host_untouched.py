"""Host untouched, for every shipped lab the host kernel can run (topologies/ and topologies/broken/; the LVS
ones need IPVS, so the VM tier): the host's links, addresses, routes, static neighbours, nft
ruleset, the sysctls nslab knows and /run/netns are the same before `up`, while the lab is up, and after
`down` (see host_snapshot in tests/conftest.py)."""

import os
from dataclasses import replace

import pytest
from conftest import shipped_labs

from nslab import api

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "topologies")
HOST_LABS = shipped_labs(vm=False)


def test_the_split_covers_every_shipped_lab():
    assert len(HOST_LABS) >= 10 and "routing.yaml" in HOST_LABS and "snat.yaml" in HOST_LABS


@pytest.mark.parametrize("path", HOST_LABS)
def test_up_and_down_leave_the_host_as_it_was(host_unchanged, path):
    topo = api.load_topology(os.path.join(ROOT, path))
    host_unchanged.around(replace(topo, name=f"crash{os.getpid() % 1000}h{HOST_LABS.index(path)}"))


def test_the_host_check_sees_each_kind_of_change(host_unchanged):
    """The comparison itself, on altered copies of a real snapshot (the host is never changed for real)."""
    import copy
    import time

    from conftest import host_changes
    before = host_unchanged.snapshot()
    lab = "crashseen"
    assert host_changes(before, copy.deepcopy(before), lab) == []
    alterations = {
        "a link": lambda s: s["links"].append({"ifname": "crash0"}),
        "an address": lambda s: s["addrs"].append({"ifname": "lo", "addr_info": [{"local": "10.9.9.9"}]}),
        "a route": lambda s: s["routes"][0].append({"dst": "10.9.9.0/24"}),
        "a neighbour": lambda s: s["neighbours"].append({"dst": "10.9.9.9", "state": ["PERMANENT"]}),
        "the nft ruleset": lambda s: s.update(nft=s["nft"] + "table ip crash {}\n"),
        "a sysctl": lambda s: s["sysctls"].update({"net.ipv4.ip_forward": "x"}),
        "a sysctl gone": lambda s: s["sysctls"].pop("net.ipv4.ip_forward"),
        "a lab namespace left": lambda s: s["netns"].update({f"{lab}-n1": time.time()}),
    }
    for what, alter in alterations.items():
        after = copy.deepcopy(before)
        alter(after)
        assert host_changes(before, after, lab), what
    # ipip's fallback device, as its module load makes it in every namespace: excused; anything more is not
    tunl0 = {"ifname": "tunl0", "flags": ["NOARP"], "link_type": "ipip", "linkinfo": {"info_kind": "ipip"}}
    loaded = copy.deepcopy(before)
    loaded["links"].append(tunl0)
    loaded["addrs"].append({"ifname": "tunl0", "addr_info": []})
    assert host_changes(before, loaded, lab) == [], "tunl0 as the ipip module makes it"
    module_made = {
        "tunl0 up": lambda s: s["links"][-1].update(flags=["NOARP", "UP"]),
        "tunl0 with an address": lambda s: s["addrs"][-1].update(addr_info=[{"local": "10.9.9.9"}]),
        "tunl0 of another kind": lambda s: s["links"][-1].update(linkinfo={"info_kind": "gre"}),
        "gre0 beside it": lambda s: s["links"].append(dict(tunl0, ifname="gre0", linkinfo={"info_kind": "gre"})),
        "a route beside it": lambda s: s["routes"][0].append({"dst": "10.9.9.0/24", "dev": "tunl0"}),
    }
    for what, alter in module_made.items():
        after = copy.deepcopy(loaded)
        alter(after)
        assert host_changes(before, after, lab), what
    old = dict(before, netns={"someones-own": before["taken"] - 120}, labs=set())
    assert host_changes(old, dict(before, netns={}), lab), "a namespace that is no lab's, gone"
    assert not host_changes(dict(old, labs={"someones"}), dict(before, netns={}), lab), "another lab's, gone"
