"""Times building and removing labs: nslab against the same lab replayed as `ip` commands, and against
the floor (bare setns + one netlink socket per node). Prints ms per node and the ratios. Run as root."""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nslab import api, model  # noqa: E402
from nslab.kernel import netns  # noqa: E402


def star(name, n):
    """n hosts on one switch: the per-node cost without routing detours."""
    lines = [f"name: {name}", "switches: [lan]", "nodes:"]
    for i in range(n):
        lines += [f"  h{i}:", "    interfaces:", f"      eth0: {{switch: lan, address: 10.{i // 250}.{i % 250}.1/8}}"]
    return model.loads("\n".join(lines) + "\n", f"<{name}>")


def time_nslab(topo):
    t = time.perf_counter()
    api.up(topo)
    up = time.perf_counter() - t
    t = time.perf_counter()
    api.down(topo.name)
    return up, time.perf_counter() - t


def time_ip_script(topo):
    """The plan's own commands (`nslab plan`), run by sh: what a student replaying it by hand would run."""
    script = "set -e\n" + "\n".join(c for a in api.plan(topo) for c in a.commands()) + "\n"
    names = sorted({a.ns for a in api.plan(topo)})
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script)
    try:
        t = time.perf_counter()
        subprocess.run(["sh", f.name], check=True)
        up = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run(["sh", "-c", "for n in \"$@\"; do ip netns del \"$n\"; done", "sh", *names], check=True)
        return up, time.perf_counter() - t
    finally:
        os.unlink(f.name)


def time_floor(name, n):
    """Namespace + veth to a bridge + address + up, straight through setns and one socket a node."""
    from pyroute2 import IPRoute
    t = time.perf_counter()
    fab = f"{name}-fabric"
    netns.create(fab)
    with netns.entered(fab):
        fipr = IPRoute()
    fipr.link("add", ifname="lan", kind="bridge")
    br = fipr.link_lookup(ifname="lan")[0]
    for i in range(n):
        ns = f"{name}-h{i}"
        netns.create(ns)
        with netns.entered(ns):
            ipr = IPRoute()
        fd = os.open(netns.path(ns), os.O_RDONLY)
        fipr.link("add", ifname=f"h{i}-eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        os.close(fd)
        fipr.link("set", index=fipr.link_lookup(ifname=f"h{i}-eth0")[0], master=br, state="up")
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address=f"10.{i // 250}.{i % 250}.1", prefixlen=8)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=1, state="up")
        ipr.close()
    fipr.close()
    up = time.perf_counter() - t
    t = time.perf_counter()
    for ns in [fab] + [f"{name}-h{i}" for i in range(n)]:
        netns.delete(ns)
    return up, time.perf_counter() - t


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nodes", type=int, default=40)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/lab_up.py needs root")
    n = args.nodes
    rows = {"nslab": [], "ip commands": [], "floor": []}
    for r in range(args.runs):
        rows["nslab"].append(time_nslab(star(f"bn{r}", n)))
        rows["ip commands"].append(time_ip_script(star(f"bi{r}", n)))
        rows["floor"].append(time_floor(f"bf{r}", n))
    routing = [time_nslab(model.load(os.path.join(os.path.dirname(__file__), "..", "topologies", "routing.yaml")))
               for _ in range(args.runs)]
    print(f"{n} nodes on one switch, median of {args.runs} runs (ms per node, up / down):")
    floor_up = median([u for u, _ in rows["floor"]])
    for name, runs in rows.items():
        up, down = median([u for u, _ in runs]), median([d for _, d in runs])
        print(f"  {name:<12} up {up / n * 1000:6.2f}  down {down / n * 1000:6.2f}  up vs floor {up / floor_up:4.2f}x")
    print(f"routing.yaml (4 nodes, 3 switches, 1 app): up {median([u for u, _ in routing]) * 1000:.0f} ms, "
          f"down {median([d for _, d in routing]) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
