"""Layer 4 against layer 7 (topologies/l4l7.yaml): through IPVS one connection end to end, through haproxy
two, and only haproxy chooses by path."""

import shutil

import pytest

from nslab import api

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (apt-get install haproxy)")


def test_ipvs_forwards_the_connection_haproxy_makes_its_own(root_dir):
    report = api.verify(str(root_dir / "topologies" / "l4l7.yaml"))
    got = {r.name: r for r in report.results}
    assert report.ok, str(report)
    summary = got["l4-l7:proxy"].summary
    assert "through IPVS (web) one TCP connection end to end" in summary, summary
    assert "then 10.0.0.3:" in summary and "/api -> rs2" in summary, summary
    assert "IPVS sent /api to rs1, rs2: it never sees the path" in summary, summary
