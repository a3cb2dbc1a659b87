"""The host-kernel bench scripts, each in its small configuration, print their figure lines: none can rot.
(The figures themselves are for bench/, not for tests: only the output's shape is checked here.)"""

import os
import re

import pytest

NUM = r"-?[\d.]+"


def test_lab_up_small(run_bench):
    lines = run_bench("lab_up.py", "--small", "--memory", "--prefix", "tbench")
    assert re.fullmatch(rf"star 6: nslab {NUM} s, ip {NUM} s, floor {NUM} s, nslab/floor {NUM}, nslab/ip {NUM}",
                        lines[-1]), lines
    assert any(re.match(rf"per-node `nslab up` at 6: {NUM} ms, at 3: {NUM} ms .*, ratio {NUM}$", x) for x in lines)
    held = next(x for x in lines if x.startswith("held while up"))
    assert held.startswith("held while up by the 6-host star: 0 processes (0.0 MB RSS), state "), held
    assert not [n for n in os.listdir("/run/netns") if n.startswith("tbench-")]


def test_capture_loss_small(run_bench):
    lines = run_bench("capture_loss.py", "--count", "200")
    assert re.fullmatch(rf"capture: \d+ taps ready in {NUM} ms, lost 0 of 200", lines[-1]), lines


def test_apps_throughput_small(run_bench):
    lines = run_bench("apps_throughput.py", "--scale", "0.02")
    assert lines[-1].startswith("ratio: req/s nslab / baseline"), lines
    assert len([x for x in lines if re.match(r"\s+(1|50|200) ", x)]) == 3, lines


@pytest.mark.skipif(os.environ.get("NSLAB_BENCH_VM") != "1",
                    reason="boots two kernel VMs: scripts/test sets NSLAB_BENCH_VM=1 (on a shared machine, "
                    "go through its VM slots)")
def test_vm_boot_small(run_bench):
    lines = run_bench("vm_boot.py", "--runs", "1", timeout=1200)
    assert re.fullmatch(rf"vm boot: nslab {NUM} s, vng {NUM} s, ratio {NUM}", lines[-1]), lines


def test_cli_small(run_bench):
    lines = run_bench("cli.py", "--small")
    assert re.fullmatch(rf"cli CPU vs import pyroute2: --help {NUM}, validate {NUM}, plan {NUM}, graph {NUM}, "
                        rf"down {NUM}", lines[-1]), lines
