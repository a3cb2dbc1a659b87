"""The IPVS bench scripts, each in its small configuration, print their figure lines: none can rot.
(Only the output's shape is checked: the figures are for bench/, not for tests.)"""

import re

NUM = r"-?[\d.]+"


def test_ipvs_small(run_bench):
    lines = run_bench("ipvs.py", "--small", "--prefix", "tbench-ipvs")
    assert re.fullmatch(rf"ipvs 50 rs: nslab {NUM} s, ipvsadm -R {NUM} s, ratio {NUM}", lines[-1]), lines
    assert re.fullmatch(rf"ipvs 10 rs: nslab {NUM} s, ipvsadm -R {NUM} s, ratio {NUM}", lines[-2]), lines


def test_load_small(run_bench):
    lines = run_bench("load.py", "--small")
    for mode in ("close", "keepalive"):
        assert any(re.fullmatch(rf"load dr {mode}: nslab {NUM}/s, wrk {NUM}/s, ratio {NUM}; director packets per "
                                rf"request in {NUM}, out {NUM}", x) for x in lines), lines
    assert re.fullmatch(rf"load dr close: nslab {NUM}/s, wrk {NUM}/s, ratio {NUM}", lines[-1]), lines
