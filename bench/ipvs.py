"""Programs one IPVS service with 10, 100 and 1000 real servers through nslab's kernel layer (apply, as
`nslab up` does) and through `ipvsadm -R` (the same table as ipvsadm's restore format), in the same run,
each into an empty namespace, and checks both tables hold every real server. Needs IPVS: run it inside
`nslab vm` where the host kernel lacks it. The last line is
`ipvs N rs: nslab X s, ipvsadm -R Y s, ratio R` for the largest N. Run as root.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nslab.kernel import apply, ipvs, netns  # noqa: E402
from nslab.kernel.session import Session  # noqa: E402
from nslab.plan.actions import IpvsDest, IpvsService  # noqa: E402

VIP, PORT = "10.0.0.100", 80


def rip(i):
    return f"10.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def plan(ns, n):
    return [IpvsService(ns, protocol="tcp", vip=VIP, port=PORT, scheduler="wrr")] + [
        IpvsDest(ns, protocol="tcp", vip=VIP, port=PORT, rip=rip(i), rport=PORT, weight=1 + i % 3, method="dr")
        for i in range(n)]


def restore_rules(n):
    """The same table in `ipvsadm -S` format, for `ipvsadm -R`."""
    lines = [f"-A -t {VIP}:{PORT} -s wrr"]
    lines += [f"-a -t {VIP}:{PORT} -r {rip(i)}:{PORT} -g -w {1 + i % 3}" for i in range(n)]
    return "\n".join(lines) + "\n"


def fresh_namespace(ns):
    """An empty namespace with lo up: until then it has no local routing table, and IPVS refuses every real
    server (their address type reads as broadcast)."""
    from pyroute2 import IPRoute
    netns.create(ns)
    with netns.entered(ns):
        ipr = IPRoute()
    with ipr:
        ipr.link("set", index=1, state="up")


def real_servers(ns):
    with Session() as s:
        return sum(len(svc["real_servers"]) for svc in ipvs.read_services(s, ns))


def time_nslab(ns, n):
    actions = plan(ns, n)
    t = time.perf_counter()
    with Session() as s:
        apply.apply(s, actions)
    return time.perf_counter() - t


def time_ipvsadm(ns, n):
    rules = restore_rules(n)
    with netns.child_enters(ns) as enter:
        t = time.perf_counter()
        subprocess.run(["ipvsadm", "-R"], input=rules, text=True, preexec_fn=enter, check=True)
        return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,100,1000", help="real servers per run (default 10,100,1000)")
    p.add_argument("--prefix", default="bench-ipvs", help="namespace name prefix")
    p.add_argument("--small", action="store_true", help="CI size: 10 and 50 real servers")
    args = p.parse_args()
    sizes = [10, 50] if args.small else [int(x) for x in args.sizes.split(",")]
    if os.geteuid() != 0:
        sys.exit("bench/ipvs.py needs root (and IPVS: run it in `nslab vm`)")
    import pyroute2  # noqa: F401 - imported before the clock starts: ipvsadm's start-up has no Python import
    print(f"one service, N real servers (DR, weights 1-3), into an empty namespace; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for n in sizes:
        took = {}
        for who, timer in (("nslab", time_nslab), ("ipvsadm", time_ipvsadm)):
            ns = f"{args.prefix}-{who}"
            fresh_namespace(ns)
            try:
                took[who] = timer(ns, n)
                found = real_servers(ns)
                if found != n:
                    sys.exit(f"bench/ipvs.py: {who} left {found} real servers, not {n}")
            finally:
                netns.delete(ns)
        print(f"ipvs {n} rs: nslab {took['nslab']:.3f} s, ipvsadm -R {took['ipvsadm']:.3f} s, "
              f"ratio {took['nslab'] / took['ipvsadm']:.2f}", flush=True)


if __name__ == "__main__":
    main()
