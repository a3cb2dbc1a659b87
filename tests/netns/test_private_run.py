"""nslab in a mount namespace of its own with a /run of its own, as in a container that mounts a tmpfs over
/run: labs there live and die apart from the host's /run/netns, `down --all` there takes down every lab it
sees and nothing else (so this tier can run it while other labs are up), and mounts nslab did not make
over a lab's names never make `down` say a lab is gone when it is not."""

import os
import subprocess
import sys

from nslab.kernel import netns

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def in_private_run(script: str, timeout=300) -> subprocess.CompletedProcess:
    """Run a sh script as root in a new mount namespace whose /run is an empty tmpfs. Under it lies a
    /run/netns mount of its own, hidden by that tmpfs as a host's is in a container: /proc/self/mountinfo
    still lists it. $NSLAB runs this checkout's nslab."""
    os.makedirs(netns.NETNS_RUN_DIR, exist_ok=True)
    setup = ("mount -t tmpfs nslab-test-netns /run/netns && mount -t tmpfs -o mode=755 nslab-test-run /run && "
             "exec sh -ec \"$0\"")
    env = {**os.environ, "NSLAB": f"{sys.executable} -m nslab", "PYTHONPATH": ROOT}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, script],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_a_namespace_added_by_ip_beside_a_lab_in_a_private_run_neither_hides_nor_keeps_the_lab():
    """`ip netns add` binds /run/netns over itself if it is no mount point; nslab took the hidden /run/netns
    in mountinfo for one, so that copy hid the lab's namespaces: `down` said 0 removed, exit 0, and left
    them all."""
    out = in_private_run(f"""
        $NSLAB up -q --name pr {ROOT}/topologies/routing.yaml
        ip netns add pr-mine
        $NSLAB down pr
        echo left: $(ls /run/netns)
        ip netns delete pr-mine
    """)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "removed: 5 namespaces" in out.stdout, out.stdout
    assert "left: pr-mine\n" in out.stdout, out.stdout


def test_down_all_takes_down_every_lab_and_nothing_else():
    """Two labs with the same addresses, one of them half-built (its `up` killed), a namespace of the user's
    named like a lab's (forged mark and all) with a process in it, and a process of the user's inside a
    lab: `down --all` leaves only the user's namespace and its process."""
    out = in_private_run(f"""
        $NSLAB up -q --name pa {ROOT}/topologies/snat.yaml
        $NSLAB up -q --name pb {ROOT}/topologies/snat.yaml & up=$!
        while [ "$(ls /run/netns | grep -c '^pb-')" -lt 2 ]; do sleep 0.01; done
        kill -9 $up; wait $up || true
        ip netns add pa-mine
        ip -n pa-mine link set lo alias nslab:pa:mine
        ip netns exec pa-mine sleep 600 </dev/null >/dev/null 2>&1 & mine=$!
        ip netns exec pa-router sleep 600 </dev/null >/dev/null 2>&1 & theirs=$!
        sleep 0.2
        $NSLAB down --all
        echo left: $(ls /run/netns) $(ls /run/nslab 2>/dev/null)
        kill -0 $mine && echo mine runs
        kill -0 $theirs 2>/dev/null || echo theirs ended
        kill $mine; ip netns delete pa-mine
    """)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lab 'pa' removed" in out.stdout and "lab 'pb' removed" in out.stdout, out.stdout
    assert "left: pa-mine\n" in out.stdout, out.stdout
    assert "mine runs\n" in out.stdout and "theirs ended\n" in out.stdout, out.stdout


def test_down_never_says_a_lab_is_gone_while_a_namespace_of_it_is_still_there():
    """A file mounted over a lab namespace's name hides the namespace from `down`'s first look: once its
    delete took that mount off, the namespace was there again, and `down` said exit 0 all the same."""
    out = in_private_run(f"""
        $NSLAB up -q --name ph {ROOT}/topologies/routing.yaml
        touch /run/over
        mount --bind /run/over /run/netns/ph-host1
        $NSLAB down ph || echo first down: $?
        echo left: $(ls /run/netns)
        $NSLAB down ph
        echo left: $(ls /run/netns) $(ls /run/nslab 2>/dev/null)
    """)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "first down: 1\nleft: ph-host1\n" in out.stdout, out.stdout + out.stderr
    assert "could not remove namespace(s) ph-host1" in out.stderr, out.stderr
    assert out.stdout.endswith("left:\n"), out.stdout
