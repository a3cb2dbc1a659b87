"""The README's main job (scripts/demo.py, what `scripts/demo` runs): DR lab up, both real servers
answer, verify passes, the trace shows DR, and nothing is left behind."""

import subprocess
import sys

from .conftest import leftovers


def test_demo_serves_from_both_real_servers_and_cleans_up(root_dir):
    out = subprocess.run([sys.executable, "scripts/demo.py"], cwd=root_dir, capture_output=True, text=True,
                         timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert '"ok": 60' in text and '"rs1": 30' in text and '"rs2": 30' in text
    assert "PASS lvs-dr" in text
    assert "rewrote the destination MAC only" in text  # the trace explains DR
    assert "lab 'dr' removed" in text
    assert leftovers("dr") == []
