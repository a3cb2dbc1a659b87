"""Boots the real kernel VM (slow: ~10-40 s per boot under TCG) and checks IPVS and exit statuses."""

import io
import os
import shlex
import sys

import pytest

from nslab import vm

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(vm.find_kernel() is None, reason="no IPVS-capable kernel in /boot"),
    pytest.mark.skipif(vm.find_vng() is None, reason="virtme-ng not installed"),
]

# Generous: TCG boots take ~20 s on an idle 2-core machine, far more under load.
TIMEOUT = 600


def test_ipvs_autoloads_in_the_vm_and_output_streams():
    # Nothing is preloaded: the first IPVS netlink request, from a namespace as in a lab, loads ip_vs;
    # the modules blacklisted for a faster boot stay out (kvm would load on every boot otherwise).
    first_request = shlex.join([sys.executable, "-c", "from pyroute2 import IPVS; IPVS().close()"])
    script = (f"test ! -e /proc/net/ip_vs && ip netns add vmtest && ip netns exec vmtest {first_request}"
              " && test -e /proc/net/ip_vs && test ! -e /sys/module/kvm && test -w /run"
              " && echo \"ok 'quoted' $0\"")
    out = io.BytesIO()
    status = vm.run(["sh", "-c", script, "arg with space"], stdout=out, timeout=TIMEOUT)
    assert status == 0, out.getvalue()
    assert b"ok 'quoted' arg with space" in out.getvalue()


def test_exit_status_passes_through():
    assert vm.run(["sh", "-c", "exit 7"], stdout=io.BytesIO(), timeout=TIMEOUT) == 7
