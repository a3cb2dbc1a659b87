"""Every fault point of `up` on the host kernel: the test hook NSLAB_TEST_FAULT (kernel/apply.py) makes step k
of the plan fail, for every k of routing.yaml and snat.yaml, four ways: the step raises before or after making
its change, or a real SIGINT arrives before or after it. After each: no namespace, no process, no state, the
host as it was, and the error names the step. Then failures inside `down` itself, and a second `down`."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from nslab import api, state
from nslab.kernel import netns
from nslab.kernel.apply import FAULT_ENV, FAULT_KINDS

LABS = ["routing", "snat"]


def _lab(root_dir, topology, tag):
    topo = api.load_topology(str(root_dir / "topologies" / f"{topology}.yaml"))
    return replace(topo, name=f"crash{os.getpid() % 1000}{tag}")


@pytest.mark.parametrize("how", FAULT_KINDS)
@pytest.mark.parametrize("topology", LABS)
def test_a_fault_at_any_step_of_up_leaves_nothing(root_dir, fault_every_step, topology, how):
    fault_every_step(_lab(root_dir, topology, f"f{FAULT_KINDS.index(how)}{topology[0]}"), how)


def nslab(*argv, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "nslab", *argv], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("how,code", [("fail", 1), ("sigint-after", 130)])
def test_the_command_line_names_the_failed_step_and_exits_with_its_code(root_dir, how, code):
    """Through `nslab up`: a failed step exits 1, a Ctrl-C 130, each naming the step; nothing is left."""
    topo = _lab(root_dir, "routing", f"c{code}")
    plan = api.plan(topo)
    k = 1 + next(i for i, a in enumerate(plan) if type(a).__name__ == "StartApp")  # late: much to undo
    up = nslab("up", "--name", topo.name, str(root_dir / "topologies" / "routing.yaml"),
               env={FAULT_ENV: f"{k}:{how}"})
    try:
        assert up.returncode == code, up.stderr
        assert f"step {k} of {len(plan)}" in up.stderr and plan[k - 1].commands()[0] in up.stderr, up.stderr
        assert "Traceback" not in up.stderr, up.stderr
        assert [n for n in netns.list_names() if n.startswith(topo.name + "-")] == []
        assert not os.path.lexists(state.lab_dir(topo.name))
    finally:
        nslab("down", topo.name)


def _stack_mounts_on(path, count):
    """Bind-mount a namespace file onto itself, count times: each unmount `down` makes takes one, and
    unlinking a mount point fails with EBUSY (a namespace kept busy by mounts nslab did not make)."""
    for _ in range(count):
        subprocess.run(["mount", "--bind", path, path], check=True)
        subprocess.run(["mount", "--make-private", path], check=True)  # one unmount, one mount: no peers


def test_a_namespace_busy_in_down_fails_clearly_and_a_second_down_removes_it(root_dir):
    topo = _lab(root_dir, "routing", "busy")
    api.up(topo)
    busy = netns.path(f"{topo.name}-r1")
    try:
        _stack_mounts_on(busy, 3)  # a down unmounts twice (its undo, then its sweep), the next one twice more
        first = nslab("down", topo.name)
        assert first.returncode == 1, first.stdout + first.stderr
        assert "Traceback" not in first.stderr and f"{topo.name}-r1" in first.stderr, first.stderr
        assert "down" in first.stderr  # what to do next
        second = nslab("down", topo.name)
        assert second.returncode == 0, second.stderr
        assert [n for n in netns.list_names() if n.startswith(topo.name + "-")] == []
        assert not os.path.lexists(state.lab_dir(topo.name))
    finally:
        while os.path.ismount(busy):
            subprocess.run(["umount", busy])
        nslab("down", topo.name)


def test_a_process_that_survives_its_signals_is_ended_by_down_or_a_second_down(root_dir):
    """A process in the lab that answers SIGTERM by starting another one (which a single pass over the
    namespace's pids misses). After `down` (and a second one if the first says something is left), no
    process of the lab runs anywhere, named namespace or not."""
    topo = _lab(root_dir, "routing", "fork")
    api.up(topo)
    ns = f"{topo.name}-host2"
    marker = f"crash-survivor-{os.getpid()}"
    script = f'trap "sh -c \'sleep 1001; : {marker}\' &" TERM; while :; do sleep 0.1; done'
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "sh", "-c", script], start_new_session=True)
    try:
        time.sleep(0.5)
        first = nslab("down", topo.name)
        if first.returncode != 0:
            assert "Traceback" not in first.stderr, first.stderr
            nslab("down", topo.name)
        survivors = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
        assert survivors == [], f"still running after down: {survivors} ({first.stdout} {first.stderr})"
        assert [n for n in netns.list_names() if n.startswith(topo.name + "-")] == []
    finally:
        for pid in subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        proc.kill()
        proc.wait()
        nslab("down", topo.name)
