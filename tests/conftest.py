"""Shared fixtures: the repo root, root-only skipping for the kernel tiers, and the host snapshot that proves
nslab never touches the host's own network namespace."""

import contextlib
import ipaddress
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def root_dir():
    return ROOT


def shipped_labs(vm: bool) -> list[str]:
    """The shipped labs (topologies/ and topologies/broken/, paths relative to topologies/) that need the
    kernel VM (IPVS, ipip, netem, VLANs), or those the host kernel runs."""
    from nslab import api
    from nslab.pytest_plugin import needs_of
    top = ROOT / "topologies"
    paths = sorted(str(p.relative_to(top)) for p in [*top.glob("*.yaml"), *top.glob("broken/*.yaml")])
    return [p for p in paths if bool(needs_of(api.load_topology(str(top / p)))) == vm]


def pytest_configure(config):
    # nslab's own kernel tiers also make labs without the fixture (replays, CLI runs): a SIGTERM from a
    # timeout must still let their teardown run.
    from nslab.pytest_plugin import end_labs_on_sigterm
    end_labs_on_sigterm()


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "tests/netns" in str(item.fspath) or "tests/ipvs" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def run_bench():
    """run_bench("x.py", *args) -> the stdout lines of bench/x.py run from this checkout; fails on an error exit."""
    import subprocess
    import sys

    def run(script, *args, timeout=900):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                             timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.strip().splitlines()
    return run


def _ip_json(*argv):
    out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def _without(entries, *volatile):
    for entry in entries:
        for key in volatile:
            entry.pop(key, None)
        for info in entry.get("addr_info", []):
            for key in ("valid_life_time", "preferred_life_time"):
                info.pop(key, None)
    return entries


def _host_sysctls() -> dict:
    """Every sysctl nslab knows (model/sysctls.py: the namespace keys, and the per-interface ones for the
    host's all, default and each interface), plus the bridge's netfilter hooks and devconf inheritance."""
    from nslab.model import sysctls
    keys = set(sysctls.NETNS_SYSCTLS) | {"net.core.devconf_inherit_init_net"}
    for prefix, leaves in sysctls.INTERFACE_SYSCTLS.items():
        base = "/proc/sys/" + prefix.replace(".", "/")
        scopes = os.listdir(base) if os.path.isdir(base) else []
        keys |= {f"{prefix}{scope}.{leaf}" for scope in scopes for leaf in leaves}
    if os.path.isdir("/proc/sys/net/bridge"):
        keys |= {f"net.bridge.{leaf}" for leaf in os.listdir("/proc/sys/net/bridge")}
    values = {}
    for key in keys:
        # an interface name may hold dots, so the path is built from the parts nslab split
        parts = sysctls.split_interface_sysctl(key)
        path = "/proc/sys/" + (parts[0].replace(".", "/") + parts[1] + "/" + parts[2] if parts else
                               key.replace(".", "/"))
        try:
            with open(path) as f:
                values[key] = f.read().strip()
        except OSError:  # absent here, or write-only (route.flush) or unreadable (stable_secret)
            pass
    return values


def _labs_with_state() -> set:
    """Labs with a state directory: their namespaces come and go with other tests. (Their marks are not read:
    the snapshot stays out of other labs' namespaces, though `down` now leaves a visitor alone.)"""
    try:
        return set(os.listdir("/run/nslab"))
    except OSError:
        return set()


def _multicast(address: str) -> bool:
    """The kernel makes a NOARP entry for each multicast group the host sends to (IPv6 above all) and drops
    it again when idle: the host's own traffic, never a lab's, so snapshots leave them out."""
    try:
        return ipaddress.ip_address(address).is_multicast
    except ValueError:
        return False


def host_snapshot() -> dict:
    """What nslab must never change in the host's own network namespace: links, addresses, routes (all
    tables, IPv4 and IPv6), static neighbours (dynamic and multicast ones come and go with the host's own
    traffic), the nft ruleset, the sysctls nslab knows, and /run/netns (entry -> mtime, and the labs with a
    state)."""
    snap = {"links": _without(_ip_json("-d", "link", "show"), "stats64", "stats"),
            "addrs": _without(_ip_json("addr", "show")),
            "routes": [_without(_ip_json(*fam, "route", "show", "table", "all"), "expires")
                       for fam in ((), ("-6",))],
            "neighbours": [n for n in _ip_json("neigh", "show", "nud", "all")
                           if set(n.get("state", [])) & {"PERMANENT", "NOARP"} and not _multicast(n["dst"])],
            "nft": subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout,
            "sysctls": _host_sysctls()}
    return {**snap, **netns_snapshot()}


