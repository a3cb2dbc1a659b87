"""Fuzzing validation: whatever the file says, loading it gives a Topology or a TopologyError whose every
problem names the file (and the YAML path, once the document parsed), never another exception.

Inputs are the shipped topologies and the golden error inputs, mutated in their data (wrong types,
missing keys, huge and negative numbers, unicode, over-long names, '/', '..', spaces, shell
metacharacters) and in their text (duplicate keys, anchors and aliases, billion laughs, tags, deep
nesting, control characters, truncation, empty and binary files). Derandomized, so CI is reproducible.

Examples: NSLAB_FUZZ_EXAMPLES if set; else 10,000 under CI=true (about 25 s on a 2-core machine)
and 1,000 otherwise, so the unit tier stays quick while editing.
"""

import copy
import os
import pathlib
import re

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nslab import model
from nslab.errors import TopologyError
from nslab.model.source import parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = [p.read_text() for p in sorted([*ROOT.glob("topologies/*.yaml"), *ROOT.glob("topologies/broken/*.yaml"),
                                        *ROOT.glob("tests/golden/errors/*.yaml")])]
FILE = "fuzz/lab.yaml"
_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXAMPLES = int(os.environ.get("NSLAB_FUZZ_EXAMPLES") or (10_000 if _CI else 1_000))

FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])

# Problems that come before any YAML path exists: the text didn't parse, or it isn't a mapping.
NO_PATH = ("not valid YAML", "larger than", "a topology is a YAML mapping")
# A key missing from the whole document has no line to point at.
NO_LINE = ("missing required key",)


def _parsed(text):
    """The seed's data, if nslab's own (bounded) parser takes it: yaml.safe_load would expand the
    billion-laughs seed into a million nodes."""
    try:
        return parse(text).data
    except TopologyError:
        return None


PARSED = [(text, _parsed(text)) for text in SEEDS]
WORDS = sorted({str(v) for _, d in PARSED if d for v in yaml.safe_dump(d).replace(":", " ").split()
                if len(v) < 30})

NASTY_TEXT = ["", " ", "a" * 16, "a" * 25, "x" * 300, "a/b", "../..", "..", ".", "/", "a b", "a\tb", "a\nb",
              "$(reboot)", "`id`", "; rm -rf /", "a|b", "a&b", "*", "~", "-", "--help", "é", "ünï", "\u202eabc",
              "日本", "\U0001f600", "a\x00b", "\x1b[31m", "0", "-1", "1e999", "nan", "null", "true", "0x10",
              "10.0.0.1", "10.0.0.1/24", "10.0.0.300/24", "10.0.0.0/8", "0.0.0.0/0", "255.255.255.255/32",
              "default", "all", "lo", "fabric", "tunl0", "eth0", "lan", "wan", "a:eth0", "a:b:c", ":", "rs1:eth0",
              "10.0.0.100:80", "10.0.0.100:0", "10.0.0.100:99999", "10.0.0.100:-1", "10.0.0.100: 80",
              "02:00:00:00:00:01", "01:00:00:00:00:00", "00:00:00:00:00:00", "net.ipv4.ip_forward",
              "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter", "net.core.rmem_max", "kernel.panic",
              "net..ipv4", "http", "echo", "tcp", "udp", "both", "rr", "wrr", "nat", "dr", "tun"]
NUMBERS = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.sampled_from([0, -1, 1, 65535, 65536, 2 ** 31, 2 ** 64]),
                    st.floats(allow_nan=True, allow_infinity=True))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20), st.sampled_from(NASTY_TEXT),
                    st.sampled_from(WORDS))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(SCALARS, SCALARS, max_size=3),
                   st.dictionaries(SCALARS, st.dictionaries(SCALARS, SCALARS, max_size=2), max_size=2))
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter when there: a third of the time


# Strategies are built once, here: building one per draw (sampled_from a fresh list) costs more than
# loading the topology. Choices among things that vary per example are an index taken modulo.
INDEX = st.integers(0, 1 << 16)
FEW = st.integers(0, 3)


def pick(draw, seq):
    return seq[draw(INDEX) % len(seq)]


