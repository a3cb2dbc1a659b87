"""Every lab the host kernel can run passes `verify`, and every broken twin of one fails it, the check that
fails naming its reason (the LVS labs and twins are the ipvs tier's)."""

import pathlib

import pytest

from nslab import model

ROOT = pathlib.Path(__file__).resolve().parents[2]


def host_labs(pattern):
    return [p.relative_to(ROOT / "topologies").with_suffix("").as_posix()
            for p in sorted((ROOT / "topologies").glob(pattern)) if not model.load(str(p)).services]


# twin -> (the check that must fail, words its summary must hold), or a list of them; a twin not listed must
# fail some check
REASONS = {
    "broken/snat-missing": ("snat", ["192.168.0.10", "private address", "nodes.router.nat"]),
    "broken/routing-nat": ("expect[0].same_ip", ["r1 changed the IP pair", "nodes.r1.nat"]),
    "broken/switch-hub": ("expect[0].switch_learning", ["lan kept flooding", "pc3, pc4", "ageing 0"]),
    "broken/ports-exhausted": ("expect[0].connections", ["EADDRNOTAVAIL", "40000-40009", "ports are a resource"]),
    "broken/dnat-no-route-back": ("dnat", ["203.0.113.50", "no route back", "nodes.server.gateway: 192.168.0.1"]),
    "broken/icmp-routing-loop": [("expect[0].traceroute", ["routing loop", "r1, r2, r1, r2, r1", "TTL runs out"]),
                                 ("path", ["went round in a loop", "host1 -> r1 -> r2 -> r1"])],
}


@pytest.mark.parametrize("rel", host_labs("*.yaml"))
def test_shipped_lab_passes_verify(make_lab, rel):
    report = make_lab(rel).verify()
    assert report.ok, str(report)
    assert [r for r in report.results if r.status == "PASS"], str(report)


@pytest.mark.parametrize("rel", host_labs("broken/*.yaml"))
def test_broken_twin_fails_verify_with_its_reason(make_lab, rel):
    report = make_lab(rel).verify()
    assert not report.ok, str(report)
    reasons = REASONS.get(rel, [])
    failed = {r.name: r.summary for r in report.failed}
    for check, words in reasons if isinstance(reasons, list) else [reasons]:
        assert check in failed, str(report)
        assert all(w in failed[check] for w in words), failed[check]
