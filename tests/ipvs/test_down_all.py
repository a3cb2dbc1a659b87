"""`nslab down --all` removes every nslab lab and nothing else. It takes down every lab on the machine, so it
runs only in the throwaway kernel VM (`nslab vm`), never on a host where other people's labs run."""

import os
import subprocess
import sys

import pytest

from nslab import api, state
from nslab.kernel import netns


def in_nslab_vm() -> bool:
    with open("/proc/cmdline") as f:
        return "virtme" in f.read()


pytestmark = pytest.mark.skipif(not in_nslab_vm(), reason="down --all takes down every lab on the machine: "
                                "it is tested only inside the throwaway VM (nslab vm)")


def test_down_all_removes_every_lab_and_nothing_else(root_dir):
    routing = str(root_dir / "topologies" / "routing.yaml")
    for name in ("alla", "allb", "allc"):
        api.Lab(routing, name=name).up()
    os.unlink(os.path.join(state.lab_dir("allc"), "state.json"))  # a lab that lost its state goes too
    mine = ["alla-mine", "other"]  # a user's own namespaces, one named like a lab's
    for ns in mine:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", "other", "sleep", "3600"])
    try:
        assert sorted(api.labs()) == ["alla", "allb", "allc"]
        result = subprocess.run([sys.executable, "-m", "nslab", "down", "--all"], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        assert [line.split("'")[1] for line in result.stdout.splitlines()] == ["alla", "allb", "allc"]
        left = [n for n in netns.list_names() if n.startswith(("alla-", "allb-", "allc-")) or n == "other"]
        assert api.labs() == [] and sorted(left) == ["alla-mine", "other"]
        assert sleeper.poll() is None
        again = subprocess.run([sys.executable, "-m", "nslab", "down", "--all"], capture_output=True, text=True)
        assert again.returncode == 0 and "no labs are up" in again.stdout
        assert subprocess.run([sys.executable, "-m", "nslab", "down"], capture_output=True).returncode == 2
    finally:
        sleeper.kill()
        sleeper.wait()
        for ns in mine:
            subprocess.run(["ip", "netns", "del", ns])
        for name in ("alla", "allb", "allc"):
            if name in api.labs():
                api.down(name)
