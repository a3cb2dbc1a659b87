"""nslab fail / heal on the host kernel: what a client sees while a node's app, link or whole node is failed,
what heal puts back (routes the kernel dropped included), what status shows, and a down that leaves nothing."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from nslab import api, faults, state
from nslab.errors import UsageError
from nslab.verify import timeline
from nslab.kernel import netns

ASK = ("import socket,sys\n"
       "try:\n"
       "    s = socket.create_connection((sys.argv[1], 80), timeout=3)\n"
       "except ConnectionRefusedError:\n"
       "    print('refused'); sys.exit(0)\n"
       "except OSError as e:\n"
       "    print('unreachable', e); sys.exit(0)\n"
       "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
       "print('answered', s.makefile('rb').read().split(b'\\r\\n\\r\\n', 1)[1].decode().strip())\n")


def ask(lab, node, ip):
    """One HTTP request from node to ip:80, as the client saw it: 'answered NAME', 'refused' or 'unreachable ...'."""
    return lab.run(node, [sys.executable, "-c", ASK, ip]).stdout.strip()


def routes(lab, node):
    return {r["dst"]: r.get("gateway") for r in json.loads(lab.run(node, ["ip", "-j", "route"]).stdout)}


def nslab(*args):
    return subprocess.run([sys.executable, "-m", "nslab", *args], capture_output=True, text=True, timeout=120)


def test_failed_app_refuses_and_healed_app_answers(make_lab):
    lab = make_lab("routing")
    assert ask(lab, "host1", "192.168.2.10") == "answered host2"
    old_pid = api.status(lab.name, settle=False)["nodes"][3]["apps"][0]["pid"]
    failed = lab.fail("host2")
    assert failed.changed and failed.processes == [f"http :80 (pid {old_pid})"]
    assert not os.path.exists(f"/proc/{old_pid}") or open(f"/proc/{old_pid}/stat").read().split()[2] == "Z"
    assert ask(lab, "host1", "192.168.2.10") == "refused"  # host2's kernel answers the SYN with a RST
    st = api.status(lab.name, settle=False)
    (fault,) = st["faults"]
    assert (fault["node"], fault["kind"]) == ("host2", "processes")
    assert st["nodes"][3]["faults"] == [fault] and st["nodes"][3]["apps"] == []
    again = lab.fail("host2")
    assert not again.changed and "failed already" in again.message

    healed = lab.heal("host2")
    assert healed.changed and healed.processes[0].startswith("http :80 (pid ")
    assert ask(lab, "host1", "192.168.2.10") == "answered host2"
    st = api.status(lab.name, settle=False)
    assert st["faults"] == [] and st["nodes"][3]["apps"][0]["running"]
    assert st["nodes"][3]["apps"][0]["pid"] != old_pid
    assert not lab.heal("host2").changed


def test_failed_link_carries_nothing_and_heal_puts_the_dropped_route_back(make_lab):
    lab = make_lab("routing")
    before = routes(lab, "r1")
    assert before["192.168.2.0/24"] == "10.0.12.2"
    failed = lab.fail("r1", link="eth1")
    assert failed.links == ["eth1"] and failed.routes == 1
    assert "192.168.2.0/24" not in routes(lab, "r1")  # the kernel dropped the static route with the link
    with lab.capture("transit") as cap:
        assert lab.run("host1", ["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.168.2.10"]).returncode != 0
    r1_mac = json.loads(lab.run("r1", ["ip", "-j", "link", "show", "eth1"]).stdout)[0]["address"]
    assert not [p for p in cap.packets("transit") if r1_mac in (p.src, p.dst)]

    healed = lab.heal("r1", link="eth1")
    assert healed.routes == 1
    assert routes(lab, "r1") == before
    with lab.capture("transit") as cap:
        assert lab.run("host1", ["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.2.10"]).returncode == 0
    assert [p for p in cap.packets("transit") if p.src == r1_mac and p.haslayer("ICMP")]
    assert api.status(lab.name, settle=False)["faults"] == []


def test_failed_node_loses_every_link_and_process_and_heals_whole(make_lab):
    lab = make_lab("routing")
    failed = lab.fail("host2", whole_node=True)
    assert failed.links == ["eth0"] and len(failed.processes) == 1
    assert ask(lab, "host1", "192.168.2.10").startswith("unreachable")  # nothing answers at all now
    host2 = api.status(lab.name, settle=False)["nodes"][3]
    assert [i["up"] for i in host2["interfaces"] if i["name"] == "eth0"] == [False]
    # what a node fault covers has failed already; healing a kind that did not fail names the one that did
    assert not lab.fail("host2").changed and not lab.fail("host2", link="eth0").changed
    wrong = lab.heal("host2")
    assert not wrong.changed and "--node" in wrong.message
    healed = lab.heal("host2", whole_node=True)
    assert healed.links == ["eth0"] and healed.routes == 1  # the default route via 192.168.2.1
    assert ask(lab, "host1", "192.168.2.10") == "answered host2"


def test_cli_exit_codes_and_status(make_lab):
    lab = make_lab("routing")
    bad_node = nslab("fail", lab.name, "nope")
    assert bad_node.returncode == 2 and "no node 'nope'" in bad_node.stderr and "host1" in bad_node.stderr
    bad_link = nslab("fail", lab.name, "r1", "--link", "eth9")
    assert bad_link.returncode == 2 and "its links: eth0, eth1" in bad_link.stderr
    no_app = nslab("fail", lab.name, "r1")
    assert no_app.returncode == 2 and "runs no lab process" in no_app.stderr
    ok = nslab("fail", lab.name, "r2", "--link", "eth0")
    assert ok.returncode == 0 and f"nslab heal {lab.name} r2 --link eth0" in ok.stdout
    twice = nslab("fail", lab.name, "r2", "--link", "eth0")
    assert twice.returncode == 0 and "failed already" in twice.stdout
    shown = nslab("status", lab.name)
    assert "failed (by `nslab fail`)" in shown.stdout and "r2:eth0" in shown.stdout
    as_json = json.loads(nslab("status", lab.name, "--json").stdout)
    assert [(f["node"], f["kind"], f["iface"]) for f in as_json["faults"]] == [("r2", "link", "eth0")]
    healed = json.loads(nslab("heal", lab.name, "r2", "--link", "eth0", "--json").stdout)
    assert healed["changed"] and healed["routes"] == 1
    nslab("fail", lab.name, "host2")
    assert "FAILED (nslab fail)" in nslab("status", lab.name).stdout  # the app's row, stopped by the fail


def test_up_heals_and_down_after_fail_leaves_nothing(root_dir):
    lab = api.Lab(str(root_dir / "topologies" / "routing.yaml"), name="failheal-t")
    lab.up()
    try:
        lab.fail("host2", whole_node=True)
        lab.fail("r1", link="eth1")
        result = lab.up()  # back to the file: links up, routes and app back, faults forgotten
        assert result.changed and api.status(lab.name, settle=False)["faults"] == []
        assert ask(lab, "host1", "192.168.2.10") == "answered host2"
        lab.fail("host2", whole_node=True)
        lab.fail("r1", link="eth1")
        with pytest.raises(UsageError, match="runs no lab process"):
            lab.fail("r2")
        assert len(api.status(lab.name, settle=False)["faults"]) == 2
    finally:
        namespaces = [n for n in netns.list_names() if n.startswith("failheal-t-")]
        pids = netns.pids_inside(namespaces)
        lab.down()
    assert not [n for n in netns.list_names() if n.startswith("failheal-t-")]
    assert not os.path.exists(state.lab_dir("failheal-t"))
    for found in pids.values():
        for pid in found:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_load_with_a_fail_and_a_heal_reports_when_the_errors_were(make_lab):
    lab = make_lab("routing")
    fault = faults.Scheduled("host2", fail_at=1.0, heal_at=3.0)
    report = lab.load(source="host1", target="host2", duration=6, concurrency=4, threads=1, fault=fault)
    f, t = report.faults, report.traffic
    assert report.ok, report.lines()
    assert [e["what"] for e in f["events"]] == ["fail host2's processes", "heal host2's processes"]
    # on time, give or take a busy machine (CI once ran the fail 3 s late); what follows reads the times
    # the fail and heal really had, and the load lasts long enough to hold them even when late
    fail_at, heal_at = (e["at"] for e in f["events"])
    assert 1.0 <= fail_at < 2.5 and max(3.0, fail_at + f["events"][0]["took_s"]) <= heal_at < 4.5, f["events"]
    # every refused connection the client's kernel counted is one wrk counted as an error; wrk's others are
    # the few requests in flight when the app died (closed on them: at most one per connection)
    kernel = f["refused"] + f["reset"]
    assert f["refused"] > 0 and kernel <= t["failed"] <= kernel + t["connections"], (f, t["errors"])
    assert f["events"][0]["at"] <= f["first_error_s"] + timeline.STEP
    assert f["last_error_s"] <= f["events"][1]["at"] + f["events"][1]["took_s"] + 2 * timeline.STEP
    assert f["recovered"] and f["recovered_after_fail_s"] >= heal_at - fail_at - timeline.STEP
    before = f["seconds"][:int(fail_at)]
    assert sum(r["answered"] for r in before) > 0 and sum(r["refused"] for r in before) == 0, f["seconds"]
    assert api.status(lab.name, settle=False)["faults"] == []
    text = str(report)
    assert "<- fail" in text and "<- heal" in text and "recovered: the last error" in text


def test_load_fault_needs_a_duration_and_times_inside_it(make_lab):
    lab = make_lab("routing")
    with pytest.raises(UsageError, match="duration"):
        lab.load(source="host1", target="host2", count=10, fault=faults.Scheduled("host2", 1.0))
    with pytest.raises(UsageError, match="within the load"):
        lab.load(source="host1", target="host2", duration=2, fault=faults.Scheduled("host2", 3.0))
    with pytest.raises(UsageError, match="after the fail"):
        lab.load(source="host1", target="host2", duration=2, fault=faults.Scheduled("host2", 1.0, heal_at=0.5))
    with pytest.raises(UsageError, match="no node 'nope'"):
        lab.load(source="host1", target="host2", duration=2, fault=faults.Scheduled("nope", 1.0))
    bad = nslab("load", lab.name, "--target", "host2", "-d", "2", "--heal-at", "1")
    assert bad.returncode == 2 and "--fail-at" in bad.stderr
    bad = nslab("load", lab.name, "--target", "host2", "-d", "2", "--fail-at", "soon", "host2")
    assert bad.returncode == 2 and "'soon' is not a number" in bad.stderr
