"""Planning: the shipped topologies give a stable, complete plan that a student can replay."""

import os
import pathlib
import subprocess
import sys

import pytest

from nslab import model
from nslab.plan import planner
from nslab.plan.actions import AddAddress, AddNetns, AddRoute, AddVeth

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "plans"
TOPOLOGIES = sorted(p for p in (ROOT / "topologies").glob("*.yaml"))


def render(path):
    out = subprocess.run([sys.executable, "-m", "nslab.cli", "plan", str(path.relative_to(ROOT))], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_plan_matches_golden(path):
    """Regenerate after an intended change with NSLAB_UPDATE_GOLDEN=1."""
    text = render(path)
    golden = GOLDEN / f"{path.stem}.txt"
    if os.environ.get("NSLAB_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no golden plan for {path.name}: run with NSLAB_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_plan_is_complete(path):
    topo = model.load(str(path))
    actions = planner.plan(model.resolve(topo))
    created = {a.ns for a in actions if isinstance(a, AddNetns)}
    assert created == {f"{topo.name}-{n.name}" for n in topo.nodes} | {f"{topo.name}-fabric"}
    for node in topo.nodes:
        ns = f"{topo.name}-{node.name}"
        for iface in node.interfaces:
            for a in iface.addresses:
                assert AddAddress(ns, dev=iface.name, cidr=str(a)) in actions
            if iface.switch:
                assert any(isinstance(x, AddVeth) and x.peer_ns == ns and x.peer == iface.name for x in actions)
        assert sum(isinstance(a, AddRoute) and a.ns == ns for a in actions) == len(node.routes)
    assert all(a.reason for a in actions), "every step says why"
    # nothing ever happens in the host's own namespace: every step names one of the lab's
    assert {a.ns for a in actions} <= created


def test_plan_needs_no_root_and_prints_replayable_commands():
    text = render(ROOT / "topologies" / "routing.yaml")
    assert "ip netns add routing-r1" in text
    assert "ip -n routing-host1 route add default via 192.168.1.1" in text
    assert "ip -n routing-fabric link add r1-eth1 type veth peer name eth1 netns routing-r1" in text
    assert "ip netns exec routing-r1 sysctl -q -w net.ipv4.ip_forward=1" in text


def test_bad_file_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes:\n  a:\n    interfaces:\n      eth0: {switch: nowhere, address: 1.2.3.4/33}\n")
    out = subprocess.run([sys.executable, "-m", "nslab.cli", "plan", str(bad)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "nodes.a.interfaces.eth0.address: '1.2.3.4/33' is not an IPv4 address" in out.stderr
    missing = subprocess.run([sys.executable, "-m", "nslab.cli", "plan", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read the topology file" in missing.stderr


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_actions_rebuild_from_their_records_and_name_one_object_each(path):
    """The journal keeps Action.record() as JSON and rebuilds the action from it; identity() tells which
    object an action makes, so `up` can match a running lab's journal against an edited file."""
    import json
    from nslab.plan.actions import Action
    actions = planner.plan(model.resolve(model.load(str(path))))
    for a in actions:
        back = Action.rebuild(json.loads(json.dumps(a.record())))
        assert back == a and back.reason == a.reason and back.identity() == a.identity()
    identities = [a.identity() for a in actions]
    assert len(identities) == len(set(identities))


def test_attributes_outside_the_identity_change_in_place():
    from nslab.plan.actions import AddRoute, IpvsDest, Sysctl
    assert AddRoute("n", to="default", via="10.0.0.1").identity() == AddRoute("n", to="default", via="10.0.0.2").identity()
    assert Sysctl("n", key="k", value="1").identity() == Sysctl("n", key="k", value="2").identity() == ("Sysctl", "n", "k")
    one = IpvsDest("d", vip="10.0.0.100", port=80, rip="10.0.0.11", rport=80, weight=1)
    assert one.identity() == IpvsDest("d", vip="10.0.0.100", port=80, rip="10.0.0.11", rport=80, weight=3).identity()
    assert one.identity() != IpvsDest("d", vip="10.0.0.100", port=80, rip="10.0.0.12", rport=80).identity()


def test_one_sysctl_per_key_and_an_optional_one_never_stops_a_replay():
    text = render(ROOT / "topologies" / "routing.yaml")
    assert "ip netns exec routing-fabric sysctl -q -e -w net.bridge.bridge-nf-call-iptables=0\n" in text
    assert "ip netns exec routing-r1 sysctl -q -w net.ipv4.conf.all.rp_filter=0\n" in text
    # consecutive steps with one reason are printed under one '# reason' line
    why = "# set explicitly so the lab behaves the same on any host (a new namespace inherits the host's values)"
    assert text.count(why) == 4  # once per node, not once per key


def test_a_key_of_one_interface_is_set_after_its_link_is_made():
    """net.ipv4.neigh.eth0.* was set with the node's own keys, before eth0 existed: validate said ok and up
    failed ('does not exist'); only conf.<ifname>.* keys waited for the links."""
    topo = model.loads("""\
name: t
switches: [lan]
nodes:
  a:
    interfaces: {eth0: {switch: lan, address: 10.0.0.1/24}}
    sysctls: {net.ipv4.neigh.eth0.base_reachable_time_ms: 5000, net.ipv6.neigh.eth0.retrans_time_ms: 500,
              net.ipv4.conf.eth0.rp_filter: 2, net.ipv4.neigh.lo.retrans_time_ms: 500, net.ipv4.ip_forward: 1}
""", "t.yaml")
    actions = planner.plan(model.resolve(topo))
    link = next(i for i, a in enumerate(actions) if isinstance(a, AddVeth) and a.peer_ns == "t-a")
    at = {a.key: i for i, a in enumerate(actions) if type(a).__name__ == "Sysctl" and a.ns == "t-a"}
    eth0_keys = ("net.ipv4.neigh.eth0.base_reachable_time_ms", "net.ipv6.neigh.eth0.retrans_time_ms",
                 "net.ipv4.conf.eth0.rp_filter")
    assert all(at[k] > link for k in eth0_keys)
    assert at["net.ipv4.ip_forward"] < link



def test_plan_prints_a_control_character_escaped_and_bash_reads_the_word_back():
    """An exec word may hold an escape sequence: plan printed it raw, so the terminal ran it (cleared the
    screen, recoloured it) instead of showing it; now it is a $'...' word that bash reads back as the same."""
    topo = model.loads('name: t\nnodes:\n  a:\n    exec: [[printf, "%s|", "\\e[2J\\e[31mred", "tab\\there", '
                       '"it\'s a \\\\ back\\nslash", "c1 \\x85 \\x9b", plain, "é"]]\n', "t.yaml")
    line = next(c for a in planner.plan(model.resolve(topo)) for c in a.commands() if "printf" in c)
    assert not any(c in line for c in "\x1b\t\n\x85\x9b")
    words = line.removeprefix("ip netns exec t-a ")
    back = subprocess.run(["bash", "-c", words], capture_output=True, text=True).stdout
    assert back == "\x1b[2J\x1b[31mred|tab\there|it's a \\ back\nslash|c1 \x85 \x9b|plain|é|"
