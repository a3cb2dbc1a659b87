"""Start-up of the commands that touch no kernel (`--help`, `validate`, `plan`, `graph`) and of `down` (of
a lab that is not up), each as a whole `python3 -m nslab` process, against `python3 -c "import pyroute2"`
in the same run: the best of N runs, wall and CPU (user + system) seconds, and each one's ratio to the
baseline. The last line is `cli CPU vs import pyroute2: --help R, validate R, plan R, graph R, down R`.
Run as root (plan and down look at /run/nslab); with Python's bytecode cache written once (a first run
writes it unless PYTHONDONTWRITEBYTECODE is set: then `python3 -m compileall nslab` first).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DR = os.path.join(REPO, "topologies", "dr.yaml")


def best(argv, runs):
    """(wall s, CPU s), each the smallest of runs."""
    wall = cpu = float("inf")
    env = dict(os.environ, PYTHONPATH=REPO)
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
        wall = min(wall, time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=9, help="runs of each, the best kept (default 9)")
    p.add_argument("--small", action="store_true", help="CI size: 2 runs")
    args = p.parse_args()
    runs = 2 if args.small else args.runs
    if os.geteuid() != 0:
        sys.exit("bench/cli.py needs root (plan and down read /run/nslab)")
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"--help": ["--help"], "validate": ["validate", DR], "plan": ["plan", DR],
                    "graph": ["graph", DR, "--svg", os.path.join(tmp, "dr.svg")],
                    "down": ["down", "bench-not-up"]}
        base_wall, base_cpu = best([sys.executable, "-c", "import pyroute2"], runs)
        print(f"best of {runs}; load average {os.getloadavg()[0]:.2f}")
        print(f"  {'import pyroute2':16} wall {base_wall:.3f} s  CPU {base_cpu:.3f} s")
        cpu_ratio = {}
        for name, words in commands.items():
            wall, cpu = best([sys.executable, "-m", "nslab", *words], runs)
            cpu_ratio[name] = cpu / base_cpu
            print(f"  nslab {name:10} wall {wall:.3f} s ({wall / base_wall:.2f}x)  CPU {cpu:.3f} s "
                  f"({cpu / base_cpu:.2f}x)")
    print("cli CPU vs import pyroute2: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu_ratio.items()))


if __name__ == "__main__":
    main()
