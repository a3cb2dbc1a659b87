"""Times building and removing stars of N hosts on one switch: `nslab up` and `nslab down` as a user runs
them (two processes), the same lab as its plan's `ip` commands run by sh, and the floor (one process,
bare setns and one netlink socket per node, only the calls the lab needs). Prints wall and CPU seconds,
the ratios to the floor and to `ip` measured in the same run, the per-node cost of `nslab up` at each N
against the smallest N, and with --memory what a lab of the largest N holds while it is up. The last
line is `star N: nslab X s, ip Y s, floor Z s, nslab/floor R` for the largest N. Run as root.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from nslab import api, model, state  # noqa: E402
from nslab.kernel import netns  # noqa: E402


def star_text(name, n):
    lines = [f"name: {name}", "switches: [lan]", "nodes:"]
    for i in range(n):
        lines += [f"  h{i}:", "    interfaces:", f"      eth0: {{switch: lan, address: 10.{i // 250}.{i % 250}.1/8}}"]
    return "\n".join(lines) + "\n"


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(argv):
    """(wall s, CPU s) of a command."""
    cpu, t = _children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))
    return time.perf_counter() - t, _children_cpu() - cpu


def time_nslab(name, n, between=None):
    """`nslab up -q FILE` then `nslab down NAME`: ((up wall, up CPU), (down wall, down CPU))."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(star_text(name, n))
    try:
        up = _run([sys.executable, "-m", "nslab", "up", "-q", f.name])
        if between:
            between(name)
        return up, _run([sys.executable, "-m", "nslab", "down", name])
    finally:
        os.unlink(f.name)


def time_ip_script(name, n):
    """The plan's own commands (`nslab plan`), run by sh: what a student replaying it by hand would run."""
    actions = api.plan(model.loads(star_text(name, n), f"<{name}>"))
    names = sorted({a.ns for a in actions})
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write("set -e\n" + "\n".join(c for a in actions for c in a.commands()) + "\n")
    try:
        up = _run(["sh", f.name])
        return up, _run(["sh", "-c", 'for n in "$@"; do ip netns del "$n"; done', "sh", *names])
    finally:
        os.unlink(f.name)


def time_floor(name, n):
    """Namespace + veth to a bridge + address + up, straight through setns and one socket a node."""
    from pyroute2 import IPRoute
    cpu, t = time.process_time(), time.perf_counter()
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
    up = (time.perf_counter() - t, time.process_time() - cpu)
    cpu, t = time.process_time(), time.perf_counter()
    for ns in [fab] + [f"{name}-h{i}" for i in range(n)]:
        netns.delete(ns)
    return up, (time.perf_counter() - t, time.process_time() - cpu)


def _meminfo():
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f)}


KERNEL_KEYS = ("Slab", "Percpu", "KernelStack", "PageTables")


def memory_report(name):
    """What a lab holds while up: its processes (RSS), its state directory, and the kernel memory it
    pins (the machine-wide meminfo delta against the same moment before `up`; other work moves it too)."""
    pids = [p for ps in netns.pids_inside([n for n in netns.list_names() if n.startswith(name + "-")]).values()
            for p in ps]
    rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                rss += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    run_dir = state.lab_dir(name)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(run_dir) for f in fs)
    return len(pids), rss / 1024, size / 2 ** 20


def slope(per_node, a, b):
    """Seconds `nslab up` took per node added from a to b hosts."""
    return (per_node[b] * b - per_node[a] * a) / (b - a)


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", default="10,100,500", help="star sizes, comma-separated (default 10,100,500)")
    p.add_argument("--runs", type=int, default=1, help="runs of each, the median kept (default 1)")
    p.add_argument("--memory", action="store_true", help="also what a lab of the largest size holds while up")
    p.add_argument("--prefix", default="bench", help="lab name prefix (labs are PREFIX-nN, PREFIX-iN, PREFIX-fN)")
    p.add_argument("--small", action="store_true", help="CI size: stars of 3 and 6 hosts, one run")
    args = p.parse_args()
    sizes = [3, 6] if args.small else [int(x) for x in args.nodes.split(",")]
    if os.geteuid() != 0:
        sys.exit("bench/lab_up.py needs root")
    print(f"stars of N hosts on one switch, median of {args.runs} run(s), wall s (CPU s); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    held = {}

    def measure_memory(name):
        before = held.pop("before")
        after = _meminfo()
        kernel = sum(after[k] - before[k] for k in KERNEL_KEYS) / 1024
        procs, rss, run_mb = memory_report(name)
        held["line"] = (f"held while up by the {sizes[-1]}-host star: {procs} processes ({rss:.1f} MB RSS), "
                        f"state {run_mb:.2f} MB, kernel ~{kernel:.0f} MB ({'+'.join(KERNEL_KEYS)} delta, "
                        f"machine-wide)")

    per_node, last = {}, None
    for n in sizes:
        rows = {"nslab": [], "ip": [], "floor": []}
        for _ in range(args.runs):
            hook = None
            if args.memory and n == sizes[-1]:
                held["before"] = _meminfo()
                hook = measure_memory
            rows["nslab"].append(time_nslab(f"{args.prefix}-n{n}", n, hook))
            rows["ip"].append(time_ip_script(f"{args.prefix}-i{n}", n))
            rows["floor"].append(time_floor(f"{args.prefix}-f{n}", n))
        total = {k: median([u[0] + d[0] for u, d in v]) for k, v in rows.items()}
        cpu = {k: median([u[1] + d[1] for u, d in v]) for k, v in rows.items()}
        up = {k: median([u[0] for u, _ in v]) for k, v in rows.items()}
        down = {k: median([d[0] for _, d in v]) for k, v in rows.items()}
        per_node[n] = up["nslab"] / n
        print(f"{n} hosts, up + down: " + ", ".join(
            f"{k} {total[k]:.2f} s (up {up[k]:.2f}, down {down[k]:.2f}; CPU {cpu[k]:.2f})" for k in rows), flush=True)
        last = (f"star {n}: nslab {total['nslab']:.2f} s, ip {total['ip']:.2f} s, floor {total['floor']:.2f} s, "
                f"nslab/floor {total['nslab'] / total['floor']:.2f}, nslab/ip {total['nslab'] / total['ip']:.2f}")
    small = sizes[0]
    for n in sizes[1:]:
        print(f"per-node `nslab up` at {n}: {per_node[n] * 1000:.1f} ms, at {small}: {per_node[small] * 1000:.1f} ms "
              f"(start-up included), ratio {per_node[n] / per_node[small]:.2f}")
    for a, b, c in zip(sizes, sizes[1:], sizes[2:]):  # superlinear growth shows as a rising added cost per node
        print(f"added cost per node of `nslab up`: {b}->{c} {slope(per_node, b, c) * 1000:.1f} ms, "
              f"{a}->{b} {slope(per_node, a, b) * 1000:.1f} ms, ratio {slope(per_node, b, c) / slope(per_node, a, b):.2f}")
    if "line" in held:
        print(held["line"])
    print(last)


if __name__ == "__main__":
    main()
