"""Crash-safe down: `kill -9` of `up` and of `down` at many moments spread over a 40-node lab, each followed by
`down`, leaves nothing (no namespace, no state, no process that was inside the lab); `status` of a lab whose
`up` was killed says it is half-built and shows what it holds.

NSLAB_KILL_MOMENTS (default 20) and NSLAB_KILL_NODES (default 40) size it; CI runs the defaults."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import running

from nslab import state
from nslab.kernel import netns

MOMENTS = int(os.environ.get("NSLAB_KILL_MOMENTS") or 20)
NODES = int(os.environ.get("NSLAB_KILL_NODES") or 40)


def chain(name: str, n: int) -> str:
    """n routers in a row, each cabled to the next, the last one serving http."""
    lines = [f"name: {name}", "nodes:"]
    for i in range(n):
        lines += [f"  n{i}:", "    forward: true", "    interfaces:"]
        if i > 0:
            lines.append(f"      eth0: {{peer: n{i - 1}:eth1, address: 10.{i}.0.2/24}}")
        if i < n - 1:
            lines.append(f"      eth1: {{peer: n{i + 1}:eth0, address: 10.{i + 1}.0.1/24}}")
    lines.append("    app: http")
    return "\n".join(lines) + "\n"


def nslab(*argv, timeout=600):
    return subprocess.run([sys.executable, "-m", "nslab", *argv], capture_output=True, text=True, timeout=timeout)


def _journal_lines(lab) -> int:
    try:
        with open(os.path.join(state.lab_dir(lab), "journal"), "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def _namespaces(lab) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(lab + "-")]



def _kill_when(argv, ready, deadline_s=300) -> subprocess.Popen:
    """Start `nslab ARGV`, SIGKILL it as soon as ready() is true (or it ends first); return it, reaped."""
    proc = subprocess.Popen([sys.executable, "-m", "nslab", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + deadline_s
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc


def _stale_names(lab) -> list[str]:
    """The lab's names in /run/netns that are plain files, no namespace mounted on them."""
    return [n for n in _namespaces(lab) if not os.path.ismount(netns.path(n))]


def _apps_inside(lab) -> list[int]:
    """The lab's own processes (its apps). Not every pid inside: nslab readers of other tests (status, labs())
    step into every namespace for a moment, and down ends them too if it meets them there."""
    out = []
    for pid in (p for found in netns.pids_inside(_namespaces(lab)).values() for p in found):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"nslab.apps." in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


def _down_leaves_nothing(lab, when):
    inside = _apps_inside(lab)
    files = os.listdir(state.lab_dir(lab)) if os.path.isdir(state.lab_dir(lab)) else []
    held = _namespaces(lab) + [f for f in files if f in (state.STATE, state.JOURNAL)]
    down = nslab("down", lab)
    # nothing left (the killed down had finished, or was removing its state directory, which may leave app
    # logs without state or journal): "no lab named ..." is the right answer, and that down removes the
    # directory
    assert down.returncode == (0 if held else 2), f"{when}, holding {held}: {down.stdout} {down.stderr}"
    assert _namespaces(lab) == [], f"{when}: {down.stdout} {down.stderr}"
    assert not os.path.lexists(state.lab_dir(lab)), f"{when}: state left"
    assert not [p for p in inside if running(p)], f"{when}: a process of the lab outlived down"


@pytest.fixture
def big_lab(tmp_path):
    name = f"crash{os.getpid() % 1000}k"
    path = tmp_path / "chain.yaml"
    path.write_text(chain(name, NODES))
    yield name, str(path)
    if _namespaces(name) or os.path.lexists(state.lab_dir(name)):
        nslab("down", name)


def test_kill_9_of_up_at_many_moments_then_down_leaves_nothing(big_lab):
    name, path = big_lab
    whole = nslab("up", "-q", path)
    assert whole.returncode == 0, whole.stderr
    total = _journal_lines(name)  # compacted: one line per step in place
    _down_leaves_nothing(name, "after a whole up")
    landed, statuses = 0, 0
    for i in range(MOMENTS):
        # the first kill lands while python starts or the first namespace is made; then spread over the build
        target = total * i // MOMENTS
        up = _kill_when(["up", "-q", path], lambda: _journal_lines(name) > target)
        made = [n for n in _namespaces(name) if not n.endswith("-fabric")]
        if up.returncode == -signal.SIGKILL and 0 < len(_namespaces(name)) < NODES + 1:
            landed += 1
            if i % 4 == 1:  # half-built: status says so, and what it holds
                st = nslab("status", name)
                assert st.returncode == 0 and "Traceback" not in st.stderr, st.stderr
                assert "HALF-BUILT" in st.stdout, st.stdout
                held = int(re.search(r"(\d+) of (\d+) nodes exist", st.stdout).group(1))
                assert held in (len(made), len(made) - 1), st.stdout  # one may be made but not yet marked
                assert f"{name}  (half-built)" in nslab("status").stdout
                statuses += 1
        _down_leaves_nothing(name, f"up killed at journal line {target} of {total}")
    assert landed >= MOMENTS * 2 // 3, f"only {landed} of {MOMENTS} kills landed while up was building"
    assert statuses >= 1


def test_kill_9_of_down_at_many_moments_then_down_leaves_nothing(big_lab):
    name, path = big_lab
    landed = 0
    for i in range(MOMENTS):
        up = nslab("up", "-q", path)
        assert up.returncode == 0, up.stderr
        assert len(_namespaces(name)) == NODES + 1
        # spread over the namespaces down removes, the first kill as the first one goes
        left = NODES + 1 - (NODES + 1) * i // MOMENTS
        down = _kill_when(["down", name], lambda: len(_namespaces(name)) < left)
        if down.returncode == -signal.SIGKILL and _namespaces(name):
            landed += 1
        _down_leaves_nothing(name, f"down killed with {left} namespaces left")
    assert landed >= MOMENTS * 2 // 3, f"only {landed} of {MOMENTS} kills landed while down was removing"


def test_a_stale_name_file_is_removed_by_down(root_dir):
    """What a kill -9 of `down` between unmounting a namespace and unlinking its name leaves: the next
    `down` removes that file too (the journal names it)."""
    lab = f"crash{os.getpid() % 1000}s"
    up = nslab("up", "-q", "--name", lab, str(root_dir / "topologies" / "routing.yaml"))
    assert up.returncode == 0, up.stderr
    try:
        subprocess.run(["umount", netns.path(f"{lab}-r1")], check=True)
        down = nslab("down", lab)
        assert down.returncode == 0 and "Traceback" not in down.stderr, down.stderr
        assert _namespaces(lab) == []
    finally:
        nslab("down", lab)
        for n in _stale_names(lab):
            os.unlink(netns.path(n))
