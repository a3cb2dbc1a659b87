"""On a kernel without netem, a lab with `impair:` fails before creating anything, pointing at `nslab vm`."""

import pathlib
import subprocess
import sys

import pytest

from nslab.kernel import caps, netns

# the unit tier's impair lab under a name of its own
LAB = (pathlib.Path(__file__).parents[1] / "labs" / "impaired-line.yaml").read_text().replace("name: impair\n", "name: noimp-t\n")


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
