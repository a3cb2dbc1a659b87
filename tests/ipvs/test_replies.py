"""Small requests, large replies (topologies/replies.yaml): the director's own byte counters carry every
50 000-byte reply under NAT and none under DR, in verify's check and in `nslab load`."""

import shutil

import pytest

from nslab import api

from .conftest import leftovers, topology

SIZE = 50000


def test_nat_director_carries_the_replies_dr_director_none(root_dir):
    name = "replies-t"
    lab = api.Lab(topology(root_dir, "replies", lab=name))
    try:
        lab.up()
        report = lab.verify()
        got = {r.name: r for r in report.results}
        assert report.ok, str(report)
        assert got["director-bytes:nat-web"].status == "PASS" and "every reply byte" in got["director-bytes:nat-web"].summary
        assert got["director-bytes:dr-web"].status == "PASS" and " 0 B out" in got["director-bytes:dr-web"].summary
        if shutil.which("wrk") is None:
            pytest.skip("nslab load needs wrk (apt-get install wrk)")
        out = {}
        for svc in ("nat-web", "dr-web"):
            load = api.load(name, target=svc, count=100, concurrency=10)
            assert load.ok and load.traffic["ok"] == 100, load.lines()
            out[svc] = sum(r["outbytes"] for r in load.service["real_servers"])
        assert out["nat-web"] >= 100 * SIZE, out  # every reply body, headers on top
        assert out["dr-web"] == 0, out
    finally:
        lab.down_quietly()
    assert leftovers(name) == []
