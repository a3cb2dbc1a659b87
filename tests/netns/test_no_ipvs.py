"""On a kernel without IPVS, an LVS lab fails before creating anything, pointing at `nslab vm`."""

import subprocess
import sys

import pytest

from nslab.kernel import caps, netns


@pytest.mark.skipif(caps.has_ipvs(), reason="this kernel has IPVS")
def test_up_lvs_lab_without_ipvs_exits_3_and_creates_nothing(root_dir):
    def dr():  # only the lab's own names: other labs come and go on a shared machine meanwhile
        return [n for n in netns.list_names() if n.startswith("dr-")]
    before = dr()
    out = subprocess.run([sys.executable, "-m", "nslab.cli", "up", str(root_dir / "topologies" / "dr.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    assert "no IPVS" in out.stderr and "nslab vm -- nslab verify" in out.stderr
    assert dr() == before
