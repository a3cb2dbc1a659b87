"""A VRRP pair of directors (topologies/dr-ha.yaml, one lab for the module): cut the master and the backup
takes the VIP and new requests succeed once VRRP's master-down timer (3 advertisements and a skew) has run
out; heal it and it takes the VIP back; `down` leaves no keepalived process and no file."""

import os
import pathlib
import time

import pytest

from nslab import api, state
from nslab.plan import keepalived

from .conftest import leftovers, shipped_lab, wait_until
from .prober import Prober, answers_by, errors_in

LAB = "kaha"
VIP = ("10.0.0.100", 80)
BACKUP_PRIORITY = 140
# RFC 3768: a backup declares the master down after 3 advertisement intervals plus a skew of
# (256 - its priority) / 256 of one; then it sends gratuitous ARP for the VIP.
MASTER_DOWN = 3 * keepalived.ADVERT_INT + (256 - BACKUP_PRIORITY) / 256 * keepalived.ADVERT_INT
SLACK = 2.0  # seconds: the emulated VM's scheduling, the client's SYN retransmission


ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab():
    yield from shipped_lab(ROOT, "dr-ha", LAB)


def directors(lab) -> dict:
    """{director: (vrrp state, holds the VIP)} now."""
    [svc] = api.status(LAB, settle=False)["services"]
    return {d["node"]: (d["vrrp"], d["holds_vip"]) for d in svc["keepalived"]}


def wait_for(lab, want: dict, within: float) -> float:
    """Seconds until directors(lab) holds every (director: (vrrp state, holds the VIP)) of want."""
    return wait_until(lambda: directors(lab), want, within)


def outage(outcomes, since: float):
    """(seconds from `since` to the first answer after the last error, the errors) of the requests after since."""
    errors = errors_in(outcomes, since, float("inf"))
    last = errors[-1][0] if errors else since
    first = next((t for t, server, _ in outcomes if server and t >= last), None)
    return (None if first is None else first - since), errors


def test_cutting_the_master_moves_the_vip_and_healing_it_brings_it_back(lab):
    wait_for(lab, {"d1": ("master", True), "d2": ("backup", False)}, 60)
    probe = Prober(api.node_namespace(LAB, "client"), *VIP, timeout=1.0).start()
    try:
        time.sleep(3)
        failed_at = probe.now()
        lab.fail("d1", whole_node=True)  # its links cut first: no VRRP goodbye reaches d2
        fail_returned = probe.now()
        took_over = wait_for(lab, {"d2": ("master", True)}, 30)
        time.sleep(max(0.0, failed_at + MASTER_DOWN + SLACK + 3 - probe.now()))
        healing = probe.now()
        lab.heal("d1", whole_node=True)  # returns once d1's keepalived runs again
        healed = probe.now()
        wait_for(lab, {"d1": ("master", True), "d2": ("backup", False)}, 60)
        time.sleep(3)
    finally:
        outcomes = probe.stop()
    before = answers_by(outcomes, 0, failed_at)
    assert set(before) == {"rs1", "rs2"} and not errors_in(outcomes, 0, failed_at), before
    # The links go down somewhere inside the fail, after its own Python (seconds under TCG): the cut came no
    # later than the fail's return, nor than the first request that failed.
    cut = min([fail_returned] + [t for t, _ in errors_in(outcomes, failed_at, healing)[:1]])
    down_for, errors = outage([o for o in outcomes if o[0] < healing], cut)
    print(f"\nd1 cut (the fail took {fail_returned - failed_at:.2f} s): d2 master after {took_over:.2f} s (status), "
          f"requests answered again {down_for:.2f} s after the cut (master-down timer {MASTER_DOWN:.2f} s); errors: "
          f"{len(errors)} {sorted({e for _, e in errors})}")
    assert down_for is not None and down_for <= MASTER_DOWN + SLACK, errors
    assert set(answers_by(outcomes, cut + down_for, healing)) == {"rs1", "rs2"}
    # d1 starts as a backup that outranks d2: it takes the VIP back once its own master-down timer runs out
    # (its skew is shorter than d2's), and the requests d2 held at that moment are reset. The heal itself
    # (links up, keepalived started: seconds under TCG) is not part of that bound.
    back_for, errors = outage(outcomes, healing)
    back_for = None if back_for is None else back_for - (healed - healing)
    print(f"d1 healed (the heal took {healed - healing:.2f} s): requests answered again {back_for:.2f} s after "
          f"its keepalived ran; errors: {len(errors)} {sorted({e for _, e in errors})}")
    assert back_for is not None and back_for <= MASTER_DOWN + SLACK
    assert set(answers_by(outcomes, outcomes[-1][0] - 2, float("inf"))) == {"rs1", "rs2"}


def test_down_leaves_no_keepalived_process_and_no_file(lab):
    assert len(_keepalived_pids()) >= 6, "two keepalived (parent, vrrp, checkers) should run before down"
    lab.down()
    assert _keepalived_pids() == []
    assert not os.path.exists(state.lab_dir(LAB))
    assert leftovers(LAB) == [] and state.load(LAB) is None


def _keepalived_pids():
    out = []
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "keepalived":
                    out.append(int(p))
        except (OSError, ValueError):
            pass
    return out
