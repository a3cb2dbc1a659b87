"""Validation: every bad input is reported with file, line, YAML path and a fix; all at once, nothing else.

Each tests/golden/errors/NAME.yaml is a bad topology and NAME.txt every line loading it reports, so a
missing error and a spurious extra one both fail. Regenerate after an intended change with
NSLAB_UPDATE_GOLDEN=1, then read the diff.
"""

import os
import pathlib

import pytest

from nslab import model
from nslab.errors import TopologyError

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "errors"
CASES = sorted(GOLDEN.glob("*.yaml"))

GOOD = """\
name: t
switches: [lan]
nodes:
  a:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.1/24}
  b:
    interfaces:
      eth0: {switch: lan, address: 10.0.0.2/24}
    gateway: 10.0.0.1
"""


def errors(text):
    with pytest.raises(TopologyError) as e:
        model.loads(text, "x.yaml")
    return e.value.problems


def file_errors(path):
    with pytest.raises(TopologyError) as e:
        model.load(str(path))
    return e.value.problems


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_errors_match_golden(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # a relative path keeps the file names in the messages stable
    assert path.read_text().startswith("# "), "open each golden input with a comment saying what it breaks"
    text = "".join(p + "\n" for p in file_errors(path.relative_to(ROOT)))
    golden = path.with_suffix(".txt")
    if os.environ.get("NSLAB_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no expected errors for {path.name}: run with NSLAB_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_every_golden_txt_has_its_input():
    assert {p.stem for p in GOLDEN.glob("*.txt")} == {p.stem for p in CASES}


def test_good_topology_loads():
    topo = model.loads(GOOD, "x.yaml")
    assert [n.name for n in topo.nodes] == ["a", "b"]
    assert str(topo.node("b").gateway) == "10.0.0.1"


def test_expect_loads():
    topo = model.loads(GOOD + "expect:\n  - {from: a, to: b, reaches: false}\n", "x.yaml")
    (e,) = topo.expect
    assert (e.sender, e.to, e.reaches, e.path) == ("a", "b", False, ())


def test_aliases_to_plain_values_are_fine():
    topo = model.loads(GOOD.replace("gateway: 10.0.0.1", "gateway: *gw").replace("10.0.0.1/24}", "10.0.0.1/24}\n"
                       "    routes: [{to: 10.9.0.0/24, via: &gw 10.0.0.2}]"), "x.yaml")
    assert str(topo.node("b").gateway) == "10.0.0.2"


def test_per_namespace_sysctls_load():
    text = GOOD + ("    sysctls: {net.ipv4.conf.eth0.rp_filter: 2, net.ipv4.conf.all.arp_ignore: 1, "
                   "net.ipv4.neigh.eth0.gc_stale_time: 30, net.ipv4.ip_local_port_range: 1024 65000}\n")
    assert dict(model.loads(text, "x.yaml").node("b").sysctls)["net.ipv4.conf.eth0.rp_filter"] == "2"


# Inputs that aren't YAML text can't be golden files; each still gets one line naming the file.

def test_file_not_utf8(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: t\n# caf\xe9\nnodes: {}\n".encode("latin-1"))
    assert file_errors(bad) == [f"{bad}:2: not UTF-8 text (byte 0xe9 at offset 13) (save the file as UTF-8)"]


def test_file_utf16(tmp_path):
    bad = tmp_path / "utf16.yaml"
    bad.write_bytes("name: t\n".encode("utf-16"))
    (p,) = file_errors(bad)
    assert p.startswith(f"{bad}:1: not UTF-8 text")


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\ufffe"])
def test_control_characters(tmp_path, char):
    bad = tmp_path / "ctl.yaml"
    bad.write_text(f"name: t\nnodes: {{}}\ndescription: a{char}b\n")
    (p,) = file_errors(bad)
    assert p.startswith(f"{bad}:3: not valid YAML: character U+{ord(char):04X} is not allowed")


def test_binary_file(tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(bytes(range(256)))
    (p,) = file_errors(bad)
    assert p.startswith(f"{bad}:")


def test_huge_file(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n" + "#" * (2 << 20) + "\n")
    assert file_errors(big) == [f"{big}: larger than 1024 KiB: not a topology file"]


def test_directory_and_missing_file(tmp_path):
    assert file_errors(tmp_path) == [f"{tmp_path}: cannot read the topology file: Is a directory"]
    assert file_errors(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}: cannot read the topology file: No such file or directory"]


def test_empty_and_non_mapping_documents():
    for text in ("", "---\n", "[]\n", "42\n", "just text\n"):
        assert errors(text) == ["x.yaml: a topology is a YAML mapping with at least 'name' and 'nodes'"]


def test_an_exec_word_past_the_kernels_limit_for_one_argument_is_refused():
    """A word of 128 KiB or more (MAX_ARG_STRLEN, its NUL included) passed validate, and up failed with
    'Argument list too long', printing the whole word; 131071 bytes is the longest exec() takes."""
    def text(word):
        return GOOD + f"    exec: [[echo, '{word}']]\n"
    model.loads(text("z" * 131071), "x.yaml")
    model.loads(text("é" * 65535), "x.yaml")  # bytes count, not characters
    for word in ("x" * 131072, "é" * 65536):
        (problem,) = errors(text(word))
        assert "x.yaml:11: nodes.b.exec[0]:" in problem and "longer than the kernel takes for one argument" in problem
        assert len(problem) < 300
