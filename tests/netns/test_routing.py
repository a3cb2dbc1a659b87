"""Routing lab on the host kernel: reachability across two routers, ARP, idempotent up, clean down."""

import os
import subprocess
import sys

from nslab import api, state
from nslab.kernel import netns


def nslab(*args):
    return subprocess.run([sys.executable, "-m", "nslab.cli", *args], capture_output=True, text=True, timeout=120)


def test_ping_crosses_both_routers_and_arp_holds_only_the_gateway(make_lab):
    lab = make_lab("routing")
    ping = lab.run("host1", ["ping", "-c", "2", "-W", "2", "192.168.2.10"])
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "ttl=62" in ping.stdout  # two routers decremented the TTL
    neigh = lab.run("host1", ["ip", "-j", "neigh"]).stdout
    r1 = lab.run("r1", ["ip", "-j", "link", "show", "eth0"]).stdout
    import json
    r1_mac = json.loads(r1)[0]["address"]
    host2_mac = json.loads(lab.run("host2", ["ip", "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    entries = {n["dst"]: n.get("lladdr") for n in json.loads(neigh)}
    assert entries.get("192.168.1.1") == r1_mac
    assert host2_mac not in entries.values()
    assert "192.168.2.10" not in entries


def test_up_twice_changes_nothing(make_lab):
    lab = make_lab("routing")
    again = lab.up()
    assert again.changed == []


def test_down_leaves_nothing_and_host_is_untouched(root_dir, host_unchanged):
    before = host_unchanged.snapshot()
    lab = api.Lab(str(root_dir / "topologies" / "routing.yaml"), name="tdown")
    lab.up()
    namespaces = [n for n in netns.list_names() if n.startswith("tdown-")]
    assert len(namespaces) == 5
    pids = netns.pids_inside(namespaces)
    assert sum(len(p) for p in pids.values()) >= 1  # host2's http app
    lab.down()
    assert not [n for n in netns.list_names() if n.startswith("tdown-")]
    for found in pids.values():
        for pid in found:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not os.path.exists(state.lab_dir("tdown"))
    host_unchanged(before, "tdown")


def test_two_copies_side_by_side(make_lab):
    a, b = make_lab("routing", "rta"), make_lab("routing", "rtb")
    for lab in (a, b):
        assert lab.run("host1", ["ping", "-c", "1", "-W", "2", "192.168.2.10"]).returncode == 0
    a.down()
    assert b.run("host1", ["ping", "-c", "1", "-W", "2", "192.168.2.10"]).returncode == 0
    assert not [n for n in netns.list_names() if n.startswith("rta-")]


def test_down_without_state_spares_foreign_namespaces(make_lab):
    make_lab("routing", "rtc")
    subprocess.run(["ip", "netns", "add", "rtc-mine"], check=True)  # the user's own, not nslab's
    try:
        state.remove("rtc")  # as after a crash that lost /run/nslab
        result = nslab("down", "rtc")
        assert result.returncode == 0, result.stderr
        assert netns.exists("rtc-mine")
        assert not [n for n in netns.list_names() if n.startswith("rtc-") and n != "rtc-mine"]
    finally:
        subprocess.run(["ip", "netns", "del", "rtc-mine"])


def test_up_refuses_a_namespace_it_did_not_create(root_dir):
    subprocess.run(["ip", "netns", "add", "rtd-r1"], check=True)
    try:
        result = nslab("up", "--name", "rtd", str(root_dir / "topologies" / "routing.yaml"))
        assert result.returncode == 1
        assert "'rtd-r1' already exists and belongs to something other than nslab" in result.stderr
        assert [n for n in netns.list_names() if n.startswith("rtd-")] == ["rtd-r1"]  # rolled back
    finally:
        subprocess.run(["ip", "netns", "del", "rtd-r1"])


def test_exec_passes_exit_status_and_bad_input_creates_nothing(make_lab, tmp_path):
    make_lab("routing", "rte")
    assert nslab("exec", "rte", "host1", "--", "sh", "-c", "exit 7").returncode == 7
    assert nslab("exec", "rte", "nosuch", "--", "true").returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: rtf\nswitches: [s]\nnodes:\n  a:\n    interfaces:\n      eth0: {switch: s, address: x}\n")
    result = nslab("up", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not [n for n in netns.list_names() if n.startswith("rtf-")]


def test_down_never_touches_the_host_namespace_even_if_named_like_a_lab():
    # `ip netns attach` gives the host's own namespace a name in /run/netns: it must never count as a lab's
    subprocess.run(["ip", "netns", "attach", "rth-r1", str(os.getpid())], check=True)
    try:
        result = nslab("down", "rth")
        assert result.returncode == 2  # nothing of lab 'rth' exists
        assert netns.exists("rth-r1") and netns.is_host("rth-r1")
    finally:
        subprocess.run(["ip", "netns", "del", "rth-r1"])