def _slots(data):
    """Every (container, key) in the tree: where a mutation can land."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield data, key
        yield from _slots(value)


def mutate_data(draw, data):
    slots = list(_slots(data))
    if not slots:
        return
    container, key = pick(draw, slots)
    op = pick(draw, ("replace", "replace", "delete", "add", "rename", "same"))
    if op == "replace":
        container[key] = draw(VALUES)
    elif op == "delete":
        del container[key]
    elif op == "add" and isinstance(container, dict):
        container[draw(SCALARS)] = draw(VALUES)
    elif op == "rename" and isinstance(container, dict):
        container[draw(SCALARS)] = container.pop(key)
    elif op == "same":
        # a value copied from elsewhere in the document: names that collide, references that go wrong
        other, okey = pick(draw, slots)
        value = other[okey]
        container[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def _laughs(depth, width):
    out = "lol0: &lol0 [" + ", ".join(["lol"] * width) + "]\n"
    for i in range(1, depth):
        out += f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]\n"
    return out


SNIPPETS = st.one_of(
    st.sampled_from(["!!set {a, b}", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "!foo x",
                     "!!int abc", "!!float x", "!!bool maybe", "!!timestamp 2001-99-99", "2024-13-45", "!!null x",
                     "!!omap [a: 1]", "!!str", "? [a, b]\n: 1", "? {a: 1}\n: 2", "<<: {a: 1}", "&a {b: 1}", "*a",
                     "*nope", "&a x", "&a [1, 2]", "&a", "\x00", "\x1b", "\ufeff", "\ud800", "\x85", "\u2028",
                     "\t", "%YAML 1.1\n---", "--- a\n--- b", "...", "'unclosed", '"\\x00"', '"\\uD800"',
                     "{a: 1, a: 2}", "- a\nb: c", "@", "`", "|", ">-\n  x", "a: &b *b", "n: &r {m: *r}"]),
    st.builds(lambda n, c: c[0] * n + c[1] * n, st.sampled_from([5, 33, 200, 2000]),
              st.sampled_from(["[]", "{}"])),
    st.builds(lambda n: "".join(f"{'  ' * i}k{i}:\n" for i in range(n)), st.sampled_from([10, 40, 100])),
    st.builds(_laughs, st.integers(2, 9), st.integers(2, 12)),
    st.text(max_size=12),
)
TEXT_OPS = ("insert", "insert", "value", "duplicate", "delete", "truncate", "splice", "anchor")


def mutate_text(draw, text):
    lines = text.split("\n")
    i = draw(INDEX) % (len(lines) + 1)
    line = lines[i] if i < len(lines) else ""
    op = pick(draw, TEXT_OPS)
    if op == "insert":
        lines.insert(i, line[:len(line) - len(line.lstrip(" "))] + draw(SNIPPETS))
    elif op == "value" and ": " in line:  # as this line's value
        lines[i] = line.split(": ", 1)[0] + ": " + draw(SNIPPETS)
    elif op == "duplicate" and i < len(lines):
        lines.insert(i, line)  # the same key twice
    elif op == "delete" and i < len(lines):
        del lines[i]
    elif op == "truncate":
        return text[:draw(INDEX) % (len(text) + 1)]
    elif op == "splice":
        at = draw(INDEX) % (len(text) + 1)
        return text[:at] + draw(SNIPPETS) + text[at + draw(FEW):]
    elif op == "anchor":
        valued = [n for n, line in enumerate(lines) if ": " in line]
        if valued:
            a, b = pick(draw, valued), pick(draw, valued)
            key, _, value = lines[a].partition(": ")
            lines[a] = f"{key}: &x {value}"
            lines[b] = lines[b].split(": ", 1)[0] + ": *x"
    return "\n".join(lines)


EMPTY_OR_BINARY = st.sampled_from(["", "\n", "---\n", "#", "~", "\ufeff"]) | st.binary(max_size=64).map(
    lambda b: b.decode("latin-1"))


@st.composite
def topologies(draw):
    text, data = pick(draw, PARSED)
    if data is not None and draw(st.booleans()):
        data = copy.deepcopy(data)
        for _ in range(1 + draw(FEW)):
            mutate_data(draw, data)
        text = yaml.dump(data, Dumper=DUMPER, sort_keys=False, allow_unicode=draw(st.booleans()),
                         default_flow_style=pick(draw, (False, None)))
    for _ in range(draw(FEW) + (data is None)):
        text = mutate_text(draw, text)
    if draw(INDEX) % 40 == 0:  # now and then: nothing, or no text at all
        text = draw(EMPTY_OR_BINARY)
    return text


def check_problems(problems, text):
    assert problems and all(isinstance(p, str) and p for p in problems), problems
    last_line = text.count("\n") + 1
    for p in problems:
        assert p.startswith(FILE + ":") and "Traceback" not in p, p
        m = re.match(re.escape(FILE) + r"(?::(\d+))?: (.*)", p, re.S)
        assert m, p
        line, rest = m.groups()
        if line:
            assert 1 <= int(line) <= last_line, p
        # Everything else is addressed by line and YAML path: "FILE:LINE: PATH: message", the path
        # being empty for the document itself.
        assert line or rest.startswith(NO_PATH + NO_LINE), p


@FUZZ
@given(topologies())
def test_loads_never_crashes(text):
    try:
        topo = model.loads(text, FILE)
    except TopologyError as e:
        check_problems(e.problems, text)
    else:
        assert isinstance(topo, model.Topology)


@settings(FUZZ, max_examples=max(EXAMPLES // 20, 50))
@given(st.one_of(st.binary(max_size=200), topologies().map(lambda t: t.encode("utf-8", "surrogatepass")),
                 topologies().map(lambda t: t.encode("utf-16", "surrogatepass"))))
def test_load_file_never_crashes(tmp_path_factory, raw):
    path = tmp_path_factory.getbasetemp() / "fuzz-lab.yaml"
    path.write_bytes(raw)
    try:
        model.load(str(path))
    except TopologyError as e:
        assert e.problems and all(p.startswith(str(path)) for p in e.problems), e.problems
