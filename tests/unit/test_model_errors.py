"""Validation: every bad input is reported with file, line, YAML path and a fix; all at once."""

import pytest

from nslab import model
from nslab.errors import TopologyError

GOOD = """\
name: t
switches: [lan]
nodes:
  a:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.1/24}
  b:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.2/24}
    gateway: 10.0.0.1
"""


def errors(text):
    with pytest.raises(TopologyError) as e:
        model.loads(text, "x.yaml")
    return e.value.problems


def test_good_topology_loads():
    topo = model.loads(GOOD, "x.yaml")
    assert [n.name for n in topo.nodes] == ["a", "b"]
    assert str(topo.node("b").gateway) == "10.0.0.1"


@pytest.mark.parametrize("old,new,expected", [
    ("10.0.0.1/24}", "10.0.0.300/24}",
     "x.yaml:6: nodes.a.interfaces.eth0.address: '10.0.0.300/24' is not an IPv4 address with a prefix length"),
    ("10.0.0.1/24}", "10.0.0.1}", "nodes.a.interfaces.eth0.address: '10.0.0.1' is not an IPv4 address with a "
                                  "prefix length (e.g. 10.0.0.1/24)"),
    ("gateway: 10.0.0.1", "gatway: 10.0.0.1", "x.yaml:10: nodes.b.gatway: unknown key (did you mean 'gateway'?)"),
    ("gateway: 10.0.0.1", "gateway: 10.9.0.1", "x.yaml:10: nodes.b.gateway: 10.9.0.1 is not on any of b's subnets"),
    ("{switch: lan, address: 10.0.0.2/24}", "{switch: lna, address: 10.0.0.2/24}",
     "nodes.b.interfaces.eth0.switch: switch 'lna' is not in 'switches' (did you mean 'lan'?)"),
    ("10.0.0.2/24}", "10.0.0.1/24}", "x.yaml:9: nodes.b.interfaces.eth0.address: 10.0.0.1 is already used by a:eth0"),
    ("name: t", "name: Bad_Lab", "x.yaml:1: name: 'Bad_Lab' is not a valid lab name"),
    ("  b:\n", "  b!x:\n", "nodes.b!x: 'b!x' is not a valid node name"),
    ("      eth0: {switch: lan, address: 10.0.0.2/24}", "      averyveryverylongname0: {switch: lan}",
     "nodes.b.interfaces.averyveryverylongname0: 'averyveryverylongname0' is not a valid interface name "
     "(use up to 15 characters"),
    ("{switch: lan, address: 10.0.0.2/24}", "{peer: a:eth9, address: 10.0.0.2/24}",
     "nodes.b.interfaces.eth0.peer: node 'a' has no interface 'eth9'"),
    ("{switch: lan, address: 10.0.0.2/24}", "{address: 10.0.0.2/24}",
     "nodes.b.interfaces.eth0: needs 'switch' or 'peer'"),
    ("name: t\n", "", "x.yaml: missing required key 'name'"),
    ("  a:\n", "  fabric:\n", "nodes.fabric: 'fabric' is reserved"),
])
def test_each_error_names_path_and_fix(old, new, expected):
    assert old in GOOD
    problems = errors(GOOD.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_all_errors_reported_together():
    text = GOOD.replace("10.0.0.1/24}", "10.0.0.300/24}").replace("gateway", "gatway").replace("name: t", "name: T")
    problems = errors(text)
    assert len(problems) == 3
    assert [p.split(":")[1] for p in problems] == ["1", "6", "10"]  # in file order


def test_route_via_must_be_reachable():
    text = GOOD + "    routes:\n      - {to: 10.5.0.0/24, via: 10.6.0.1}\n"
    text = text.replace("    gateway: 10.0.0.1\n", "")
    assert any("nodes.b.routes[0]: 10.6.0.1 is not on any of b's subnets" in p for p in errors(text))


def test_yaml_syntax_error_has_line():
    (p,) = errors("name: t\nnodes: [a\n")
    assert p.startswith("x.yaml:") and "not valid YAML" in p


def test_yaml_is_loaded_safely():
    problems = errors("name: !!python/object/apply:os.system ['true']\nnodes: {}\n")
    assert "not valid YAML" in problems[0]


def test_bad_sysctl_key_rejected():
    text = GOOD + "    sysctls: {kernel.panic: 1}\n"
    assert any("nodes.b.sysctls.kernel.panic: 'kernel.panic' is not a network sysctl" in p for p in errors(text))


def test_expect_names_must_exist():
    text = GOOD + "expect:\n  - {from: nobody, to: b, path: [a, zz]}\n"
    problems = errors(text)
    assert any("expect[0].from: node 'nobody' does not exist (one of: a, b)" in p for p in problems)
    assert any("expect[0].path[1]: node 'zz' does not exist" in p for p in problems)


def test_expect_loads():
    topo = model.loads(GOOD + "expect:\n  - {from: a, to: b, reaches: false}\n", "x.yaml")
    (e,) = topo.expect
    assert (e.sender, e.to, e.reaches, e.path) == ("a", "b", False, ())
