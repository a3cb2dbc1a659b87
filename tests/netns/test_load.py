"""`nslab load` on the host kernel (no IPVS needed): wrk inside a lab node against a node's app, by count,
by duration and kept-alive, with its result counted per server and its latency percentiles."""

import shutil

import pytest

from nslab import api, cli
from nslab.errors import UsageError

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")


def test_count_every_request_answered_by_host2(make_lab):
    lab = make_lab("routing")
    report = api.load(lab.name, source="host1", target="host2", count=200, concurrency=10)
    t = report.traffic
    assert report.ok, report.lines()
    assert t["engine"] == "wrk" and t["mode"] == "close"
    assert t["ok"] == 200 and t["requests"] == 200 and t["by_server"] == {"host2": 200}, t
    assert t["errors"] == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    lat = t["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
    assert t["rate_per_s"] > 0 and report.service is None
    text = str(report)
    assert "200 answered, 0 failed" in text and "p90" in text


def test_duration_and_keepalive(make_lab):
    lab = make_lab("routing")
    timed = api.load(lab.name, source="host1", target="host2", duration=2, concurrency=10)
    t = timed.traffic
    assert timed.ok, timed.lines()
    assert t["duration_s"] == 2 and 1.9 <= t["elapsed_s"] <= 5, t  # wrk's own clock: the last answers drain after 2 s
    assert t["ok"] > 20 and t["by_server"] == {"host2": t["ok"]}, t

    kept = api.load(lab.name, source="host1", target="host2", count=300, concurrency=4, threads=2, keepalive=True)
    assert kept.ok and kept.traffic["mode"] == "keepalive", kept.lines()
    assert kept.traffic["by_server"] == {"host2": 300}


def test_bad_target_and_arguments(make_lab, capsys):
    lab = make_lab("routing")
    with pytest.raises(UsageError):
        api.load(lab.name, source="host1", target="nosuch")
    with pytest.raises(UsageError):
        api.load(lab.name, source="nosuch", target="host2")
    with pytest.raises(UsageError):
        api.load(lab.name, source="host1", target="host2", duration=0)
    assert cli.main(["load", lab.name, "--from", "host1", "--target", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_cli_json(make_lab, capsys):
    import json
    lab = make_lab("routing")
    assert cli.main(["load", lab.name, "--from", "host1", "--target", "host2", "-n", "50", "-c", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["traffic"]["by_server"] == {"host2": 50}
