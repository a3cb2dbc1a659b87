"""YAML text -> plain Python data plus the line of every YAML path, loaded safely."""

import yaml

from ..errors import TopologyError


class Source:
    """The raw document and where each path came from, for error messages."""

    def __init__(self, filename: str, data, lines: dict, text: str = ""):
        self.filename = filename
        self.text = text
        self.data = data
        self.lines = lines  # path tuple -> 1-based line

    def line(self, path: tuple):
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _walk(loader, node, path, lines):
    lines[path] = node.start_mark.line + 1
    if not isinstance(node, yaml.ScalarNode) and node.tag not in PLAIN_TAGS:
        # Scalars go through the safe constructor, which refuses unknown tags; do the same here.
        raise yaml.constructor.ConstructorError(None, None, f"tag {node.tag} is not allowed", node.start_mark)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if isinstance(key, (list, dict)):
                key = str(key)
            out[key] = _walk(loader, vnode, path + (key,), lines)
            lines[path + (key,)] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, path + (i,), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse(text: str, filename: str = "<string>") -> Source:
    """Parse YAML with the safe loader, keeping line numbers.

    Raises TopologyError for syntax errors and for a document that isn't a mapping.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        lines: dict = {}
        data = _walk(loader, root, (), lines) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(e, "problem", None) or str(e)
        raise TopologyError([f"{where}: not valid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise TopologyError([f"{filename}: a topology is a YAML mapping with at least 'name' and 'nodes'"])
    return Source(filename, data, lines, text)


def read(filename: str) -> Source:
    """Read and parse a topology file. Raises TopologyError if it can't be read."""
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TopologyError([f"{filename}: cannot read the topology file: {e.strerror}"]) from None
    return parse(text, filename)
