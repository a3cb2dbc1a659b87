"""The IPVS tier: runs where the kernel has IPVS (inside `nslab vm` on hosts without it)."""

import json
import os
import time

import pytest
from conftest import watch_the_host

from nslab import api, model, pyhelper
from nslab.kernel import netns

LAST = "test_host_untouched.py::test_every_vm_lab_was_watched"
_whole_tier = {"deselected": False}


def pytest_collection_modifyitems(config, items):
    """Every test here needs IPVS: nslab's pytest plugin skips them, naming `nslab vm`, where it is missing.
    The test of what the tier watched runs last."""
    for item in items:
        if "tests/ipvs" in str(item.fspath):
            item.add_marker(pytest.mark.nslab_needs("ipvs"))
    items.sort(key=lambda item: item.nodeid.endswith(LAST))


def pytest_deselected(items):
    _whole_tier["deselected"] = True


def whole_tier_ran(session) -> bool:
    """Whether this session collected every test file of the tier and deselected nothing."""
    here = os.path.dirname(__file__)
    files = {f for f in os.listdir(here) if f.startswith("test_") and f.endswith(".py")}
    return not _whole_tier["deselected"] and files <= {os.path.basename(str(i.fspath)) for i in session.items}


@pytest.fixture(scope="module", autouse=True)
def host_untouched_by_every_lab():
    yield from watch_the_host()


def topology(root_dir, name, edit=None, lab=None):
    """A shipped topology, optionally with its text edited, under another lab name."""
    path = root_dir / "topologies" / f"{name}.yaml"
    text = path.read_text()
    if edit:
        text = edit(text)
    if lab:
        text = text.replace(f"name: {name}\n", f"name: {lab}\n", 1)
    return model.loads(text, str(path))


def shipped_lab(root_dir, name, lab):
    """A module fixture's body: the shipped topology `name` up as lab `lab` for the module's tests, then down."""
    up = api.Lab(topology(root_dir, name, lab=lab))
    try:
        up.up()
        yield up
    finally:
        up.down_quietly()


def wait_until(view, want: dict, within: float) -> float:
    """Seconds until view() holds every key: value of want; fails after `within` seconds, showing view()."""
    start = time.monotonic()
    while True:
        now = view()
        if all(now[k] == v for k, v in want.items()):
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"after {within} s: {now}, waiting for {want}"
        time.sleep(0.1)


def http(lab, node, target, count=60, concurrency=10):
    out = lab.run(node, pyhelper.argv("nslab.verify.traffic", "http", "--target", target, "--count", str(count),
                                      "--concurrency", str(concurrency), "--timeout", "10"),
                  timeout=300, env=pyhelper.env())
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def leftovers(lab_name):
    return [n for n in netns.list_names() if n.startswith(lab_name + "-")]
