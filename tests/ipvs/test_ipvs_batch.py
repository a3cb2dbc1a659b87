"""Real servers many per netlink send (kernel/ipvs_batch.py): the table ipvsadm shows afterwards, changes in
place, and a refused request that takes the whole batch back and names the real server."""

import subprocess

import pytest

from nslab.errors import KernelError
from nslab.kernel import apply, netns
from nslab.kernel.session import Session
from nslab.plan.actions import AddNetns, IpvsDest, IpvsService

NS = "nslabtest-batch-director"
VIP = "10.0.0.100"


@pytest.fixture
def director():
    yield NS
    if netns.exists(NS):
        netns.delete(NS)


def dests(n, weight=lambda i: 1 + i % 3, method="dr"):
    return [IpvsDest(NS, vip=VIP, port=80, rip=f"10.1.{i // 250}.{i % 250 + 1}", rport=80, weight=weight(i),
                     method=method) for i in range(n)]


def table():
    """{(real server, forwarding flag, weight)} as ipvsadm lists it."""
    out = subprocess.run(["ip", "netns", "exec", NS, "ipvsadm", "-Sn"], capture_output=True, text=True, check=True)
    rows = set()
    for line in out.stdout.splitlines():
        words = line.split()
        if words[:1] == ["-a"]:
            rows.add((words[words.index("-r") + 1], words[words.index("-r") + 2], int(words[words.index("-w") + 1])))
    return rows


def expected(actions):
    return {(f"{a.rip}:{a.rport}", {"dr": "-g", "nat": "-m", "tun": "-i"}[a.method], a.weight) for a in actions}


def test_many_real_servers_then_changed_in_place_then_a_refused_one(director):
    service = IpvsService(NS, vip=VIP, port=80, scheduler="wrr")
    first = dests(300)  # more than one send (BATCH)
    with Session() as s:
        applied = apply.apply(s, [AddNetns(NS, mark="nslab:nslabtest:batch"), service, *first])
    assert len(applied) == 302
    assert table() == expected(first)

    # weights and methods changed in place (the "set" requests), one dump to see what is there
    second = dests(300, weight=lambda i: 5 if i % 2 else 1 + i % 3, method="tun")
    with Session() as s:
        changed = apply.apply(s, [service, *second])
    assert len(changed) == 300  # every method changed, so every real server
    assert table() == expected(second)

    # the kernel refuses a negative weight (2**31 read as an int): nothing of the batch stays
    third = dests(150, weight=lambda i: 2 ** 31 if i == 75 else 9, method="dr") + dests(450)[300:]
    with Session() as s, pytest.raises(KernelError) as err:
        apply.apply(s, [service, *third])
    assert "10.1.0.76" in str(err.value)
    assert table() == expected(second)
