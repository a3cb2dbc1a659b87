"""Labs for the host-kernel tier: each test's labs get unique names and are always taken down."""

import pytest
from conftest import watch_the_host


@pytest.fixture
def make_lab(nslab_lab, root_dir):
    """make_lab('routing') -> that shipped topology up under a unique name, through nslab's own pytest
    plugin (nslab_lab), so the plugin is exercised on every run; down after the test, whatever happens."""
    return lambda topology, name=None: nslab_lab(root_dir / "topologies" / f"{topology}.yaml", name=name)


@pytest.fixture(scope="module", autouse=True)
def host_untouched_by_every_lab():
    yield from watch_the_host()
