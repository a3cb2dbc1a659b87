"""Each lab file opens with what it teaches: its name, what to try and what to break; each broken twin with
what is wrong, what to observe and the fix."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))
BROKEN = sorted((ROOT / "topologies" / "broken").glob("*.yaml"))


def opening(path):
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, ln in enumerate(lines) if not ln.startswith("#"))])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_lab_opens_with_its_lesson(path):
    text = opening(path)
    assert text.startswith(f"# {path.name}: ")
    for part in ("# What to try", "# What to break"):
        assert part in text, f"{path.name}: its opening comment lacks {part!r}"


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_twin_opens_with_symptom_cause_and_fix(path):
    text = opening(path)
    assert text.startswith(f"# {path.name}: ")
    for part in ("# What to observe", "# The fix"):
        assert part in text, f"{path.name}: its opening comment lacks {part!r}"
