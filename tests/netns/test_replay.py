"""What `nslab plan` prints is what `nslab up` does: the plan piped to `sh -e` and `nslab up` of the same file
leave the same kernel state (links, addresses, routes, the plan's sysctls, nftables, IPVS, listening apps)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nslab import api
from nslab.kernel import caps, netns
from nslab.model import names
from nslab.model.schema import Forward

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def _shipped():
    """Every shipped lab; those with `services:` (LVS) only where the kernel has IPVS (ipip for TUN): in
    `nslab vm -- python3 -m pytest tests/netns/test_replay.py`."""
    out = []
    for path in sorted(TOPOLOGIES.glob("*.yaml")) + sorted(TOPOLOGIES.glob("broken/*.yaml")):
        rel = str(path.relative_to(TOPOLOGIES))
        topo = api.load_topology(str(path))
        marks = []
        if any(i.impair for n in topo.nodes for i in n.interfaces):
            marks.append(pytest.mark.skipif(not caps.has_netem(), reason="impairs a link: needs sch_netem and "
                                            "sch_tbf; run in nslab vm"))
        if topo.services:
            tun = any(svc.forward is Forward.TUN for svc in topo.services)
            marks.append(pytest.mark.skipif(not caps.has_ipvs() or (tun and not caps.has_ipip()),
                                            reason="an LVS lab: needs IPVS (and ipip for TUN); run in nslab vm"))
        if any(i.vlans for n in topo.nodes for i in n.interfaces):
            marks.append(pytest.mark.skipif(not caps.has_vlan(), reason="a VLAN lab: needs 802.1Q; run in nslab vm"))
        out.append(pytest.param(rel, marks=marks, id=rel))
    return out


SHIPPED = _shipped()

FEATURES = """\
name: feat
switches: [lan]
nodes:
  a:
    interfaces:
      eth0: {peer: b:eth0, addresses: [10.1.0.1/24, 10.1.1.1/24], mac: 02:00:00:00:0a:01}
      eth1: {switch: lan, address: 10.5.0.1/24, mac: 02:00:00:00:0a:02}
    routes:
      - {to: 10.9.0.0/16, dev: eth0}
    sysctls: {net.ipv4.icmp_echo_ignore_all: 1}
    nat:
      - {masquerade: eth0}
      - {masquerade: eth1, source: 10.1.0.0/20}
    exec:
      - ip addr add 10.7.7.7/32 dev lo
      - sh -c 'echo "started; $(hostname)" > /dev/null'
    app: echo
  b:
    interfaces:
      eth0: {peer: a:eth0, address: 10.1.0.2/24, mac: 02:00:00:00:0b:01}
    gateway: 10.1.0.1
