"""Shared fixtures: the repo root, and root-only skipping for the kernel tiers."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def root_dir():
    return ROOT


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "tests/netns" in str(item.fspath) or "tests/ipvs" in str(item.fspath):
            item.add_marker(skip)
