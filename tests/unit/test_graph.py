"""`nslab graph`: the topology drawing is valid SVG naming every node, switch, address and service."""

import pathlib
import xml.etree.ElementTree as ET

import pytest

from nslab import model
from nslab.verify import export

TOPOLOGIES = sorted((pathlib.Path(__file__).resolve().parents[2] / "topologies").glob("**/*.yaml"))


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
