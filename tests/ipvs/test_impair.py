"""Link impairment on the kernel VM's netem and tbf (topologies/impair.yaml): up puts the qdiscs in place,
verify measures the added round trip and the loss, and the twin whose delay outlasts the client's timeout
fails although nothing is lost."""

import json

import pytest

from nslab import api
from nslab.kernel import caps

from .conftest import leftovers, topology

pytestmark = pytest.mark.skipif(not caps.has_netem(), reason="needs sch_netem and sch_tbf: run in nslab vm")


def test_impaired_line_measured_by_verify(root_dir):
    name = "impair-t"
    lab = api.Lab(topology(root_dir, "impair", lab=name))
    try:
        lab.up()
        assert lab.up().changed == []  # the qdiscs read back as in place: a second up changes nothing
        shown = json.loads(lab.run("router", ["tc", "-j", "qdisc", "show", "dev", "eth2"]).stdout)
        kinds = {q["kind"] for q in shown}
        assert {"netem", "tbf"} <= kinds, shown
        report = lab.verify()
        got = {r.name: r for r in report.results}
        assert report.ok, str(report)
        for check in ("impair:router:eth2", "impair:far:eth0"):
            assert got[check].status == "PASS" and "for a 50 ms delay ±4" in got[check].summary, str(report)
        for check in ("impair-rate:router:eth2", "impair-rate:far:eth0"):  # 10 Mbit/s each way, measured
            assert got[check].status == "PASS" and "for a 10.00 Mbit/s rate" in got[check].summary, str(report)
        print(report)
    finally:
        lab.down_quietly()
    assert leftovers(name) == []


def test_delay_over_the_client_timeout_fails_verify(root_dir):
    report = api.verify(str(root_dir / "topologies" / "broken" / "impair-delay-over-timeout.yaml"))
    got = {r.name: r for r in report.results}
    assert not report.ok, str(report)
    assert got["impair:router:eth2"].status == "PASS" and "0 of 5 lost" in got["impair:router:eth2"].summary, \
        str(report)
    assert got["path"].status == "FAIL", str(report)
    line = got["impair-timeout:router:eth2"]  # the line named once, as the reason
    assert line.status == "FAIL" and "at least 3000 ms" in line.summary and "2 s a request waits" in line.summary, \
        str(report)
