"""The static routing walk (model/reach.py): longest-prefix match, SNAT, where a walk stops, and the
warnings `validate` prints — none for the shipped healthy labs, the right one for each broken lab."""

import pathlib
from ipaddress import IPv4Address, IPv4Network

import pytest

from nslab import model
from nslab.model import reach
from nslab.model.resolve import forwards, routes_of

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEALTHY = sorted((ROOT / "topologies").glob("*.yaml"))


def lab_of(rel: str, edit=None):
    text = (ROOT / "topologies" / rel).read_text()
    return model.resolve(model.loads(edit(text) if edit else text, rel))


def routing(edit=None):
    return lab_of("routing.yaml", edit)


@pytest.mark.parametrize("path", HEALTHY, ids=lambda p: p.name)
def test_shipped_labs_warn_about_nothing(path):
    assert reach.warnings(model.resolve(model.load(str(path)))) == []


def test_routes_of_lists_connected_networks_then_routes_with_their_yaml_paths():
    lab = routing()
    table = routes_of(lab, "r1")
    assert [(str(r.to), r.via and str(r.via), r.iface, r.connected) for r in table] == [
        ("192.168.1.0/24", None, "eth0", True), ("10.0.12.0/24", None, "eth1", True),
        ("192.168.2.0/24", "10.0.12.2", "eth1", False)]
    assert table[2].origin == ("nodes", "r1", "routes", 0)
    assert routes_of(lab, "host1")[-1].origin == ("nodes", "host1", "gateway")


def test_forwards_follows_forward_sysctls_and_the_nat_director():
    assert forwards(routing(), "r1") and not forwards(routing(), "host1")
    by_hand = routing(lambda t: t.replace("  r1:\n    forward: true\n",
                                          "  r1:\n    forward: true\n    sysctls: {net.ipv4.ip_forward: 0}\n"))
    assert not forwards(by_hand, "r1")
    assert forwards(lab_of("nat.yaml"), "director")  # derived: a NAT director forwards


def test_lookup_takes_the_longest_prefix():
    lab = routing(lambda t: t.replace("      - {to: 192.168.2.0/24, via: 10.0.12.2}\n",
                                      "      - {to: 192.168.0.0/16, via: 10.0.12.2}\n"
                                      "      - {to: 192.168.2.128/25, via: 10.0.12.2}\n"))
    assert str(reach.lookup(lab, "r1", "192.168.2.200").to) == "192.168.2.128/25"
    assert str(reach.lookup(lab, "r1", "192.168.1.7").to) == "192.168.1.0/24"  # connected /24 beats the /16
    assert reach.lookup(lab, "host2", "8.8.8.8").to.prefixlen == 0


def test_walk_follows_next_hops_to_the_holder():
    p = reach.walk(routing(), "host1", "192.168.2.10")
    assert p.delivered and p.nodes == ["host1", "r1", "r2", "host2"]
    assert [str(s.via) for s in p.steps] == ["192.168.1.1", "10.0.12.2", "192.168.2.10"]
    assert p.src == IPv4Address("192.168.1.10")
    back = reach.reply_walk(routing(), "host2", p)
    assert back.delivered and back.nodes == ["host2", "r2", "r1", "host1"]


def test_walk_rewrites_the_source_where_snat_is_and_the_reply_returns_through_it():
    lab = lab_of("snat.yaml")
    p = reach.walk(lab, "laptop", "203.0.113.10")
    assert p.delivered and str(p.final_src) == "203.0.113.2" and p.snat_at == "router"
    back = reach.reply_walk(lab, "server", p)
    assert back.delivered and back.at == "laptop"


def test_walk_stops_where_the_packet_would():
    off = routing(lambda t: t.replace("  r1:\n    forward: true", "  r1:\n    forward: false"))
    p = reach.walk(off, "host1", "192.168.2.10")
    assert (p.end, p.at) == ("not-forwarding", "r1")
    noroute = routing(lambda t: t.replace("      - {to: 192.168.2.0/24, via: 10.0.12.2}\n", ""))
    assert (reach.walk(noroute, "host1", "192.168.2.10").end, reach.walk(noroute, "host1", "192.168.2.10").at) == \
        ("no-route", "r1")
    wide = routing(lambda t: t.replace("192.168.1.10/24", "192.168.1.10/16"))
    p = reach.walk(wide, "host1", "192.168.2.10")
    assert p.end == "no-neighbour" and p.steps[-1].route.connected and p.steps[-1].to is None