"""


# Upper bounds only: in `nslab vm` on a busy host (emulated CPU) an LVS lab's up takes minutes.
SLOW = 900


def nslab(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "nslab", *argv], capture_output=True, text=True, timeout=SLOW, **kw)


def renamed(text: str, name: str) -> str:
    first = next(line for line in text.splitlines() if line.startswith("name:"))
    return text.replace(first, f"name: {name}", 1)


def _json(argv):
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def _in(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


def _sysctl_keys(actions):
    """(namespace, key) of every sysctl the plan sets, one Sysctls action per group or one Sysctl per key."""
    keys = set()
    for a in actions:
        if type(a).__name__ in ("Sysctls", "Sysctl"):
            pairs = getattr(a, "values", None) or [(a.key, a.value)]
            keys |= {(a.ns, k) for k, _ in pairs}
    return keys


def _strip_handles(item):
    if isinstance(item, dict):
        return {k: _strip_handles(v) for k, v in item.items() if k != "handle"}
    if isinstance(item, list):
        return [_strip_handles(v) for v in item]
    return item


def _listening(ns):
    out = subprocess.run(_in(ns, "ss", "-ltunH"), capture_output=True, text=True, check=True).stdout
    return sorted(f"{line.split()[0]} {line.split()[4]}" for line in out.splitlines() if line.strip())


def _sysctl_values(ns, keys):
    """key -> value in ns, None for a key this kernel lacks; one `sysctl` for all (processes are slow in a VM)."""
    if not keys:
        return {}
    out = subprocess.run(_in(ns, "sysctl", *keys), capture_output=True, text=True).stdout
    found = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    return {k: found.get(k) for k in keys}


def wait_for_apps(actions, timeout=SLOW):
    """Until every app the plan starts listens (a replayed `... &` returns before the app is up)."""
    deadline = time.monotonic() + timeout
    for a in (a for a in actions if type(a).__name__ == "StartApp"):
        protos = ("tcp", "udp") if a.protocol == "both" else (a.protocol,)
        want = {f"{p} 0.0.0.0:{a.port}" for p in protos}
        while not want <= set(_listening(a.ns)):
            assert time.monotonic() < deadline, f"{a.kind} on {a.node} never listened on {want}"
            time.sleep(0.1)


def _untokened(alias):
    owner = names.parse_mark(alias)
    return names.mark(owner.lab, owner.role) if owner else alias


def snapshot(lab: str, actions) -> dict:
    """A lab's kernel state as `ip`, `sysctl`, `nft` and `ss` show it, without what the kernel picks itself
    (ifindexes, random MACs, rule handles, counters) or `up` picks at random (the lab's token in the mark on
    each lo: the plan's mark is the rest)."""
    macs = set()
    for a in actions:
        if type(a).__name__ == "AddVeth":
            macs |= {(a.ns, a.name)} if a.mac else set()
            macs |= {(a.peer_ns, a.peer)} if a.peer_mac else set()
    sysctls = _sysctl_keys(actions)
    ipvs = {a.ns for a in actions if type(a).__name__ in ("IpvsService", "IpvsDest")}
    out = {}
    for ns in sorted(n for n in netns.list_names() if n.startswith(lab + "-")):
        links = _json(["ip", "-n", ns, "-d", "-j", "link", "show"])
        by_index = {link["ifindex"]: link["ifname"] for link in links}
        node = {"links": sorted(
            (link["ifname"], link.get("linkinfo", {}).get("info_kind"), by_index.get(link.get("master")) or
             link.get("master"), link.get("operstate"), "UP" in link.get("flags", []), _untokened(link.get("ifalias")),
             link.get("address") if (ns, link["ifname"]) in macs else None) for link in links)}
        node["addrs"] = sorted((a["ifname"], f"{i['local']}/{i['prefixlen']}")
                               for a in _json(["ip", "-n", ns, "-j", "addr", "show"]) for i in a.get("addr_info", []))
        node["routes"] = sorted((r["dst"], r.get("gateway"), r.get("dev"))
                                for r in _json(["ip", "-n", ns, "-j", "route", "show", "table", "main"]))
        node["sysctls"] = _sysctl_values(ns, sorted(k for n, k in sysctls if n == ns))
        ruleset = _json(_in(ns, "nft", "-j", "list", "ruleset")) or {"nftables": []}
        node["nft"] = [_strip_handles(i) for i in ruleset["nftables"] if "metainfo" not in i]
        node["listening"] = _listening(ns)
        if ns in ipvs:  # only where the plan programs IPVS: ipvsadm fails on a kernel without it
            rules = subprocess.run(_in(ns, "ipvsadm", "-S", "-n"), capture_output=True, text=True, check=True)
            node["ipvs"] = sorted(rules.stdout.splitlines())
        out[ns] = node
    return out


def settled_snapshot(lab: str, actions, timeout=15) -> dict:
    """The snapshot once two in a row agree: the kernel moves a link's operstate (a bridge's from UNKNOWN to
    UP once a port carries) in the background, up to a second after the change (linkwatch)."""
    deadline = time.monotonic() + timeout
    last = snapshot(lab, actions)
    while True:
        time.sleep(1.2)
        now = snapshot(lab, actions)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def differences(replayed: dict, built: dict) -> str:
    """Where the two snapshots differ, one line each, for the assertion message."""
    lines = []
    for ns in sorted(set(replayed) | set(built)):
        a, b = replayed.get(ns), built.get(ns)
        if a is None or b is None:
            lines.append(f"{ns}: only after {'up' if a is None else 'the replay'}")
            continue
        for part in a:
            if a[part] != b[part]:
                if isinstance(a[part], list):
                    lines.append(f"{ns} {part}: replay only {[x for x in a[part] if x not in b[part]]}; "
                                 f"up only {[x for x in b[part] if x not in a[part]]}")
                else:
                    lines.append(f"{ns} {part}: replay {a[part]} != up {b[part]}")
    return "\n".join(lines)


def replay_then_up(text: str, name: str, tmp_path):
    """(state after replaying the plan, state after `nslab up`) of the topology text under lab name `name`."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(renamed(text, name))
    actions = api.plan(api.load_topology(str(path)))
    try:
        plan = nslab("plan", str(path), "--no-reasons")
        assert plan.returncode == 0, plan.stderr
        # A file, not a pipe, for the output: the replayed apps run on in the background and hold it open.
        with open(tmp_path / f"{name}-replay.log", "w+") as log:
            sh = subprocess.run(["sh", "-e"], input=plan.stdout, text=True, stdout=log, stderr=subprocess.STDOUT,
                                timeout=SLOW)
            log.seek(0)
            assert sh.returncode == 0, "the replayed plan stopped:\n" + log.read()
        wait_for_apps(actions)
        replayed = settled_snapshot(name, actions)
        # The replayed namespaces carry nslab's ownership mark, so nslab removes them like its own.
        gone = nslab("down", name)
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert not [n for n in netns.list_names() if n.startswith(name + "-")]

        up = nslab("up", str(path))
        assert up.returncode == 0, up.stdout + up.stderr
        wait_for_apps(actions)
        built = settled_snapshot(name, actions)
    finally:
        # also when the replayed script failed half-way: its namespaces carry the mark but no state
        if name in api.labs() or [n for n in netns.list_names() if n.startswith(name + "-")]:
            api.down(name)
    return replayed, built


@pytest.mark.parametrize("rel", SHIPPED)
def test_replayed_plan_equals_up(rel, tmp_path):
    name = f"rp{os.getpid() % 1000}x{[p.values[0] for p in SHIPPED].index(rel)}"
    replayed, built = replay_then_up((TOPOLOGIES / rel).read_text(), name, tmp_path)
    assert replayed, "the replayed plan made no namespaces"
    assert replayed == built, differences(replayed, built)


def test_replayed_plan_equals_up_for_the_schema_corners(tmp_path):
    """Direct cable with a MAC on both ends, several addresses, a dev route, a hand-set sysctl, two
    masquerade rules (with and without a source), start-up commands (one quoted for a shell), an echo app."""
    name = f"rp{os.getpid() % 1000}f"
    replayed, built = replay_then_up(FEATURES, name, tmp_path)
    a = replayed[f"{name}-a"]
    assert ("lo", "10.7.7.7/32") in a["addrs"]  # exec ran
    assert ("eth0", "veth", None, "UP", True, None, "02:00:00:00:0a:01") in a["links"]
    assert len([i for i in a["nft"] if "rule" in i]) == 2
    assert replayed == built, differences(replayed, built)
