"""On a kernel without netem, a lab with `impair:` fails before creating anything, pointing at `nslab vm`."""

import subprocess
import sys

import pytest

from nslab.kernel import caps, netns

LAB = """\
name: noimp-t
description: a long, lossy, rate-limited line to one server, a plain cable to another
switches: [home, lan]
nodes:
  client:
    interfaces:
      eth0: {switch: home, address: 192.168.1.10/24}
    gateway: 192.168.1.1
  router:
    forward: true
    interfaces:
      eth0: {switch: home, address: 192.168.1.1/24}
      eth1: {switch: lan, address: 10.0.0.1/24}
      eth2:
        peer: far:eth0
        address: 203.0.113.1/24
        impair: {delay: 25ms, jitter: 2ms, loss: 2%, rate: 10mbit}
  near:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.10/24}
    gateway: 10.0.0.1
    app: http
  far:
    interfaces:
      eth0:
        peer: router:eth2
        address: 203.0.113.10/24
        impair: {delay: 25ms, jitter: 2ms, loss: 2%, rate: 10mbit}
    gateway: 203.0.113.1
    app: http
"""


@pytest.mark.skipif(caps.has_netem(), reason="this kernel has netem and tbf")
def test_up_impaired_lab_without_netem_exits_3_and_creates_nothing(tmp_path):
    text = LAB
    path = tmp_path / "impair.yaml"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "nslab.cli", "up", str(path)], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert "impairs router:eth2, far:eth0" in out.stderr and "no netem" in out.stderr, out.stderr
    assert "nslab vm -- nslab verify" in out.stderr
    assert [n for n in netns.list_names() if n.startswith("noimp-t-")] == []