def test_walk_to_a_vip_ends_at_the_director():
    p = reach.walk(lab_of("dr.yaml"), "client", "10.0.0.100")
    assert p.delivered and p.at == "director"


def test_next_hops_name_the_neighbour_that_reaches_the_network():
    noroute = routing(lambda t: t.replace("      - {to: 192.168.2.0/24, via: 10.0.12.2}\n", ""))
    assert reach.next_hops(noroute, "r1", "192.168.2.10") == [("eth1", "r2", IPv4Address("10.0.12.2"))]
    assert reach.network_of(noroute, "192.168.2.10") == IPv4Network("192.168.2.0/24")


@pytest.mark.parametrize("rel,expected", [
    ("broken/routing-forward-off.yaml", ["nodes.r1:", "does not forward", "nodes.r1.forward: true"]),
    ("broken/routing-no-route-back.yaml", ["nodes.r2: no route back to host1's network 192.168.1.0/24",
                                           "{to: 192.168.1.0/24, via: 10.0.12.1}"]),
    ("broken/routing-netmask.yaml", ["nodes.host1.interfaces.eth0.address:", "netmask"]),
    ("broken/routing-wrong-gateway.yaml", ["nodes.host2.gateway:", "192.168.2.254", "ARP"]),
    ("broken/routing-reply-other-path.yaml", ["nodes.host2: replies", "leave host2 by eth0 to r2",
                                              "via: 10.0.99.1"]),
    ("broken/nat-wrong-gateway.yaml", ["nodes.rs1:", "bypassing the director", "nodes.rs1.gateway: 10.1.0.1"]),
    ("broken/snat-missing.yaml", ["nodes.server: no route back", "nodes.router.nat: [{masquerade: eth1, "
                                  "source: 192.168.0.0/24}]"]),
])
def test_broken_labs_warn_with_the_yaml_path_to_change(rel, expected):
    found = reach.warnings(model.resolve(model.load(str(ROOT / "topologies" / rel))))
    assert len(found) == 1, found
    for part in expected:
        assert part in found[0], found[0]


def test_private_and_the_snat_point():
    assert reach.private("192.168.0.10") and reach.private("10.1.2.3") and not reach.private("203.0.113.10")
    lab = lab_of("snat.yaml")
    assert reach.snat_point(lab, [("laptop", "eth0"), ("router", "eth1")]) == ("router", "eth1")


def test_a_router_netmask_too_narrow_for_its_own_segment_is_named():
    lab = routing(lambda t: t.replace("eth0: {switch: lan1, address: 192.168.1.1/24}",
                                      "eth0: {switch: lan1, address: 192.168.1.1/30}"))
    found = reach.warnings(lab)
    assert found == ["nodes.r1.interfaces.eth0.address: r1's netmask /30 leaves 192.168.1.10 (host1, on the same "
                     "segment lan1) out of its network, so r1 has no route for the replies to it: 192.168.1.1/24"]


def test_routes_that_point_at_each_other_are_a_loop():
    lab = routing(lambda t: t.replace("      - {to: 192.168.1.0/24, via: 10.0.12.1}\n",
                                      "      - {to: 192.168.1.0/24, via: 10.0.12.1}\n"
                                      "      - {to: 192.168.2.10/32, via: 10.0.12.1}\n"))
    p = reach.walk(lab, "host1", "192.168.2.10")
    assert p.end == "loop" and p.nodes == ["host1", "r1", "r2", "r1"]
    assert [w for w in reach.warnings(lab) if "loops" in w] == [
        "traffic from host1 to host2's http app (192.168.2.10) loops: host1 -> r1 -> r2 -> r1"]


def test_validate_prints_warnings_after_the_ok_line_and_exits_0(capsys):
    from nslab import cli
    code = cli.main(["validate", str(ROOT / "topologies" / "broken" / "routing-forward-off.yaml")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0].endswith("0 services)") and out[1].startswith("warning: nodes.r1: ")
    code = cli.main(["validate", str(ROOT / "topologies" / "routing.yaml")])
    assert code == 0 and "warning" not in capsys.readouterr().out
