"""Health checks by keepalived (topologies/dr-health.yaml, one lab for the module): with every real server
failed the sorry server answers; verify's health check fails and heals a real server; `down` leaves no
keepalived process and no file."""

import os
import pathlib
import time

import pytest

from nslab import api, state
from nslab.plan import keepalived

from .conftest import http, leftovers, topology

LAB = "kahl"
VIP = ("10.0.0.100", 80)


ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab():
    lab = api.Lab(topology(ROOT, "dr-health", lab=LAB))
    try:
        lab.up()
        yield lab
    finally:
        lab.down_quietly()


def checker_view(lab) -> dict:
    """{node: (healthy, ipvs weight)} as the director's keepalived and IPVS table say now."""
    [svc] = api.status(LAB, settle=False)["services"]
    [director] = svc["keepalived"]
    return {rs["node"]: (rs["healthy"], rs["weight"]) for rs in director["real_servers"]}


def wait_for(lab, want: dict, within: float) -> float:
    """Seconds until checker_view(lab) holds every (node: (healthy, weight)) of want; fails after `within`."""
    start = time.monotonic()
    while True:
        view = checker_view(lab)
        if all(view[n] == w for n, w in want.items()):
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"after {within} s: {view}, waiting for {want}"
        time.sleep(0.1)


def test_with_every_real_server_failed_the_sorry_server_answers(lab):
    nodes = ("rs1", "rs2", "rs3")
    wait_for(lab, {n: (True, 1) for n in nodes}, 30)
    try:
        for node in nodes:
            lab.fail(node)
        took = wait_for(lab, {n: (False, None) for n in nodes}, 30)
        assert checker_view(lab)["sorry"] == (None, 1)  # keepalived put it in the table
        print(f"\nevery real server out after {took:.2f} s")
        result = http(lab, "client", "%s:%d" % VIP, count=12, concurrency=3)
        assert result["by_server"] == {"sorry": 12}, result
    finally:
        for node in nodes:
            lab.heal(node)
    wait_for(lab, {**{n: (True, 1) for n in nodes}, "sorry": (None, None)}, 30)
    result = http(lab, "client", "%s:%d" % VIP, count=12, concurrency=3)
    assert set(result["by_server"]) == set(nodes), result


def test_verify_fails_and_heals_a_real_server(lab):
    report = lab.verify(count=30)
    [health] = [r for r in report.results if r.name == "health"]
    print("\n" + health.summary + "\n" + "\n".join(health.evidence))
    assert health.status == "PASS", (health.summary, health.evidence)
    assert lab.status()["faults"] == [] and checker_view(lab)["rs1"] == (True, 1)


def test_down_leaves_no_keepalived_process_and_no_file(lab):
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "keepalived"]
    assert len(pids) == 2, "keepalived (parent, checkers) should run before down"
    lab.down()
    assert [int(p) for p in os.listdir("/proc") if p.isdigit() and _comm(p) == "keepalived"] == []
    assert not os.path.exists(state.lab_dir(LAB)) and not os.path.exists(keepalived.notify_dir(LAB))
    assert leftovers(LAB) == [] and state.load(LAB) is None


def _comm(pid) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
