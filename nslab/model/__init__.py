"""The topology model: load a file or text into a validated, immutable Topology."""

from dataclasses import replace

from . import build as _build
from . import rules as _rules
from .resolve import ResolvedLab, resolve
from .load import parse, read
from .schema import Forward, Topology

__all__ = ["load", "loads", "resolve", "ResolvedLab", "Topology", "Forward", "check_name"]


def check_name(name, what: str = "lab") -> str:
    """Return name if it is a valid lab or node name, else raise UsageError: names become paths
    (/run/nslab/<lab>, /run/netns/<lab>-<node>), so nothing else may get through."""
    from ..errors import UsageError
    limit = _build.MAX_LAB if what == "lab" else _build.MAX_NODE
    if not isinstance(name, str) or not _build.LAB_NAME.match(name) or len(name) > limit:
        raise UsageError(f"{name!r} is not a valid {what} name (up to {limit} lowercase letters and digits, "
                         "'-' between them, starting with a letter)")
    return name


def _validate(source, text: str) -> Topology:
    topo, diags = _build.build(source)
    diags.stop_if_any()  # cross-field rules assume every field has its own shape
    _rules.check(resolve(topo), diags)  # the rules judge the same derived facts the planner reads
    diags.stop_if_any()
    return replace(topo, text=text)


def load(filename: str) -> Topology:
    """Load and validate a topology file. Raises TopologyError listing every problem."""
    source = read(filename)
    return _validate(source, source.text)


def loads(text: str, filename: str = "<string>") -> Topology:
    """Load and validate topology text. Raises TopologyError listing every problem."""
    return _validate(parse(text, filename), text)
