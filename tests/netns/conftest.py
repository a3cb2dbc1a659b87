"""Labs for the host-kernel tier: each test's labs get unique names and are always taken down."""

import json
import subprocess

import pytest


@pytest.fixture
def make_lab(nslab_lab, root_dir):
    """make_lab('routing') -> that shipped topology up under a unique name, through nslab's own pytest
    plugin (nslab_lab), so the plugin is exercised on every run; down after the test, whatever happens."""
    return lambda topology, name=None: nslab_lab(root_dir / "topologies" / f"{topology}.yaml", name=name)


def host_network_snapshot():
    """The host namespace as `ip -j` shows it: links, addresses, routes (counters left out)."""
    snap = {}
    for what in ("link", "addr", "route"):
        data = json.loads(subprocess.run(["ip", "-j", what], capture_output=True, text=True, check=True).stdout)
        for entry in data:
            entry.pop("stats64", None)
            entry.pop("stats", None)
        snap[what] = data
    return snap
