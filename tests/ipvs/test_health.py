"""Health checks by keepalived (topologies/dr-health.yaml, one lab for the module): under load, a real server
whose app dies stops getting new connections within interval x (retries + 1) + 2 s, with the errors a client
sees counted and bounded; healed, it is back within the same bound; with every real server failed the sorry
server answers; `down` leaves no keepalived process and no file."""

import os
import pathlib
import time

import pytest

from nslab import api, state
from nslab.plan import keepalived

from .conftest import http, leftovers, topology
from .prober import Prober, answers_by, errors_in

LAB = "kahl"
VIP = ("10.0.0.100", 80)
INTERVAL, RETRIES = 1, 1  # as in dr-health.yaml
BOUND = INTERVAL * (RETRIES + 1) + 2  # seconds


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


def test_a_dead_real_server_gets_no_new_connections_and_comes_back(lab):
    wait_for(lab, {n: (True, 1) for n in ("rs1", "rs2", "rs3")}, 60)
    probe = Prober(api.node_namespace(LAB, "client"), *VIP).start()
    try:
        time.sleep(3)
        failed_at = probe.now()
        lab.fail("rs1")
        seen_out = wait_for(lab, {"rs1": (False, None)}, 30)
        time.sleep(max(0.0, failed_at + BOUND + 2 - probe.now()))
        healing = probe.now()
        lab.heal("rs1")  # returns once the app listens again
        healed_at = probe.now()
        seen_back = wait_for(lab, {"rs1": (True, 1)}, 30)
        time.sleep(max(0.0, healed_at + BOUND + 2 - probe.now()))
    finally:
        outcomes = probe.stop()
    end = outcomes[-1][0]
    before = answers_by(outcomes, 0, failed_at)
    assert set(before) == {"rs1", "rs2", "rs3"} and not errors_in(outcomes, 0, failed_at), before
    # rs1's kernel refuses what the director still sends it (DR: the RST goes straight to the client), until
    # keepalived takes it out of the table: no error after that, and none outside the window
    errors = errors_in(outcomes, failed_at, healing)
    assert errors, "the dead real server was never scheduled: nothing was compared"
    detected = errors[-1][0] - failed_at
    sent = len([o for o in outcomes if failed_at <= o[0] < failed_at + detected + 0.001])
    print(f"\nrs1 failed: last error {detected:.2f} s after the fail ({len(errors)} errors of {sent} requests, "
          f"{sorted({e for _, e in errors})}); keepalived's status had it out after {seen_out:.2f} s")
    assert detected <= BOUND, errors
    assert len(errors) <= sent / 2 + 1  # rs1 had a third of the connections: a refused one is retried at once
    assert "rs1" not in answers_by(outcomes, failed_at, healing)
    assert not errors_in(outcomes, healing, end)
    back = [t for t, server, _ in outcomes if server == "rs1" and t >= healed_at]
    assert back, "rs1 never answered again after the heal"
    print(f"rs1 healed (heal took {healed_at - healing:.2f} s): first answer {back[0] - healed_at:.2f} s after, "
          f"keepalived's status had it back after {seen_back:.2f} s")
    assert back[0] - healed_at <= BOUND
    after = answers_by(outcomes, back[0], end)
    assert set(after) == {"rs1", "rs2", "rs3"}, after


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
    assert len(pids) >= 3, "keepalived (parent, checkers) should run before down"
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
