"""`down` ends what lives in a lab, never a visitor: a process started inside with `nslab exec` and left
running is ended, while another process that keeps entering the lab's namespaces and going back (an
`nslab status`, a test run reading counters, as nslab's own code does through netns.entered) survives,
even when it is inside at the moment `down` looks; and a process that enters while `down` deletes the
names is ended too."""

import os
import signal
import subprocess
import sys
import time

from nslab.kernel import netns, procs

# Inside each of the lab's namespaces in turn for 50 ms, outside for 1 ms: nearly always inside when
# `down` looks. It says 'visiting' after its first visit and 'left after N' once the lab is gone.
VISITOR = """
import sys, time
from nslab.kernel import netns
visits = 0
while True:
    try:
        for ns in sys.argv[1:]:
            with netns.entered(ns):
                with open("/proc/thread-self/net/dev") as f:
                    f.read()
                visits += 1
                if visits == 1:
                    print("visiting", flush=True)
                time.sleep(0.05)
            time.sleep(0.001)
    except OSError:  # the lab is gone (its names, or a name already unmounted)
        break
print(f"left after {visits}", flush=True)
sys.stdin.read()  # stays until the test has looked
"""


def _net_ns(pid):
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def test_down_ends_a_process_started_with_exec_but_never_a_visitor(make_lab, root_dir):
    lab = make_lab("routing", f"vis{os.getpid() % 1000}")
    namespaces = sorted(n for n in netns.list_names() if n.startswith(lab.name + "-"))
    node = netns.identities([f"{lab.name}-host2"])
    resident = subprocess.Popen([sys.executable, "-m", "nslab", "exec", lab.name, "host2", "--", "sleep", "3600"])
    visitor = subprocess.Popen([sys.executable, "-c", VISITOR, *namespaces], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root_dir)})
    try:
        deadline = time.monotonic() + 60
        while _net_ns(resident.pid) not in node:
            assert resident.poll() is None and time.monotonic() < deadline, "nslab exec did not start"
            time.sleep(0.05)
        assert visitor.stdout.readline().strip() == "visiting"
        # Seen as a visitor at every look, inside or between two visits (a way home held only during each
        # visit would leave a gap: out, looked at, back in before the signal).
        lab_ids = netns.identities(namespaces)
        looks = [procs.visiting(visitor.pid, lab_ids) for _ in range(300) if time.sleep(0.003) is None]
        assert all(looks), f"{looks.count(False)} of {len(looks)} looks did not see the visitor as one"
        result = subprocess.run([sys.executable, "-m", "nslab", "down", lab.name], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert resident.wait(timeout=30) == -signal.SIGTERM, "the process started with nslab exec survived down"
        assert visitor.poll() is None, f"down ended a visitor (exit status {visitor.returncode})"
        out, _ = visitor.communicate("", timeout=30)
        assert visitor.returncode == 0 and out.startswith("left after "), out
        assert not [n for n in netns.list_names() if n.startswith(lab.name + "-")]
    finally:
        for proc in (resident, visitor):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


# Opens each of the lab's namespaces (as `ip netns exec` opens one before it enters), waits until down has
# deleted one of their names, enters that namespace and stays: between down's first look and its delete.
ENTRANT = """
import os, sys, time
from nslab.kernel import netns
fds = {ns: os.open(netns.path(ns), os.O_RDONLY) for ns in sys.argv[1:]}
print("ready", flush=True)
while all(os.path.lexists(netns.path(ns)) for ns in fds):
    time.sleep(0.0005)
netns.setns(fds[next(ns for ns in fds if not os.path.lexists(netns.path(ns)))])
time.sleep(3600)
"""


def test_down_ends_a_process_that_enters_while_it_deletes_the_names(make_lab, root_dir):
    """Such a process kept the namespace, and all in it, alive with no name to find it by: down looked for
    processes once, before deleting anything, and said exit 0."""
    lab = make_lab("routing", f"ent{os.getpid() % 1000}")
    namespaces = sorted(n for n in netns.list_names() if n.startswith(lab.name + "-"))
    entrant = subprocess.Popen([sys.executable, "-c", ENTRANT, *namespaces], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(root_dir)})
    try:
        assert entrant.stdout.readline().strip() == "ready"
        result = subprocess.run([sys.executable, "-m", "nslab", "down", lab.name], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        try:
            entrant.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"a process that entered {lab.name}'s namespaces during down survived it "
                                 f"(now in {os.readlink(f'/proc/{entrant.pid}/ns/net')})") from None
        assert not [n for n in netns.list_names() if n.startswith(lab.name + "-")]
    finally:
        if entrant.poll() is None:
            entrant.kill()
        entrant.wait()
