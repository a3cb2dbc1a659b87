"""The topology model: load a file or text into a validated, immutable Topology."""

from dataclasses import replace

from . import build as _build
from . import checks as _checks
from .load import parse, read
from .schema import Forward, Topology

__all__ = ["load", "loads", "Topology", "Forward"]


def _validate(source, text: str) -> Topology:
    topo, diags = _build.build(source)
    diags.stop_if_any()  # cross-field rules assume every field has its own shape
    _checks.check(topo, diags)
    diags.stop_if_any()
    return replace(topo, text=text)


def load(filename: str) -> Topology:
    """Load and validate a topology file. Raises TopologyError listing every problem."""
    source = read(filename)
    return _validate(source, source.text)


def loads(text: str, filename: str = "<string>") -> Topology:
    """Load and validate topology text. Raises TopologyError listing every problem."""
    return _validate(parse(text, filename), text)
