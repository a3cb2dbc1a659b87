"""The topology model: load a file or text into a validated, immutable Topology.

The YAML reader (source), the field checks (build, spec) and the cross-field rules are imported on first
use, so a command that only needs a name (down, status) does not pay for them (PyYAML alone is ~13 ms). The
resolve submodule stays eager: importing a submodule anywhere sets the package attribute of its name, which
would replace the function below; the reader's module is named source, not load, for the same reason.
"""

from .names import check_name
from .resolve import ResolvedLab, resolve
from .schema import Forward, Topology

__all__ = ["load", "loads", "resolve", "ResolvedLab", "Topology", "Forward", "check_name"]


def _validate(source, text: str):
    from ..record import replace

    from . import build, rules
    topo, diags = build.build(source)
    diags.stop_if_any()  # cross-field rules assume every field has its own shape
    rules.check(resolve(topo), diags)  # the rules judge the same derived facts the planner reads
    diags.stop_if_any()
    return replace(topo, text=text)


def load(filename: str):
    """Load and validate a topology file into a Topology. Raises TopologyError listing every problem."""
    from .source import read
    source = read(filename)
    return _validate(source, source.text)


def loads(text: str, filename: str = "<string>"):
    """Load and validate topology text into a Topology. Raises TopologyError listing every problem."""
    from .source import parse
    return _validate(parse(text, filename), text)
