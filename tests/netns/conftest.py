"""Labs for the host-kernel tier: each test's labs get unique names and are always taken down."""

import itertools
import json
import os
import subprocess

import pytest

from nslab import api

_counter = itertools.count()


@pytest.fixture
def make_lab(root_dir):
    """make_lab('routing') -> an up Lab named uniquely; downed after the test, whatever happens."""
    made = []

    def make(topology, name=None):
        name = name or f"t{os.getpid() % 1000}x{next(_counter)}"
        lab = api.Lab(str(root_dir / "topologies" / f"{topology}.yaml"), name=name)
        made.append(lab)
        lab.up()
        return lab

    yield make
    for lab in made:
        lab.down_quietly()


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
