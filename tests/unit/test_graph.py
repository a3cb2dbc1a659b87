"""`nslab graph`: the topology drawing is valid SVG naming every node, switch, address and service."""

import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from nslab import model
from nslab.verify import export

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((ROOT / "topologies").glob("**/*.yaml"))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.stem)
def test_graph_is_valid_svg_with_everything_named(path):
    topo = model.load(str(path))
    root = ET.fromstring(export.graph_svg(topo))
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for node in topo.nodes:
        assert node.name in text
        for iface in node.interfaces:
            for a in iface.addresses:
                assert str(a) in text
    assert all(s in text for s in topo.switches)
    for svc in topo.services:
        assert f"VIP {svc.vip}:{svc.port}" in text


@pytest.mark.parametrize("where", ["a-directory", "no-such-dir/x.svg"])
def test_an_svg_path_that_cannot_be_written_is_a_usage_error(tmp_path, where):
    """graph --svg into a directory, or a directory that doesn't exist, was an OSError traceback."""
    out = subprocess.run([sys.executable, "-m", "nslab", "graph", str(ROOT / "topologies" / "routing.yaml"), "--svg",
                          str(tmp_path if where == "a-directory" else tmp_path / where)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "cannot write" in out.stderr, out.stderr
