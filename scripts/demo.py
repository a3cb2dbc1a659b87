"""The main job in one process: build the DR lab, send traffic, verify it, trace one request, remove it.

Run as root: python3 scripts/demo.py  (scripts/demo re-runs it inside `nslab vm` when the kernel lacks IPVS).
One process on purpose: inside an emulated VM every Python start re-imports pyroute2 (~10 s).
"""

import sys

from nslab import cli

STEPS = [
    ("build the DR lab", ["up", "topologies/dr.yaml"]),
    ("60 requests from the client to the VIP, who answered, and the director's counters",
     ["status", "dr"]),
    ("check the model against captured packets", ["verify", "dr"]),
    ("one request and its reply, hop by hop", ["trace", "dr", "client", "web"]),
    ("remove every trace of it", ["down", "dr"]),
]


def traffic():
    from nslab import api
    from nslab import pyhelper
    out = api.run("dr", "client", pyhelper.argv("nslab.verify.traffic", "http", "--target", "10.0.0.100:80",
                                                "--count", "60", "--concurrency", "10"),
                  capture_output=True, text=True, timeout=300, env=pyhelper.env())
    print(out.stdout.strip() or out.stderr.strip())


def main():
    worst = 0
    try:
        for title, argv in STEPS:
            print(f"\n=== {title}: nslab {' '.join(argv)}", flush=True)
            if argv[0] == "status":
                traffic()
            rc = cli.main(argv)
            worst = max(worst, rc)
            if rc and argv[0] == "up":
                return rc
    finally:
        if worst:
            cli.main(["down", "dr"])
    return worst


if __name__ == "__main__":
    sys.exit(main())
