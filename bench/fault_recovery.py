"""How long a dead real server keeps failing requests, against keepalived's interval x retries.

    nslab vm -- python3 bench/fault_recovery.py [--checks 1x1,1x2,2x1] [--duration 16] [--fail-at 3]

For each health setting (interval x retries) it brings up topologies/dr-health.yaml with that setting,
runs wrk against the VIP (4 connections, a new connection per request), stops rs1's app `--fail-at`
seconds in, and prints what the client saw: connections refused (counted by its own kernel), and how
long after the fail the last one came (to within 0.2 s), beside interval x (retries + 1), the time
keepalived needs to see `retries` + 1 failed checks in a row. The same with plain dr.yaml (no health
checks) shows the errors going on until the end. Needs root, IPVS, wrk and keepalived.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nslab import api, faults, model  # noqa: E402


def lab_with(name: str, interval: int | None, retries: int | None):
    """dr-health with its health setting replaced (dr without health checks when interval is None)."""
    stem = "dr" if interval is None else "dr-health"
    text = (ROOT / "topologies" / f"{stem}.yaml").read_text().replace(f"name: {stem}\n", f"name: {name}\n", 1)
    if interval is not None:
        text, n = re.subn(r"interval: \d+, timeout: \d+, retries: \d+",
                          f"interval: {interval}, timeout: 1, retries: {retries}", text)
        assert n == 1, "dr-health.yaml's health line changed: update this script"
    return model.loads(text, f"{stem}.yaml ({interval}x{retries})")


def run(interval, retries, duration, fail_at):
    name = f"fr{interval or 0}x{retries or 0}"
    lab = api.Lab(lab_with(name, interval, retries))
    try:
        lab.up()
        report = api.load(name, duration=duration, concurrency=4, threads=1, timeout=5,
                          fault=faults.Scheduled("rs1", fail_at=fail_at))
    finally:
        lab.down_quietly()
    f, t = report.faults, report.traffic
    fail = f["events"][0]
    return {"check": "none" if interval is None else f"{interval} s x {retries}",
            "bound_s": None if interval is None else interval * (retries + 1),
            "fail_took_s": fail["took_s"], "answered": t["ok"], "refused": f["refused"],
            "wrk_errors": t["failed"], "recovered_after_fail_s": f.get("recovered_after_fail_s"),
            "seconds": [(r["second"], r["answered"], r["refused"]) for r in f["seconds"]]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    health = (ROOT / "topologies" / "dr-health.yaml").exists()  # keepalived's lab
    p.add_argument("--checks", default="none,1x1,1x2,2x1" if health else "none",
                   help="interval x retries settings (they need topologies/dr-health.yaml), 'none': dr.yaml")
    p.add_argument("--duration", type=float, default=16)
    p.add_argument("--fail-at", type=float, default=3)
    args = p.parse_args()
    for spec in args.checks.split(","):
        interval, retries = (None, None) if spec == "none" else (int(x) for x in spec.split("x"))
        r = run(interval, retries, args.duration, args.fail_at)
        rec = r["recovered_after_fail_s"]
        print(f"health {r['check']:>9}: interval x (retries+1) = {r['bound_s'] if r['bound_s'] else '-':>3} s; "
              f"{r['refused']} refused ({r['wrk_errors']} wrk errors), {r['answered']} answered; errors ended "
              + (f"{rec:.1f} s after the fail (the fail itself took {r['fail_took_s']:.1f} s)" if rec is not None
                 else "never: still refused at the end"), flush=True)
        print("   per second (answered, refused): " + " ".join(f"{s}:{a}/{x}" for s, a, x in r["seconds"]),
              flush=True)


if __name__ == "__main__":
    main()
