"""Boots the real kernel VM (slow: ~10-40 s per boot under TCG) and checks IPVS and exit statuses."""

import io
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import running

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


def _descendants(pid: int) -> dict:
    """{pid: command name} of every process below pid."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(rest[1]), []).append((int(entry), name))
    found, todo = {}, [pid]
    while todo:
        for child, name in children.get(todo.pop(), []):
            found[child] = name
            todo.append(child)
    return found



def test_sigterm_of_nslab_vm_leaves_no_qemu_behind():
    # `timeout` and CI runners send SIGTERM; QEMU runs in a session of its own, so nslab vm must end it
    proc = subprocess.Popen([sys.executable, "-m", "nslab", "vm", "--", "sleep", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        below = {}
        while not any(n.startswith("qemu-system") for n in below.values()):
            assert proc.poll() is None and time.monotonic() < deadline, "no QEMU started"
            time.sleep(0.2)
            below = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        until = time.monotonic() + 10  # killed ones may take a moment to be reaped by init
        while (left := {p: n for p, n in below.items() if running(p)}) and time.monotonic() < until:
            time.sleep(0.2)
        assert not left, f"left running after SIGTERM: {left}"
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