def netns_snapshot() -> dict:
    """/run/netns (entry -> mtime), the labs with a state, and when they were read."""
    entries = {}
    for name in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []):
        with contextlib.suppress(OSError):
            entries[name] = os.lstat(os.path.join("/run/netns", name)).st_mtime
    return {"netns": entries, "labs": _labs_with_state(), "taken": time.time()}


# Loading the ipip module (the first TUN lab in a kernel that has it as a module, as the VM's does) makes its
# fallback device tunl0 in every network namespace, the host's too: a kernel fact, not nslab's doing.
MODULE_DEVICES = {"tunl0": "ipip"}


def _module_devices_aside(before: dict, after: dict) -> dict:
    """after without the module devices that appeared since before exactly as a module load makes them (of
    their kind, down, without an address); one that is up, addressed or of another kind stays, to be seen."""
    had = {link.get("ifname") for link in before["links"]}
    addressed = {a.get("ifname") for a in after["addrs"] if a.get("addr_info")}
    new = {link.get("ifname") for link in after["links"]
           if MODULE_DEVICES.get(link.get("ifname")) and link.get("ifname") not in had | addressed
           and link.get("linkinfo", {}).get("info_kind") == MODULE_DEVICES[link["ifname"]]
           and "UP" not in link.get("flags", [])}
    return dict(after, links=[link for link in after["links"] if link.get("ifname") not in new],
                addrs=[a for a in after["addrs"] if a.get("ifname") not in new])


def host_changes(before: dict, after: dict, lab: str, up: bool = False) -> list[str]:
    """What differs between two host snapshots, as readable lines (network_changes), attributing /run/netns
    changes: the lab's own names must be gone (unless it is up), and see netns_gone."""
    return network_changes(before, after) + ([] if up else left_behind(after, lab)) + netns_gone(before, after)


def left_behind(snap: dict, lab: str) -> list[str]:
    return [f"/run/netns/{n} is left behind" for n in snap["netns"] if n.startswith(lab + "-")]


def network_changes(before: dict, after: dict) -> list[str]:
    """Links, addresses, routes, neighbours, nft and sysctls that differ. A module's fallback device that
    appeared is no change (see MODULE_DEVICES); nothing else is excused."""
    after = _module_devices_aside(before, after)
    out = [f"host {what} changed:\n  before {before[what]!r}\n  after  {after[what]!r}"
           for what in ("links", "addrs", "routes", "neighbours", "nft") if before[what] != after[what]]
    out += [f"host sysctl {k} changed: {v} -> {after['sysctls'][k]}"
            for k, v in before["sysctls"].items() if k in after["sysctls"] and after["sysctls"][k] != v]
    return out + [f"host sysctl {k} is gone" for k in before["sysctls"] if k not in after["sysctls"]]


def netns_gone(before: dict, after: dict) -> list[str]:
    """/run/netns entries that are no lab's (no lab with a state is named like them), were there a minute
    before `before` and are gone (other engineers' labs and tests come and go in /run/netns meanwhile)."""
    labs = before["labs"] | after["labs"]
    return [f"/run/netns/{n} (no lab's) is gone" for n, mtime in before["netns"].items()
            if n not in after["netns"] and mtime < before["taken"] - 60 and
            not any(n.startswith(other + "-") for other in labs)]


@pytest.fixture
def host_unchanged():
    """host_unchanged(before, lab): assert nothing of the host changed since the snapshot `before` (from
    host_unchanged.snapshot()), attributing /run/netns changes to `lab` (see host_changes).
    host_unchanged.around(topo): the same before `up`, while the lab is up and after `down`."""
    def check(before, lab, when="after down", up=False):
        changes = host_changes(before, host_snapshot(), lab, up)
        assert not changes, f"{when}: " + "\n".join(changes)

    def around(topo):
        from nslab import api
        before = host_snapshot()
        try:
            api.up(topo)
            check(before, topo.name, "while up", up=True)
        finally:
            api.down(topo.name)
        check(before, topo.name)

    check.snapshot, check.around = host_snapshot, around
    return check


# The file of every lab brought up in this process with the host watched around it (watch_the_host);
# tests/ipvs/test_host_untouched.py reads it at the end of the VM tier.
WATCHED: set[str] = set()


