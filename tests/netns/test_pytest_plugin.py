"""nslab's pytest plugin as a user meets it: a test file outside the repo, plain `python3 -m pytest`, the
`nslab_lab` fixture and `lab.capture()` with scapy packets; without root, and without IPVS, it skips."""

import subprocess
import sys

USER_LAB = """\
name: mine
switches: [left, right]
nodes:
  a:
    interfaces: {eth0: {switch: left, address: 10.1.0.2/24}}
    gateway: 10.1.0.1
  r:
    forward: true
    interfaces:
      eth0: {switch: left, address: 10.1.0.1/24}
      eth1: {switch: right, address: 10.2.0.1/24}
  b:
    interfaces: {eth0: {switch: right, address: 10.2.0.2/24}}
    gateway: 10.2.0.1
"""

USER_TEST = """\
import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether


def test_ping_keeps_the_ip_pair_and_changes_macs(nslab_lab, tmp_path):
    lab = nslab_lab("lab.yaml")
    with lab.capture() as cap:
        assert lab.run("a", ["ping", "-c1", "-W2", "10.2.0.2"]).returncode == 0
    left = [p for p in cap.packets("left") if ICMP in p and p[ICMP].type == 8]
    right = [p for p in cap.packets("right") if ICMP in p and p[ICMP].type == 8]
    assert (left[0][IP].src, left[0][IP].dst) == (right[0][IP].src, right[0][IP].dst) == ("10.1.0.2", "10.2.0.2")
    assert left[0][Ether].src != right[0][Ether].src and right[0][IP].ttl == left[0][IP].ttl - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [] and len(cap.pcap(str(tmp_path))) == 4


def test_two_copies_side_by_side(nslab_lab):
    one, two = nslab_lab("lab.yaml"), nslab_lab("lab.yaml")
    assert one.name != two.name
    assert two.run("a", ["ping", "-c1", "-W2", "10.2.0.2"]).returncode == 0


@pytest.mark.nslab_needs("ipvs")
def test_needs_ipvs():
    pass
"""


def run_user_tests(tmp_path, *prefix):
    (tmp_path / "lab.yaml").write_text(USER_LAB)
    (tmp_path / "test_user.py").write_text(USER_TEST)
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_users_own_test_file_runs_with_plain_pytest(tmp_path):
    from nslab.kernel import caps, netns
    out = run_user_tests(tmp_path)
    text = out.stdout + out.stderr
    if caps.has_ipvs():
        assert "3 passed" in text, text
    else:
        assert "2 passed, 1 skipped" in text, text
        assert "nslab vm -- python3 -m pytest test_user.py" in text, text
    assert not [n for n in netns.list_names() if n.startswith("mine")], "the fixture took its labs down"


def test_without_root_it_skips_with_the_reason(tmp_path):
    tmp_path.chmod(0o777)
    # uid nobody, allowed to read root's Python install (it lives under /root here) but nothing else
    out = run_user_tests(tmp_path, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search")
    text = out.stdout + out.stderr
    assert "nslab labs need root" in text and "failed" not in text, text


def test_sigterm_still_takes_the_labs_down(tmp_path):
    """`timeout` and CI runners end a hung run with SIGTERM, which pytest alone dies of without teardown."""
    import os
    import signal
    import time
    from nslab.kernel import netns
    (tmp_path / "lab.yaml").write_text(USER_LAB.replace("name: mine", "name: hung"))
    (tmp_path / "test_hung.py").write_text(
        "import time\n\ndef test_hangs(nslab_lab):\n    nslab_lab('lab.yaml', name='termd')\n    time.sleep(600)\n")
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not [n for n in netns.list_names() if n.startswith("termd-")]:
            assert run.poll() is None and time.monotonic() < deadline, "the lab never came up"
            time.sleep(0.2)
        time.sleep(1)  # up has returned and the test sleeps
        os.kill(run.pid, signal.SIGTERM)
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        left = [n for n in netns.list_names() if n.startswith("termd-")]
        state_left = os.path.exists("/run/nslab/termd")
        if left or state_left:
            subprocess.run([sys.executable, "-m", "nslab", "down", "termd"], capture_output=True, timeout=120)
    assert "KeyboardInterrupt" in out, out
    assert not left and not state_left, out
