"""Commands that send traffic through a lab (verify, trace, why, load) on a lab that is not whole: half-built
by an `up` killed, a namespace or an interface deleted by hand. Each says what is wrong and how to fix it,
with its exit code, never a traceback; `up` of the file then makes it whole again where it can."""

import contextlib
import os
import signal
import subprocess
import sys
import time

from conftest import running

from nslab.kernel import netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUTING = os.path.join(ROOT, "topologies", "routing.yaml")


def nslab(*argv):
    return subprocess.run([sys.executable, "-m", "nslab", *argv], capture_output=True, text=True, timeout=300)


def _names(lab):
    return [n for n in netns.list_names() if n.startswith(lab + "-")]


def _traffic_commands(lab):
    return [("verify", lab), ("trace", lab, "host1", "192.168.2.10:80"), ("why", lab, "host1", "192.168.2.10:80"),
            ("load", lab, "--from", "host1", "--target", "192.168.2.10:80", "-n", "5")]


def test_traffic_into_a_half_built_lab_says_so():
    lab = f"nw{os.getpid() % 1000}h"
    up = subprocess.Popen([sys.executable, "-m", "nslab", "up", "-q", "--name", lab, ROUTING])
    try:
        deadline = time.monotonic() + 120
        while len(_names(lab)) < 3 and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        up.send_signal(signal.SIGKILL)
        up.wait()
        assert up.returncode == -signal.SIGKILL, "up finished before it was killed"
        for argv in _traffic_commands(lab):
            out = nslab(*argv)
            assert out.returncode == 2 and "Traceback" not in out.stderr, (argv, out.stderr)
            assert f"lab '{lab}' is half-built" in out.stderr, (argv, out.stderr)
    finally:
        nslab("down", lab)
    assert not _names(lab)


def test_traffic_into_a_lab_with_a_namespace_or_an_interface_deleted_by_hand_says_so():
    lab = f"nw{os.getpid() % 1000}d"
    assert nslab("up", "-q", "--name", lab, ROUTING).returncode == 0
    try:
        subprocess.run(["ip", "netns", "delete", f"{lab}-host1"], check=True)  # no process inside: it goes
        for argv in _traffic_commands(lab):
            out = nslab(*argv)
            assert out.returncode == 2 and "Traceback" not in out.stderr, (argv, out.stderr)
            assert f"lab '{lab}' has lost namespace(s) {lab}-host1" in out.stderr, (argv, out.stderr)
        assert nslab("up", "-q", "--name", lab, ROUTING).returncode == 0
        subprocess.run(["ip", "-n", f"{lab}-r1", "link", "delete", "eth1"], check=True)
        out = nslab("trace", lab, "host1", "192.168.2.10:80")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "cannot sniff" in out.stderr and "nslab up FILE" in out.stderr, out.stderr
        assert nslab("up", "-q", "--name", lab, ROUTING).returncode == 0
        assert nslab("verify", lab).returncode == 0
    finally:
        nslab("down", lab)
    assert not _names(lab)


def _app_pid(lab, node):
    import json
    st = json.loads(nslab("status", "--json", lab).stdout)
    return next(app["pid"] for n in st["nodes"] if n["name"] == node for app in n["apps"])


def test_up_puts_back_a_namespace_deleted_by_hand_while_its_app_runs():
    """The app keeps the deleted namespace alive, and with it the far end of the node's cable: `up` found the
    fabric's end there and failed configuring an end in the new namespace (EINVAL), and rolled back."""
    lab = f"nw{os.getpid() % 1000}a"
    assert nslab("up", "-q", "--name", lab, ROUTING).returncode == 0
    orphan = _app_pid(lab, "host2")
    try:
        subprocess.run(["ip", "netns", "delete", f"{lab}-host2"], check=True)
        up = nslab("up", "-q", "--name", lab, ROUTING)
        assert up.returncode == 0, up.stderr
        assert _app_pid(lab, "host2") != orphan
        assert nslab("verify", lab).returncode == 0
    finally:
        nslab("down", lab)
        with contextlib.suppress(OSError), open(f"/proc/{orphan}/cmdline", "rb") as f:
            if b"nslab.apps.http" in f.read():  # down ends it (see below): only if that fails
                os.kill(orphan, signal.SIGKILL)
    assert not _names(lab)



def test_down_ends_a_lab_process_whose_namespace_was_deleted_by_hand_and_no_other_labs():
    """`ip netns delete` of a node whose app runs leaves the app, and the namespace it keeps alive, with no
    name: down found neither, and the app ran on for good. Another lab's app in the same plight is left."""
    lab, twin = f"nw{os.getpid() % 1000}o", f"nw{os.getpid() % 1000}t"
    apps = {}
    try:
        for name in (lab, twin):
            assert nslab("up", "-q", "--name", name, ROUTING).returncode == 0
            apps[name] = _app_pid(name, "host2")
            subprocess.run(["ip", "netns", "delete", f"{name}-host2"], check=True)
        down = nslab("down", lab)
        assert down.returncode == 0, down.stderr
        deadline = time.monotonic() + 10
        while running(apps[lab]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(apps[lab]), "the app of a node whose namespace was deleted by hand survived down"
        assert running(apps[twin]), "down ended another lab's app"
        assert nslab("down", twin).returncode == 0
        assert not running(apps[twin])
    finally:
        for name, pid in apps.items():
            nslab("down", name)
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"nslab.apps.http" in f.read():
                    os.kill(pid, signal.SIGKILL)
    assert not _names(lab) and not _names(twin)
