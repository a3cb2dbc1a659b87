"""YAML text -> plain Python data plus the line of every YAML path, loaded safely and within bounds."""

import bisect
import re

import yaml

from ..errors import TopologyError
from .diag import Diagnostics

MAX_BYTES = 1 << 20  # a topology is a few kilobytes; this keeps /dev/zero or a stray log from eating memory
MAX_DEPTH = 32  # the deepest real path (nodes.X.exec[0][0]) is 5 levels; far below the recursion limit
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_SURROGATE = re.compile("[\ud800-\udfff]")
_COLLECTION_ALIAS = "!nslab/collection-alias"  # stands in for a refused alias until the walk reports it


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


class _Loader(yaml.SafeLoader):
    """The safe loader, bounded.

    Aliases may stand for plain values only, never for a mapping or a list: a topology has no use
    for them, and refusing them is what keeps a few lines from expanding into billions of nodes
    (billion laughs) or into a loop (an alias inside its own anchor). A refused alias becomes a
    placeholder that the walk reports at its YAML path. Nesting deeper than MAX_DEPTH stops here,
    before the recursive composer reaches Python's recursion limit.
    """

    def __init__(self, text):
        super().__init__(text)
        self.depth = 0

    def fetch_flow_collection_start(self, token_class):
        # Refuse deep '[' / '{' nesting while scanning: the scanner looks ahead up to 1024 characters
        # for a possible key, once per open bracket, so 1000 of them would take half a second.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and not isinstance(target, yaml.ScalarNode):
                self.get_event()
                return yaml.ScalarNode(_COLLECTION_ALIAS, event.anchor, event.start_mark, event.end_mark)
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Walk:
    """Builds plain data from the composed nodes, recording each path's line and each structural problem."""

    def __init__(self, loader, line_at):
        self.loader = loader
        self.line_at = line_at  # a PyYAML mark -> its line as editors count them
        self.lines: dict = {}
        self.problems: list = []  # (path, line, message, fix)
        self.refused: set = set()  # anchors whose collection aliases were reported

    def problem(self, path, node, message, fix=""):
        self.problems.append((path, self.line_at(node.start_mark), message, fix))

    def value(self, node, path):
        self.lines[path] = self.line_at(node.start_mark)
        if node.tag == _COLLECTION_ALIAS:
            if node.value not in self.refused:  # once per anchor: a chain of them would bury everything else
                self.refused.add(node.value)
                self.problem(path, node, f"*{node.value} is an alias to a mapping or list",
                             "nslab takes aliases to plain values only, so that a small file can't expand into "
                             "a huge one: write the settings out")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if node.tag not in PLAIN_TAGS:
            self.problem(path, node, f"tag {node.tag} is not allowed", "remove the tag")
            return None
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.mapping(node, path)

    def mapping(self, node, path):
        out, first_line = {}, {}
        for knode, vnode in node.value:
            line = self.line_at(knode.start_mark)
            if not isinstance(knode, yaml.ScalarNode) or knode.tag == _COLLECTION_ALIAS:
                self.problem(path, knode, "a key must be plain text, not a mapping or list",
                             "write the key as a name")
                continue
            if knode.tag == "tag:yaml.org,2002:merge":
                self.problem(path, knode, "merge keys ('<<') are not supported", "write the settings out")
                continue
            before = len(self.problems)
            key = self.scalar(knode, path)
            if len(self.problems) > before:
                continue
            if key in out:
                self.problem(path + (key,), knode, f"{key!r} is given twice (first on line {first_line[key]})",
                             "keep one: YAML would silently take the last")
                continue
            first_line[key] = line
            out[key] = self.value(vnode, path + (key,))
            self.lines[path + (key,)] = line
        return out

    def scalar(self, node, path):
        try:
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str) and _SURROGATE.search(value):
                # "\ud800" is a YAML escape, but no character: printing it, or handing it to the kernel, fails
                self.problem(path, node, f"{_short(value)} holds half of a UTF-16 surrogate pair, not a character",
                             "write the character itself, or its \\U escape")
                return None
            return value
        except yaml.constructor.ConstructorError as e:
            self.problem(path, node, e.problem or f"tag {node.tag} is not allowed", "remove the tag")
        except Exception:  # noqa: BLE001 - PyYAML's scalar constructors leak ValueError, KeyError, … on bad text
            kind = node.tag.rpartition(":")[2]
            self.problem(path, node, f"{_short(node.value)} is not a valid {kind}", "quote it to make it text")
        return None


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse(text: str, filename: str = "<string>") -> Source:
    """Parse YAML with a bounded safe loader, keeping line numbers.

    Raises TopologyError for syntax errors, for structural problems (duplicate keys, complex keys,
    aliases to collections, unknown tags) and for a document that isn't a mapping.
    """
    if len(text) > MAX_BYTES:
        raise TopologyError([f"{filename}: larger than {MAX_BYTES // 1024} KiB: not a topology file"])
    # Lines as editors and grep count them ('\n' only): YAML also breaks lines at \r, U+0085, U+2028
    # and U+2029, so its own line numbers can point past the line a user sees.
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_at(mark) -> int:
        return bisect.bisect_left(newlines, mark.index) + 1

    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            walk = _Walk(loader, line_at)
            data = walk.value(root, ()) if root is not None else None
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as e:
        # The reader knows only a character offset; name the line and the character instead.
        line = text.count("\n", 0, e.position) + 1 if isinstance(e.position, int) else None
        where = f"{filename}:{line}" if line else filename
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        raise TopologyError([f"{where}: not valid YAML: character {char} is not allowed ({e.reason})"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{filename}:{line_at(mark)}" if mark else filename
        problem = getattr(e, "problem", None) or str(e)
        raise TopologyError([f"{where}: not valid YAML: {problem}"]) from None
    except RecursionError:  # MAX_DEPTH should stop this first; never let it escape as a traceback
        raise TopologyError([f"{filename}: not valid YAML: nested too deeply"]) from None
    source = Source(filename, data, walk.lines, text)
    if walk.problems:
        d = Diagnostics(source)
        for path, line, message, fix in walk.problems:
            d.error(path, message, fix, line=line)
        d.stop_if_any()
    if not isinstance(data, dict):
        raise TopologyError([f"{filename}: a topology is a YAML mapping with at least 'name' and 'nodes'"])
    return source


def read(filename: str) -> Source:
    """Read and parse a topology file. Raises TopologyError if it can't be read or isn't UTF-8 text."""
    try:
        with open(filename, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise TopologyError([f"{filename}: cannot read the topology file: {e.strerror}"]) from None
    if len(raw) > MAX_BYTES:
        raise TopologyError([f"{filename}: larger than {MAX_BYTES // 1024} KiB: not a topology file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise TopologyError([f"{filename}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
                             " (save the file as UTF-8)"]) from None
    return parse(text, filename)
