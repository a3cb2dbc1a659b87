"""Shared fixtures: the repo root, and root-only skipping for the kernel tiers."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def root_dir():
    return ROOT


def pytest_configure(config):
    # nslab's own kernel tiers also make labs without the fixture (replays, CLI runs): a SIGTERM from a
    # timeout must still let their teardown run.
    from nslab.pytest_plugin import end_labs_on_sigterm
    end_labs_on_sigterm()


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "tests/netns" in str(item.fspath) or "tests/ipvs" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def run_bench():
    """run_bench("x.py", *args) -> the stdout lines of bench/x.py run from this checkout; fails on an error exit."""
    import subprocess
    import sys

    def run(script, *args, timeout=900):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                             timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip().splitlines()
    return run
