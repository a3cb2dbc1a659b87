"""`nslab why` on real IPVS: the shipped LVS labs are answered; each broken LVS lab gets exit 1 naming its cause
and node from the kernel's evidence (ARP answers, the IPVS table, tunl0, rp_filter counters, the reply's
path), and fails `verify` too."""

import os

import pytest

from nslab import api

from .conftest import leftovers


def unique(stem: str) -> str:
    return f"{stem}{os.getpid() % 1000}"


@pytest.mark.parametrize("lab", ["dr", "nat", "tun"])
def test_shipped_lvs_labs_are_answered(root_dir, lab):
    name = unique(f"wy{lab}")
    with api.Lab(str(root_dir / "topologies" / f"{lab}.yaml"), name=name) as made:
        found = made.why("client", "web")
    assert found.ok and found.answered == found.sent, str(found)
    assert found.request[:2] == ["client", "router"] and found.request[-1] in ("rs1", "rs2"), str(found)
    assert leftovers(name) == []


CATALOGUE = [  # file, cause, nodes it may name, fix path, words a user would search for
    ("dr-no-arp-tuning", "dr-arp", ("rs1", "rs2"), "services.web.arp_tuning", "ARP"),
    ("nat-wrong-gateway", "nat-bypass", ("rs1",), "nodes.rs1.gateway", "bypassed the director"),
    ("tun-strict-rp-filter", "tun-rp-filter", ("rs1", "rs2"), None, "rp_filter"),
    ("lvs-zero-weight", "ipvs-zero-weight", ("director",), "services.web.real_servers.rs1.weight", "weight 0"),
    ("lvs-no-real-server", "ipvs-no-real-server", ("director",), "services.web.real_servers", "no real server"),
    ("dr-rs-without-vip", "dr-no-vip", ("rs1",), "nodes.rs1.exec", "lacks the VIP"),
    ("tun-tunl0-down", "tun-no-tunl0", ("rs1",), "nodes.rs1.exec", "tunl0"),
]


@pytest.mark.parametrize("rel,cause,nodes,fix,words", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_broken_lvs_lab_names_its_cause_and_node(root_dir, rel, cause, nodes, fix, words):
    name = unique("wy" + "".join(w[0] for w in rel.split("-")))
    with api.Lab(str(root_dir / "topologies" / "broken" / f"{rel}.yaml"), name=name) as lab:
        found = lab.why("client", "web")
        text = str(found)
        assert not found.ok, text
        f = found.finding
        assert (f.cause, f.node in nodes) == (cause, True), text
        assert words in text and f.evidence, text
        if fix:
            assert f.fix_path == fix, text
        else:
            assert f.fix_path.startswith(f"nodes.{f.node}.sysctls."), text
        if rel not in ("dr-no-arp-tuning", "nat-wrong-gateway", "tun-strict-rp-filter"):  # test_verify_lvs has those
            assert not lab.verify().ok  # every file in topologies/broken/ fails verify too
