"""`up` converges both ways on the host kernel: an edited file's removals go (only what the journal says nslab
made, a sysctl back to the value it had before), its additions come, nothing else moves; `plan` on a running
lab shows just that difference; a kill -9 of `up` part-way leaves nothing `down` can't remove."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import running

from nslab import api, model, state
from nslab.kernel import netns

ROUTING = "routing.yaml"


def nslab(*argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "nslab", *argv], capture_output=True, text=True, timeout=timeout)


def edited_routing(text: str) -> str:
    """routing.yaml without host1 (a node), r1's address on lan1 (an address) and r2's route back to lan1
    (a route), and with a new node host3 on lan2."""
    cuts = ["  host1:\n    interfaces:\n      eth0: {switch: lan1, address: 192.168.1.10/24}\n"
            "    gateway: 192.168.1.1\n",
            "    routes:\n      - {to: 192.168.1.0/24, via: 10.0.12.1}\n"]
    for cut in cuts:
        assert text.count(cut) == 1, cut
        text = text.replace(cut, "")
    address = "      eth0: {switch: lan1, address: 192.168.1.1/24}\n"
    assert text.count(address) == 1
    text = text.replace(address, "      eth0: {switch: lan1}\n")
    text = text[:text.index("expect:")]  # it names host1
    return text + ("  host3:\n    interfaces:\n      eth0: {switch: lan2, address: 192.168.2.20/24}\n"
                   "    gateway: 192.168.2.1\n")


def _ip_json(ns, *what):
    out = subprocess.run(["ip", "-n", ns, "-j", *what], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def kernel_view(lab: str) -> dict:
    """Every namespace of the lab with its links, addresses and main-table routes, as `ip -j` shows them."""
    out = {}
    for ns in (n for n in netns.list_names() if n.startswith(lab + "-")):
        node = ns[len(lab) + 1:]
        out[node] = {
            "links": {link["ifname"] for link in _ip_json(ns, "link", "show")},
            "addrs": {(a["ifname"], f"{i['local']}/{i['prefixlen']}")
                      for a in _ip_json(ns, "addr", "show") for i in a.get("addr_info", [])},
            "routes": {(r["dst"], r.get("gateway"), r.get("dev")) for r in _ip_json(ns, "route", "show")}}
    return out


def _unique(prefix):
    return f"{prefix}{os.getpid() % 1000}"


def test_up_of_an_edited_file_removes_and_adds_exactly_the_difference(root_dir, tmp_path):
    name = _unique("cv")
    text = (root_dir / "topologies" / ROUTING).read_text().replace("name: routing\n", f"name: {name}\n", 1)
    edited = tmp_path / "edited.yaml"
    edited.write_text(edited_routing(text))
    lab = api.Lab(model.loads(text, str(root_dir / "topologies" / ROUTING)))
    try:
        lab.up()
        before = kernel_view(name)
        assert set(before) == {"fabric", "host1", "r1", "r2", "host2"}

        # plan on the running lab: only the difference
        plan = nslab("plan", str(edited))
        assert plan.returncode == 0, plan.stderr
        lines = [ln for ln in plan.stdout.splitlines() if ln and not ln.startswith("#")]
        removals = [ln for ln in lines if ln.startswith("- ")]
        assert removals == [  # newest first
            f"- ip -n {name}-r2 route add 192.168.1.0/24 via 10.0.12.1",
            f"- ip -n {name}-r1 addr add 192.168.1.1/24 dev eth0",
            # the cable goes itself: its fabric end would outlive host1's namespace for a while
            f"- ip -n {name}-fabric link add host1-eth0 type veth peer name eth0 netns {name}-host1",
            f"- ip -n {name}-fabric link set host1-eth0 master lan1",
            f"- ip -n {name}-fabric link set host1-eth0 up",
            f"- ip -n {name}-host1 link set eth0 up",
            f"- ip netns add {name}-host1",
            f"- ip -n {name}-host1 link set lo alias nslab:{name}:host1",
            f"- ip -n {name}-host1 link set lo up"], plan.stdout
        additions = [ln for ln in lines if ln.startswith("+ ")]
        assert additions and len(additions) + len(removals) == len(lines), plan.stdout
        assert all(f"{name}-host3" in ln or " host3-eth0 " in ln for ln in additions), plan.stdout
        assert "# no longer in the file: node 'host1': its own network stack" in plan.stdout

        result = api.up(model.loads(edited.read_text(), str(edited)))
        assert sorted(type(a).__name__ for a in result.removed) == ["AddAddress", "AddNetns", "AddRoute", "AddVeth"]
        assert {a.ns for a in result.changed} <= {f"{name}-host3", f"{name}-fabric"}
        after = kernel_view(name)

        expected = {k: {p: set(v) for p, v in node.items()} for k, node in before.items() if k != "host1"}
        fabric = expected["fabric"]
        fabric["links"] = fabric["links"] - {"host1-eth0"} | {"host3-eth0"}
        r1 = expected["r1"]
        r1["addrs"].discard(("eth0", "192.168.1.1/24"))
        r1["routes"].discard(("192.168.1.0/24", None, "eth0"))  # the address's own subnet route goes with it
        expected["r2"]["routes"].discard(("192.168.1.0/24", "10.0.12.1", "eth0"))
        expected["host3"] = {"links": {"lo", "eth0"}, "addrs": {("lo", "127.0.0.1/8"), ("eth0", "192.168.2.20/24")},
                             "routes": {("default", "192.168.2.1", "eth0"), ("192.168.2.0/24", None, "eth0")}}
        assert after == expected
        ping = lab.run("host3", ["ping", "-c", "1", "-W", "2", "10.0.12.1"])
        assert ping.returncode == 0, ping.stdout + ping.stderr  # through r2, which still routes

        again = api.up(model.loads(edited.read_text(), str(edited)))
        assert again.changed == [] and again.removed == []
        assert kernel_view(name) == after
        assert "matches the file: `nslab up` would change nothing" in nslab("plan", str(edited)).stdout
    finally:
        lab.down_quietly()
    assert not [n for n in netns.list_names() if n.startswith(name + "-")]


SYSCTL_LAB = """\
name: {name}
nodes:
  a:
    interfaces:
      eth0: {{peer: b:eth0, address: 10.1.0.1/24}}
{extra}  b:
    interfaces:
      eth0: {{peer: a:eth0, address: 10.1.0.2/24}}
