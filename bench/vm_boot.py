"""Times `nslab vm -- true` against plain `vng -r KERNEL --disable-kvm -- true` on the same kernel.

Runs the two alternately (the order swaps each round, so neither always gets
the warmer page cache), N times each, and prints min/median/max of both and
the ratio of the medians. The last line is
`vm boot: nslab X s, vng Y s, ratio R`. Run as root, on an otherwise quiet
machine: under TCG both are CPU-bound.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nslab import vm  # noqa: E402


def timed(argv, env, timeout):
    """Seconds argv took; exits with its output when it fails (a broken boot is not a figure)."""
    t = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stdout.flush()
        sys.stderr.write(f"vm_boot: {' '.join(argv)} exited {proc.returncode}\n")
        sys.stderr.buffer.write(proc.stdout + proc.stderr)
        sys.exit(1)
    return took


def summary(name, times):
    return (f"{name:6} min {min(times):5.1f} s  median {statistics.median(times):5.1f} s  "
            f"max {max(times):5.1f} s  ({', '.join(f'{t:.1f}' for t in times)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="boots of each (default 3)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before one boot counts as hung")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if os.geteuid() != 0:
        sys.exit("vm_boot: run as root (nslab vm needs it, and the baseline must run the same way)")
    kernel = vm.find_kernel()
    vng = vm.find_vng()
    if kernel is None or vng is None:
        sys.exit("vm_boot: needs a kernel with IPVS in /boot and virtme-ng (scripts/install.sh)")
    env = dict(os.environ)
    # As nslab vm does: vng starts virtme-run by name, find the one beside vng.
    env["PATH"] = os.pathsep.join([str(Path(vng).parent), env.get("PATH", os.defpath)])
    runs = {
        "nslab": [sys.executable, "-m", "nslab", "vm", "--", "true"],
        "vng": [vng, "-r", str(kernel), "--disable-kvm", "--", "true"],
    }
    print(f"kernel {kernel}, vng {vng}, KVM for nslab: {vm.kvm_usable(kernel=kernel)}, "
          f"{args.runs} run(s) each", flush=True)
    times = {name: [] for name in runs}
    for i in range(args.runs):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for name in order:
            took = timed(runs[name], env, args.timeout)
            times[name].append(took)
            print(f"  run {i + 1} {name:5} {took:5.1f} s", flush=True)
    for name in runs:
        print(summary(name, times[name]))
    nslab, base = statistics.median(times["nslab"]), statistics.median(times["vng"])
    print(f"vm boot: nslab {nslab:.1f} s, vng {base:.1f} s, ratio {nslab / base:.2f}")


if __name__ == "__main__":
    main()
