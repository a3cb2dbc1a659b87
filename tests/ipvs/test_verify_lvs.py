"""verify and trace on real IPVS, through the API: the shipped LVS labs pass, each broken lab fails for its
own reason, a trace to a real server reaches the port its app really listens on."""

import pytest

from nslab import api, model

from .conftest import leftovers


def statuses(report):
    return {r.name: r.status for r in report.results}


@pytest.mark.parametrize("lab", ["nat", "dr", "tun"])
def test_verify_passes_on_shipped_lvs_labs(root_dir, lab):
    report = api.verify(str(root_dir / "topologies" / f"{lab}.yaml"))
    assert report.ok, str(report)
    got = statuses(report)
    assert got[f"lvs-{lab}"] == "PASS" and got["scheduler"] == "PASS", str(report)
    assert "FAIL" not in got.values()
    if lab == "nat":  # each client port's entry in the director's IPVS connection table, and its real server's row
        held = next(r for r in report.results if r.name == "expect[0].connections")
        assert held.status == "PASS" and "IPVS connection table holds one entry per client port" in held.summary
        assert len(held.evidence) == 20 and all("-> 10.0.0.100:80 -> 10.1.0.1" in e and "ESTABLISHED" in e
                                                 and "'s socket table: 10.1.0.1" in e for e in held.evidence), \
            held.evidence
    assert leftovers(lab) == []  # verify brought the lab up, so it took it down


@pytest.mark.parametrize("path,expected", [
    ("broken/dr-no-arp-tuning.yaml", "answered ARP for the VIP 10.0.0.100 (arp_tuning is off): the router cached"),
    ("broken/nat-wrong-gateway.yaml", "rs1 sent its reply from 10.1.0.11 to 192.168.1.10 through router, not "
                                      "through the director director"),
    ("broken/tun-strict-rp-filter.yaml", "rp_filter (1, strict) drops such packets silently"),
    ("broken/replies-dr-via-director.yaml", "the reply crossed the director director"),
    ("broken/l4l7-proxy-no-route.yaml", "a request from client failed: timed out"),
    ("broken/schedulers-weights.yaml", "the service runs wrr with weights rs1 1, rs2 1: "
                                       "services.web.real_servers.rs1.weight"),
])
def test_broken_labs_fail_and_say_why(root_dir, path, expected):
    report = api.verify(str(root_dir / "topologies" / path))
    assert not report.ok, str(report)
    assert any(expected in r.summary for r in report.failed), str(report)


def test_trace_dr_request_and_reply_paths(root_dir):
    with api.Lab(str(root_dir / "topologies" / "dr.yaml"), name="trdr") as lab:
        trace = lab.trace("client", "web")
    assert trace.ok, str(trace)
    packets = [h for h in trace.as_dict()["hops"] if h["kind"] in ("request", "reply")]
    request = [(h["from"], h["to"]) for h in packets if h["kind"] == "request"]
    reply = [(h["from"], h["to"]) for h in packets if h["kind"] == "reply"]
    rs = request[-1][1]
    assert rs in ("rs1", "rs2")
    assert request == [("client", "router"), ("router", "director"), ("director", rs)]
    assert reply == [(rs, "router"), ("router", "client")]


def test_trace_reaches_a_real_server_on_its_service_port(root_dir):
    """The real servers' apps take the service's port 8080: a trace to rs1 must aim there, not at 80."""
    text = (root_dir / "topologies" / "dr.yaml").read_text().replace("10.0.0.100:80", "10.0.0.100:8080")
    topo = model.loads(text.replace("name: dr\n", "name: dr8080\n", 1), "dr8080.yaml")
    with api.Lab(topo) as lab:
        trace = lab.trace("client", "rs1")
        via_vip = lab.load(count=20, concurrency=5)
    assert trace.ok and trace.target == "10.0.0.11:8080", str(trace)
    assert trace.walk.server == "rs1"
    assert via_vip.ok, str(via_vip)
