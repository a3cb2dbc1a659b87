"""Lab and node names become paths (/run/nslab/<lab>, /run/netns/<lab>-<node>): nothing else gets through."""

import subprocess
import sys

import pytest

from nslab import api, model, state
from nslab.errors import UsageError

TOPO = model.loads("name: x\nnodes: {a: }\n", "x.yaml")  # `up --name NAME` renames it (api.Lab)
BAD = ["..", ".", "a/b", "x/../..", "Dr", "-x", "x-", "a" * 17, "", "dr lab", "dr\n"]


@pytest.mark.parametrize("name", BAD)
def test_state_dir_refuses_bad_lab_names(name):
    with pytest.raises(UsageError):
        state.lab_dir(name)


@pytest.mark.parametrize("name", BAD)
def test_api_refuses_bad_lab_names_before_touching_anything(name):
    for call in (lambda: api.down(name), lambda: api.topology_of(name), lambda: api.node_namespace(name, "a"),
                 lambda: api.node_namespace("dr", name), lambda: api.Lab(TOPO, name=name)):
        with pytest.raises(UsageError):
            call()


def test_cli_down_dotdot_is_a_usage_error(root_dir):
    out = subprocess.run([sys.executable, "-m", "nslab", "down", ".."], capture_output=True, text=True, cwd=root_dir)
    assert out.returncode == 2 and "is not a valid lab name" in out.stderr
