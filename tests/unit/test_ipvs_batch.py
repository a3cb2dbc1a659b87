"""Batched IPVS real servers: a request copied from another real server's, with the four fields rewritten,
is byte for byte the request pyroute2 encodes for it (sequence number and pid aside)."""

import struct

import pytest

from nslab.kernel import ipvs, ipvs_batch
from nslab.plan.actions import IpvsDest

FAMILY = 0x24  # any generic-netlink family id: the encoding does not depend on it


def dest(**kw):
    base = dict(protocol="tcp", vip="10.0.0.100", port=80, rip="10.0.0.11", rport=80, weight=1, method="dr")
    return IpvsDest("lab-director", **{**base, **kw})


def without_seq_pid(data: bytes) -> bytes:
    return data[:8] + b"\0" * 8 + data[16:]


@pytest.mark.parametrize("command", ["add", "set", "del"])
@pytest.mark.parametrize("other", [
    dict(rip="10.9.250.3"), dict(rport=8080), dict(weight=0), dict(weight=70000), dict(method="nat"),
    dict(method="tun", rip="192.168.7.1", rport=1, weight=3),
])
def test_filled_request_is_what_pyroute2_encodes(command, other):
    template = ipvs_batch.Template(ipvs.request(command, dest(), FAMILY))
    wanted = ipvs.request(command, dest(**other), FAMILY)
    filled = template.fill(7, *ipvs._values(dest(**other)))
    assert without_seq_pid(filled) == without_seq_pid(wanted)
    assert struct.unpack_from("=II", filled, 8) == (7, 0)
    assert filled != template.fill(7, *ipvs._values(dest()))  # the rewrite changed something


def test_template_refuses_a_request_without_a_real_server():
    service_only = ipvs.request("add", dest(), FAMILY)[:ipvs_batch.HEADERS]
    with pytest.raises(ValueError):
        ipvs_batch.Template(service_only)
