"""Schedulers proven, not asserted (topologies/schedulers.yaml): every service's scheduler check compares
something real and passes: rr/wrr shares, lc/wlc/sed/nq against the director's counts with connections held
open, sh and persistence with several client addresses, and the lab's expected 3:1 share."""

from nslab import api

from .conftest import leftovers


def test_every_scheduler_check_passes_and_compares(root_dir):
    report = api.verify(str(root_dir / "topologies" / "schedulers.yaml"))
    got = {r.name: r for r in report.results}
    assert report.ok, str(report)
    for svc in ("rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "sticky"):
        assert got[f"scheduler:{svc}"].status == "PASS", str(report)  # never a SKIP
    for svc in ("lc", "wlc", "sed", "nq"):
        assert "held open on" in got[f"scheduler:{svc}"].summary, str(report)
    assert "spread over rs1, rs2" in got["scheduler:sh"].summary, str(report)
    assert got["expect[0]"].status == "PASS", str(report)
    assert leftovers("schedulers") == []
