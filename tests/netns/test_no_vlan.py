"""On a kernel without 802.1Q or VLAN-filtering bridges, a lab with `vlan:` fails before creating anything,
pointing at `nslab vm`."""

import pathlib
import subprocess
import sys

import pytest

from nslab.kernel import caps, netns

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(caps.has_vlan(), reason="this kernel has 802.1Q and VLAN-filtering bridges")
def test_up_vlan_lab_without_8021q_exits_3_and_creates_nothing(tmp_path):
    path = tmp_path / "vlan.yaml"
    path.write_text((ROOT / "topologies" / "vlan.yaml").read_text().replace("name: vlan\n", "name: novlan-t\n"))
    out = subprocess.run([sys.executable, "-m", "nslab.cli", "up", str(path)], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert "has VLANs" in out.stderr and "no 802.1Q" in out.stderr, out.stderr
    assert "nslab vm -- nslab verify" in out.stderr
    assert [n for n in netns.list_names() if n.startswith("novlan-t-")] == []
