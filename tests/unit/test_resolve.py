"""One resolved lab for everyone: every shipped topology goes through resolve(), and the planner and the
verify side (sniffer taps, target picking) agree on what it derived: the same app ports, the same segments."""

import pathlib
import re

import pytest

from nslab import model
from nslab.plan import actions as A
from nslab.plan import planner
from nslab.verify import run

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((ROOT / "topologies").rglob("*.yaml"))

PORT_8080 = """
name: p8080
switches: [wan, lan]
nodes:
  client:
    interfaces: {eth0: {switch: wan, address: 192.168.1.10/24}}
    gateway: 192.168.1.1
  router:
    forward: true
    interfaces:
      eth0: {switch: wan, address: 192.168.1.1/24}
      eth1: {switch: lan, address: 10.0.0.1/24}
  director:
    interfaces: {eth0: {switch: lan, address: 10.0.0.2/24}}
    gateway: 10.0.0.1
  rs1:
    interfaces: {eth0: {switch: lan, address: 10.0.0.11/24}}
    gateway: 10.0.0.1
    app: http
  rs2:
    interfaces: {eth0: {switch: lan, address: 10.0.0.12/24}}
    gateway: 10.0.0.1
    app: echo
  box:
    interfaces: {eth1: {peer: router:eth2, address: 10.9.0.2/30}}
    app: {type: echo, protocol: udp}
services:
  web:
    director: director
    vip: 10.0.0.100:8080
    forward: dr
    real_servers: {rs1: {}}
  dns:
    director: director
    vip: 10.0.0.101:53
    protocol: udp
    forward: dr
    real_servers: {rs2: {}}
"""


def _router_eth2(text):
    return text.replace("      eth1: {switch: lan, address: 10.0.0.1/24}\n",
                        "      eth1: {switch: lan, address: 10.0.0.1/24}\n"
                        "      eth2: {peer: box:eth1, address: 10.9.0.1/30}\n")


def labs():
    out = [pytest.param(model.load(str(p)), id=str(p.relative_to(ROOT / "topologies"))) for p in TOPOLOGIES]
    out.append(pytest.param(model.loads(_router_eth2(PORT_8080), "p8080.yaml"), id="p8080"))
    return out


@pytest.mark.parametrize("topo", labs())
def test_planner_and_verify_agree(topo):
    rlab = model.resolve(topo)
    plan = planner.plan(rlab)

    # Apps: the port and protocol the planner starts each app with are what a trace aims at.
    started = {a.node: a for a in plan if isinstance(a, A.StartApp)}
    assert set(started) == {app.node for app in rlab.apps}
    for node, action in started.items():
        target = run.pick_target(rlab, node)
        assert (target.port, target.node) == (action.port, node)
        kind = {"http": "http", "echo": "udp" if action.protocol == "udp" else "tcp-echo"}[action.kind]
        assert target.kind == kind, (node, target, action)

    # Segments: every cable the planner lays is sniffed exactly once, on the segment the walk reads.
    veths = [a for a in plan if isinstance(a, A.AddVeth)]
    taps = [t for t in rlab.taps if t.l2]
    assert len(veths) == len(taps)
    for v in veths:
        if v.master:  # a switch port in the fabric
            (tap,) = [t for t in taps if (t.ns, t.ifname) == (v.ns, v.name)]
            assert tap.segment == v.master and (rlab.ns(tap.node), tap.iface) == (v.peer_ns, v.peer)
        else:  # a direct cable, sniffed at one of its ends
            (tap,) = [t for t in taps if (t.ns, t.ifname) in ((v.ns, v.name), (v.peer_ns, v.peer))]
            assert tap.segment == rlab.segment_of(tap.node, tap.iface).name
    for seg in rlab.segments:
        for end in seg.ends:
            assert rlab.segment_of(end.node, end.iface) is seg

    # Services: IPVS is programmed (by nslab, or by keepalived from its config) with the addresses and ports
    # verify expects the real servers to get.
    dests = {(a.vip, a.port, a.rip, a.rport, a.method) for a in plan if isinstance(a, A.IpvsDest)}
    for start in (a for a in plan if isinstance(a, A.StartKeepalived)):
        for vip, port, body in re.findall(r"^virtual_server (\S+) (\d+) \{(.*?)^\}", start.config, re.S | re.M):
            method = re.search(r"lvs_method (\w+)", body).group(1).lower()
            dests |= {(vip, int(port), rip, int(rport), method)
                      for rip, rport in re.findall(r"real_server (\S+) (\d+)", body)}
    assert dests == {(str(s.vip), s.port, str(r.address), r.port, s.method.value)
                     for s in rlab.services for r in s.real_servers}
    for s in rlab.services:
        assert run.pick_target(rlab, s.name).service is s


def test_app_takes_its_service_port_and_protocol():
    rlab = model.resolve(model.loads(_router_eth2(PORT_8080), "p8080.yaml"))
    rs1 = run.pick_target(rlab, "rs1")
    assert (rs1.ip, rs1.port, rs1.kind) == ("10.0.0.11", 8080, "http")
    rs2 = run.pick_target(rlab, "rs2")
    assert (rs2.port, rs2.kind) == (53, "udp")
    box = run.pick_target(rlab, "box")
    assert (box.ip, box.port, box.kind) == ("10.9.0.2", 7, "udp")
    assert run.pick_target(rlab, "10.0.0.11:8080").kind == "http"
    assert run.pick_target(rlab, "dns").kind == "udp"


def test_segments_and_taps_of_a_cable():
    rlab = model.resolve(model.loads(_router_eth2(PORT_8080), "p8080.yaml"))
    seg = rlab.segment_of("box", "eth1")
    assert seg.kind == "cable" and seg.name == "box:eth1=router:eth2" and set(seg.nodes) == {"router", "box"}
    assert str(rlab.address_on("router", seg.name)) == "10.9.0.1"
    (tap,) = [t for t in rlab.taps if t.segment == seg.name]
    assert not tap.in_fabric and tap.peer in ("router", "box") and tap.peer != tap.node
    lan = rlab.segment("lan")
    assert {e.port for e in lan.ends} == {"router-eth1", "director-eth0", "rs1-eth0", "rs2-eth0"}


def test_vip_holders_and_roles():
    rlab = model.resolve(model.loads(_router_eth2(PORT_8080), "p8080.yaml"))
    assert rlab.holders("10.0.0.100") == ("director", "rs1")
    assert rlab.holders("10.0.0.11") == ("rs1",)
    assert [rlab.role(n) for n in ("director", "rs1", "router", "client")] == \
        ["director", "real server", "router", "host"]