def watch_the_host():
    """A module fixture's body (autouse in the netns and ipvs tiers): the host stays as it was before the
    module for every lab the module's tests bring up in this process, by whatever way (Lab, verify, why, the
    pytest plugin, a module's lab): checked once `up` returns, again just before `down` (after all the test
    did with the lab: verify, load, fail, heal...), and after the module for what the labs left (see
    host_changes). /run/netns is compared only across each up and down, as other labs come and go in it
    meanwhile. api.up and api.down are wrapped, not replaced: the real ones run, and everything in nslab
    that brings a lab up or down goes through them."""
    from nslab import api
    before, mine = host_snapshot(), set()
    real_up, real_down = api.up, api.down

    def up(topo, *args, **kwargs):
        entries = netns_snapshot()
        result = real_up(topo, *args, **kwargs)
        now = host_snapshot()
        changes = network_changes(before, now) + netns_gone(entries, now)
        assert not changes, f"while {topo.name} is up: " + "\n".join(changes)
        mine.add(topo.name)
        WATCHED.add(os.path.abspath(topo.source))
        return result

    def down(lab, *args, **kwargs):
        if lab not in mine:
            return real_down(lab, *args, **kwargs)
        now = host_snapshot()
        result = real_down(lab, *args, **kwargs)
        after = netns_snapshot()
        changes = network_changes(before, now) + left_behind(after, lab) + netns_gone(now, after)
        assert not changes, f"while {lab} was up, or by its down: " + "\n".join(changes)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "up", up)
        patch.setattr(api, "down", down)
        yield
    after = host_snapshot()  # /run/netns entries gone were checked around each up and down, where they go
    changes = network_changes(before, after) + [c for lab in mine for c in left_behind(after, lab)]
    assert not changes, "after the module: " + "\n".join(dict.fromkeys(changes))


def running(pid: int) -> bool:
    """Whether the process still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children() -> list[int]:
    """Processes this test process started (apps an in-process `up` spawned) that still run."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                out.append(int(entry))
    return out


def lab_leftovers(lab: str) -> list[str]:
    """What a lab left behind: its namespaces, its state directory, processes this test started."""
    from nslab import state
    from nslab.kernel import netns
    out = [f"namespace {n}" for n in netns.list_names() if n.startswith(lab + "-")]
    if os.path.lexists(state.lab_dir(lab)):
        out.append(f"state {state.lab_dir(lab)}: {os.listdir(state.lab_dir(lab))}")
    return out + [f"process {p}" for p in _children()]


@pytest.fixture
def fault_every_step(monkeypatch, host_unchanged):
    """fault_every_step(topo, how, steps=None): `up` with NSLAB_TEST_FAULT (kernel/apply.py) failing step k,
    `how` (fail, fail-after, sigint, sigint-after), for every k of the plan (or each k of steps, 1-based);
    asserts that each fails naming step k and leaves nothing (lab_leftovers), and that the host is as it
    was after them all. Returns how many faults it injected."""
    from nslab import api
    from nslab.errors import KernelError
    from nslab.kernel.apply import FAULT_ENV

    def run(topo, how, steps=None):
        total = len(api.plan(topo))
        expected = KeyboardInterrupt if how.startswith("sigint") else KernelError
        ks = sorted(set(steps)) if steps is not None else range(1, total + 1)
        assert ks and all(1 <= k <= total for k in ks), (list(ks), total)
        before = host_unchanged.snapshot()
        wrong = []
        try:
            for k in ks:
                monkeypatch.setenv(FAULT_ENV, f"{k}:{how}")
                try:
                    api.up(topo)
                except expected as e:
                    message = str(e)
                else:
                    wrong.append(f"step {k}: up did not fail")
                    monkeypatch.delenv(FAULT_ENV)
                    api.down(topo.name)
                    continue
                if f"step {k} of {total}" not in message:
                    wrong.append(f"step {k}: the error does not name it: {message}")
                left = lab_leftovers(topo.name)
                if left:
                    wrong.append(f"step {k} ({how}): left {left}; the error was: {message}")
                    monkeypatch.delenv(FAULT_ENV)
                    subprocess.run([sys.executable, "-m", "nslab", "down", topo.name], capture_output=True)
        finally:
            monkeypatch.delenv(FAULT_ENV, raising=False)
            if lab_leftovers(topo.name):
                subprocess.run([sys.executable, "-m", "nslab", "down", topo.name], capture_output=True)
        assert not wrong, "\n".join(wrong)
        host_unchanged(before, topo.name, f"after {len(ks)} faults ({how})")
        return len(ks)
    return run
