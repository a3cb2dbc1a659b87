"""`nslab load` against plain wrk on the LVS labs (NAT, DR, TUN), all in one kernel with IPVS: run it
inside `nslab vm` where the host kernel lacks IPVS.

For each lab: up; then for each mode (a new connection per request, then keep-alive), plain wrk and
`nslab load` (the whole command, as a user runs it) take turns, the order swapping each round, each for
the same seconds with the same connections and threads, from the client node to the service's VIP.
Prints both rates, their ratio, and the director's packets per request (in, out; from the IPVS
counters `nslab load` reads): NAT carries the replies, DR and TUN don't. The last line is
`load dr close: nslab X/s, wrk Y/s, ratio R`. Run as root.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from nslab import api, model  # noqa: E402
from nslab.kernel import netns  # noqa: E402

MODES = ("close", "keepalive")


def plain_wrk(ns, url, seconds, connections, threads, keepalive):
    """Requests/s that wrk itself prints, run in namespace ns."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", url]
    if not keepalive:
        cmd[1:1] = ["-H", "Connection: close"]
    with netns.child_enters(ns) as enter:
        out = subprocess.run(cmd, preexec_fn=enter, capture_output=True, text=True, timeout=seconds + 120)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if out.returncode != 0 or not found:
        sys.exit(f"bench/load.py: {' '.join(cmd)} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return float(found.group(1))


def nslab_load(lab, seconds, connections, threads, keepalive):
    """(requests/s, director packets in per answer, out per answer) of `nslab load --json`."""
    cmd = [sys.executable, "-m", "nslab", "load", lab, "-d", str(seconds), "-c", str(connections),
           "-t", str(threads), "--json"] + (["--keepalive"] if keepalive else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300,
                         env=dict(os.environ, PYTHONPATH=REPO))
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        sys.exit(f"bench/load.py: {' '.join(cmd)} failed ({out.returncode}): {out.stdout}{out.stderr}")
    traffic, rows = report["traffic"], report["service"]["real_servers"]
    answered = max(1, traffic.get("ok") or 0)
    return (traffic["rate_per_s"], sum(r["inpkts"] for r in rows) / answered,
            sum(r["outpkts"] for r in rows) / answered)


def bench_lab(name, args):
    topo = model.load(os.path.join(REPO, "topologies", f"{name}.yaml"))
    svc = model.resolve(topo).services[0]
    client = model.resolve(topo).ns("client")
    url = f"http://{svc.vip}:{svc.port}/"
    api.up(topo)
    lines = []
    try:
        for mode in args.modes:
            keep = mode == "keepalive"
            ours, theirs, pin, pout = [], [], [], []
            for r in range(args.rounds):
                turns = ("wrk", "nslab") if r % 2 == 0 else ("nslab", "wrk")
                for who in turns:
                    if who == "wrk":
                        theirs.append(plain_wrk(client, url, args.seconds, args.connections, args.threads, keep))
                    else:
                        rate, i, o = nslab_load(topo.name, args.seconds, args.connections, args.threads, keep)
                        ours.append(rate)
                        pin.append(i)
                        pout.append(o)
                    time.sleep(args.pause)
            a, b = sum(ours) / len(ours), sum(theirs) / len(theirs)
            lines.append(f"load {name} {mode}: nslab {a:.0f}/s, wrk {b:.0f}/s, ratio {a / b:.2f}; "
                         f"director packets per request in {sum(pin) / len(pin):.2f}, "
                         f"out {sum(pout) / len(pout):.2f}")
            print(lines[-1], flush=True)
    finally:
        api.down(topo.name)
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labs", default="nat,dr,tun", help="comma-separated shipped LVS labs (default nat,dr,tun)")
    p.add_argument("--modes", default=",".join(MODES), help="close,keepalive (default both)")
    p.add_argument("--seconds", type=int, default=10, help="each run's length (default 10)")
    p.add_argument("-c", "--connections", type=int, default=50)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs per lab and mode, order swapping")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--small", action="store_true", help="CI size: dr only, 1 s runs, 4 connections")
    args = p.parse_args()
    if args.small:
        args.labs, args.seconds, args.connections, args.pause = "dr", 1, 4, 0.0
    args.modes = [m for m in args.modes.split(",") if m]
    if os.geteuid() != 0:
        sys.exit("bench/load.py needs root (and IPVS: run it in `nslab vm`)")
    print(f"nslab load vs plain wrk, {args.seconds} s runs, -c {args.connections} -t {args.threads}, "
          f"{args.rounds} round(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    lines = []
    for name in args.labs.split(","):
        lines += bench_lab(name, args)
    # the figure the target names, last
    last = next((x for x in lines if x.startswith("load dr close:")), None)
    if last:
        print(last.split(";")[0])


if __name__ == "__main__":
    main()
