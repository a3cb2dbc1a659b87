"""verify and trace on real IPVS: the shipped LVS labs pass, each broken lab fails for its own reason."""

import json

import pytest

from nslab import api, cli

from .conftest import leftovers


def verify(root_dir, path, capsys):
    rc = cli.main(["verify", str(root_dir / "topologies" / path)])
    out = capsys.readouterr()
    return rc, out.out + out.err


@pytest.mark.parametrize("lab", ["nat", "dr", "tun"])
def test_verify_passes_on_shipped_lvs_labs(root_dir, capsys, lab):
    rc, out = verify(root_dir, f"{lab}.yaml", capsys)
    assert rc == 0, out
    assert f"PASS lvs-{lab}" in out and "PASS scheduler" in out and "FAIL" not in out
    assert leftovers(lab) == []  # verify brought the lab up, so it took it down


@pytest.mark.parametrize("path,expected", [
    ("broken/dr-no-arp-tuning.yaml", "answered ARP for the VIP 10.0.0.100 (arp_tuning is off): the router cached"),
    ("broken/nat-wrong-gateway.yaml", "rs1 sent its reply from 10.1.0.11 to 192.168.1.10 through router, not "
                                      "through the director director"),
    ("broken/tun-strict-rp-filter.yaml", "rp_filter (1, strict) drops such packets silently"),
])
def test_broken_labs_fail_and_say_why(root_dir, capsys, path, expected):
    rc, out = verify(root_dir, path, capsys)
    assert rc == 1, out
    assert expected in out, out


def test_trace_dr_request_and_reply_paths(root_dir, capsys):
    lab = api.Lab(str(root_dir / "topologies" / "dr.yaml"), name="trdr")
    with lab:
        assert cli.main(["trace", "trdr", "client", "web", "--json"]) == 0
        walk = json.loads(capsys.readouterr().out)
    packets = [h for h in walk["hops"] if h["kind"] in ("request", "reply")]
    request = [(h["from"], h["to"]) for h in packets if h["kind"] == "request"]
    reply = [(h["from"], h["to"]) for h in packets if h["kind"] == "reply"]
    rs = request[-1][1]
    assert rs in ("rs1", "rs2")
    assert request == [("client", "router"), ("router", "director"), ("director", rs)]
    assert reply == [(rs, "router"), ("router", "client")]
