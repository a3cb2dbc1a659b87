"""Link impairment measured: pings out of each impaired interface to a neighbour on its segment, the round
trips and losses compared with the netem settings (measure() runs them; judge() is pure)."""

import math
import statistics

from ..kernel import netns
from ..model.resolve import ImpairFact, ResolvedLab
from . import traffic
from .concepts import Result, skip

PINGS = 40  # at most; fewer over a line so slow that 40 would take long (a round trip above 100 ms)
INTERVAL = 0.02  # s between a reply (or timeout) and the next ping
SLACK_MS = 50.0  # a slow emulated VM adds this much to a round trip, at worst


def measure(rlab: ResolvedLab) -> list:
    """One Result per impaired interface."""
    out = []
    for fact in rlab.impairs:
        name = f"impair:{fact.node}:{fact.iface}"
        if fact.neighbour_ip is None:
            out.append(skip(name, f"nobody on {fact.node}:{fact.iface}'s segment and subnet to ping: the delay "
                            "and loss could not be measured"))
            continue
        ways = [i for i in (fact.impair, fact.back) if i]
        round_trip = sum(i.delay_us + i.jitter_us for i in ways) / 1e6
        count = max(5, min(PINGS, int(4 / max(round_trip, 0.1))))
        with netns.entered(rlab.ns(fact.node)):  # the raw socket lives in the node; pings leave by fact.iface
            traffic.run_ping(str(fact.neighbour_ip), 1, round_trip + 1)  # ARP first, so no ping waits for it
            got = traffic.run_ping(str(fact.neighbour_ip), count, round_trip + 1, INTERVAL)
        out.append(judge(name, fact, [r["rtt_ms"] for r in got["replies"] if "rtt_ms" in r], count))
    return out


def judge(name: str, fact: ImpairFact, rtts: list, sent: int) -> Result:
    """rtts: the round trips (ms) of the pings answered, of `sent`. The delay puts a floor under every round
    trip (netem never sends a packet sooner than delay - jitter); loss is judged within 3 standard deviations
    of the binomial count, so a right setting fails about once in 400 runs."""
    m, b = fact.impair, fact.back  # b: the neighbour's impairment, which its replies pass
    d = (m.delay_us + (b.delay_us if b else 0)) / 1000
    j = (m.jitter_us + (b.jitter_us if b else 0)) / 1000
    p = 1 - (1 - m.loss_pct / 100) * (1 - (b.loss_pct / 100 if b else 0))
    lost = sent - len(rtts)
    where = f"{fact.node}:{fact.iface} -> {fact.neighbour} ({fact.neighbour_ip})" + (" and back, impaired too"
                                                                                      if b else "")
    ev = [f"{sent} pings {where}: {len(rtts)} answered"
          + (f", rtt min {min(rtts):.1f} / median {statistics.median(rtts):.1f} / max {max(rtts):.1f} ms" if rtts else "")]
    if not rtts:
        return Result(name, False, f"no ping {where} was answered: a loss of {p:.1%} should not lose all {sent}", ev)
    spread = 3 * math.sqrt(sent * p * (1 - p)) + 1
    if abs(lost - sent * p) > spread:
        return Result(name, False, f"{lost} of {sent} pings {where} lost, the lab's loss makes {p:.1%} "
                      f"(expected {sent * p:.1f} ±{spread:.1f})", ev)
    low, median = min(rtts), statistics.median(rtts)
    if d and low < d - j - 0.5:
        return Result(name, False, f"a ping {where} came back in {low:.1f} ms, under the {d:g} ms (±{j:g}) delay "
                      "netem should add: the impairment is not in place", ev)
    if d and median > d + j + SLACK_MS + d / 2:
        return Result(name, False, f"pings {where} took {median:.1f} ms (median), far over the {d:g} ms delay", ev)
    parts = [f"round trip {median:.1f} ms median (min {low:.1f}) for a {d:g} ms delay" + (f" ±{j:g}" if j else "")
             if d else f"round trip {median:.1f} ms median"]
    parts.append(f"{lost} of {sent} lost for {p:.1%} loss (expected {sent * p:.1f} ±{spread:.1f})")
    if m.rate_bit:
        parts.append(f"rate {m.rate_bit / 1e6:g} Mbit/s set, not measured by pings")
    return Result(name, True, f"{where}: " + "; ".join(parts), ev)