"""


def test_a_sysctl_dropped_from_the_file_gets_the_value_it_had_before(tmp_path):
    name = _unique("cs")
    key = "net.ipv4.ip_default_ttl"

    def topo(extra=""):
        path = tmp_path / "lab.yaml"
        path.write_text(SYSCTL_LAB.format(name=name, extra=extra))
        return model.loads(path.read_text(), str(path)), str(path)

    def value():
        return subprocess.run(["ip", "netns", "exec", f"{name}-a", "sysctl", "-n", key], capture_output=True,
                              text=True, check=True).stdout.strip()

    plain, _ = topo()
    lab = api.Lab(plain)
    try:
        lab.up()
        subprocess.run(["ip", "netns", "exec", f"{name}-a", "sysctl", "-q", "-w", f"{key}=50"], check=True)
        with_sysctl, _ = topo(f"    sysctls: {{{key}: 33}}\n")
        assert [type(a).__name__ for a in api.up(with_sysctl).changed] == ["Sysctl"]
        assert value() == "33"

        changed_in_place, _ = topo(f"    sysctls: {{{key}: 34}}\n")
        result = api.up(changed_in_place)
        assert [type(a).__name__ for a in result.changed] == ["Sysctl"] and result.removed == []
        assert value() == "34"

        _, path = topo()
        plan = nslab("plan", path)
        assert [ln for ln in plan.stdout.splitlines() if ln and not ln.startswith("#")] == [
            f"- ip netns exec {name}-a sysctl -q -w {key}=34"], plan.stdout  # one object, changed in place
        result = api.up(plain)
        assert [type(a).__name__ for a in result.removed] == ["Sysctl"] and result.changed == []
        assert value() == "50"  # what it was before nslab first set it, not the namespace's default
        assert api.up(plain).changed == []
    finally:
        lab.down_quietly()


def test_a_route_changed_in_place_then_dropped_is_gone_and_the_rest_stays(tmp_path):
    name = _unique("cr")

    def topo(via=None):
        path = tmp_path / "lab.yaml"
        extra = f"    routes:\n      - {{to: 10.9.0.0/16, via: {via}}}\n" if via else ""
        path.write_text(SYSCTL_LAB.format(name=name, extra=extra))
        return model.loads(path.read_text(), str(path))

    def routes():
        return {(r["dst"], r.get("gateway")) for r in _ip_json(f"{name}-a", "route", "show")}

    lab = api.Lab(topo("10.1.0.2"))
    try:
        lab.up()
        assert ("10.9.0.0/16", "10.1.0.2") in routes()
        result = api.up(topo("10.1.0.3"))
        assert [type(a).__name__ for a in result.changed] == ["AddRoute"] and result.removed == []
        assert routes() == {("10.9.0.0/16", "10.1.0.3"), ("10.1.0.0/24", None)}
        result = api.up(topo())
        assert [(type(a).__name__, a.via) for a in result.removed] == [("AddRoute", "10.1.0.3")]
        assert routes() == {("10.1.0.0/24", None)}
        assert api.up(topo()).changed == []
    finally:
        lab.down_quietly()


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


def _lines(path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0



def _lab_namespaces(name):
    return [n for n in netns.list_names() if n.startswith(name + "-")]


def test_down_after_kill_9_of_up_part_way_leaves_nothing(tmp_path):
    name = _unique("kc")
    path = tmp_path / "chain.yaml"
    path.write_text(chain(name, 40))
    journal = os.path.join(state.lab_dir(name), "journal")
    part_way = 0
    # Kill once the journal holds so many lines (python's start-up time varies with the load): the first
    # lands while the first namespace is being made (journalled before, marked after pyroute2's import).
    for attempt, lines in enumerate([1, 60, 200, 350, 500]):
        up = subprocess.Popen([sys.executable, "-m", "nslab", "up", "-q", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _lines(journal) < lines and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        up.send_signal(signal.SIGKILL)
        up.wait()
        made = _lab_namespaces(name)
        if up.returncode == -signal.SIGKILL and 0 < len(made) < 41:
            part_way += 1
        if attempt == 2:
            # an `up` after the kill finishes the lab instead
            again = nslab("up", "-q", str(path))
            assert again.returncode == 0, again.stderr
            assert len(_lab_namespaces(name)) == 41
        inside = [p for found in netns.pids_inside(_lab_namespaces(name)).values() for p in found]
        down = nslab("down", name)
        assert down.returncode == 0, down.stderr
        assert _lab_namespaces(name) == [], f"killed at {lines} lines: {down.stdout} {down.stderr}"
        assert not [p for p in inside if running(p)], "a process of the lab outlived down"
        assert not os.path.exists(state.lab_dir(name))
    assert part_way >= 3, "the kills did not land while up was building"


def test_down_removes_a_namespace_up_was_killed_creating_before_its_mark_and_no_other(tmp_path):
    """The journal names a namespace before it is made ("doing"): one that has no mark yet is still the lab's.
    A namespace the journal does not name, with no mark, is someone else's and stays."""
    from nslab.plan.actions import AddNetns
    name = _unique("ku")
    state.ensure_dir(name)
    with state.Journal(name) as journal:
        journal.doing(AddNetns(f"{name}-n0", mark=f"nslab:{name}:n0"))
    subprocess.run(["ip", "netns", "add", f"{name}-n0"], check=True)  # as if killed before the mark
    subprocess.run(["ip", "netns", "add", f"{name}-mine"], check=True)
    try:
        down = nslab("down", name)
        assert down.returncode == 0, down.stderr
        assert _lab_namespaces(name) == [f"{name}-mine"]
        assert not os.path.exists(state.lab_dir(name))
    finally:
        for ns in _lab_namespaces(name):
            subprocess.run(["ip", "netns", "del", ns])
