"""Link impairment measured: pings out of each impaired interface to a neighbour on its segment, the round
trips and losses compared with the netem settings; for a rate, UDP sent faster than the rate and the bytes
that reach the neighbour counted (measure() runs them; judge() and judge_rate() are pure)."""

import errno
import math
import socket
import statistics
import time

from ..kernel import netns, observe, tc
from ..kernel.session import Session
from ..model.resolve import ImpairFact, ResolvedLab
from . import traffic
from .concepts import Result, skip

PINGS = 40  # at most; fewer over a line so slow that 40 would take long (a round trip above 100 ms)
INTERVAL = 0.02  # s between a reply (or timeout) and the next ping
SLACK_MS = 50.0  # a slow emulated VM adds this much to a round trip, at worst
DATAGRAM = 1472  # UDP payload of a full 1500-byte packet: 1514 bytes a frame on the line
FRAME = DATAGRAM + 8 + 20 + 14
WARMUP = 0.6  # s of sending before the count starts: netem's delay line and tbf's queue are full by then
WINDOW = 2.0  # s over which the neighbour's received bytes are counted
OVERSEND = 1.2  # the sender must offer this many times the rate, or the limit can't be seen
CLIENT_TIMEOUT_S = 2.0  # how long each of verify's requests waits (run.capture_traffic's timeout)


def measure(rlab: ResolvedLab, requests: dict | None = None) -> list:
    """One Result per impaired interface (two with a rate), and one per line slower than a request waits when
    verify's requests (the traffic generator's JSON) timed out."""
    out = judge_timeouts(rlab, requests)
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
        if fact.impair.rate_bit and fact.neighbour_iface:
            out.append(judge_rate(f"impair-rate:{fact.node}:{fact.iface}", fact, **_blast(rlab, fact)))
    return out


def judge_timeouts(rlab: ResolvedLab, requests: dict | None, timeout_s: float = CLIENT_TIMEOUT_S) -> list:
    """A FAIL for each impaired line whose round trip is never shorter than a request waits, when requests
    timed out: latency past a client's timeout looks like an outage though nothing is lost."""
    timed = sum(n for kind, n in ((requests or {}).get("errors") or {}).items() if "imeout" in kind)
    out, seen = [], set()
    for fact in rlab.impairs if timed else ():
        line = frozenset({(fact.node, fact.iface), (fact.neighbour, fact.neighbour_iface)})
        least = sum(i.delay_us - i.jitter_us for i in (fact.impair, fact.back) if i) / 1000
        if line in seen or least < timeout_s * 1000:
            continue
        seen.add(line)
        out.append(Result(f"impair-timeout:{fact.node}:{fact.iface}", False,
                          f"{timed} request(s) timed out: a round trip over {fact.node}:{fact.iface} <-> "
                          f"{fact.neighbour} takes at least {least:g} ms (its impair delays), longer than the "
                          f"{timeout_s:g} s a request waits; nothing need be lost for a client to give up",
                          [f"the requests' errors: {requests.get('errors')}"]))
    return out


def _blast(rlab: ResolvedLab, fact: ImpairFact) -> dict:
    """Send full-size UDP datagrams out of the impaired interface as fast as this process can for WARMUP +
    WINDOW s, to a socket bound (and never read) on the neighbour; count the bytes the neighbour's interface
    received over the WINDOW, and what was offered. Both ends' counters are the kernel's own."""
    there, dev = rlab.ns(fact.neighbour), fact.neighbour_iface
    with Session() as s:
        with netns.entered(there):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sink:
            sink.bind((str(fact.neighbour_ip), 0))
            s.ipr(there)  # opened now, so the first read in the loop costs no more than the second

            def received():
                before = time.perf_counter()
                rx = observe.link_bytes(s, there, dev)[0]
                return (before + time.perf_counter()) / 2, rx

            with netns.entered(rlab.ns(fact.node)):
                src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with src:
                src.connect(sink.getsockname())
                counts = tc.qdisc_counts(s, rlab.ns(fact.node), fact.iface)
                payload, sent, marks = bytes(DATAGRAM), 0, []
                start = time.perf_counter()
                while len(marks) < 2:
                    for _ in range(16):
                        try:
                            src.send(payload)
                            sent += 1
                        except OSError as e:  # ENOBUFS: a queue on the way is full; the rate is what is asked
                            if e.errno != errno.ENOBUFS:
                                raise
                    now = time.perf_counter()
                    if now - start >= WARMUP + WINDOW * len(marks):
                        marks.append(received())
                elapsed = time.perf_counter() - start
            after = tc.qdisc_counts(s, rlab.ns(fact.node), fact.iface)
    (t1, rx1), (t2, rx2) = marks
    drops = {k: after[k][1] - counts.get(k, (0, 0))[1] for k in after}
    return {"offered_bit": sent * FRAME * 8 / elapsed, "got_bit": (rx2 - rx1) * 8 / (t2 - t1),
            "window": t2 - t1, "sent": sent, "drops": drops}


def judge_rate(name: str, fact: ImpairFact, offered_bit: float, got_bit: float, window: float, sent: int = 0,
               drops: dict | None = None) -> Result:
    """The bytes per second that reached the neighbour against the rate: never above it by more than tbf's
    bucket (refilled once over the window) and 10% for the timing of two counter reads, never under 70% of
    it while the sender offered more than the rate (netem's loss is taken before tbf, so it doesn't thin
    what tbf sends). SKIP when the sender could not offer enough to see a limit."""
    rate = fact.impair.rate_bit
    burst = max(1600, rate // 8 // 100)  # as the plan sets it (SetImpair.burst)
    high, low = rate * 1.1 + burst * 8 / window, rate * 0.7
    where = f"{fact.node}:{fact.iface} -> {fact.neighbour}"
    mbit = lambda b: f"{b / 1e6:.2f} Mbit/s"  # noqa: E731
    ev = [f"{sent} UDP datagrams of {DATAGRAM} bytes {where}: offered {mbit(offered_bit)}, "
          f"received {mbit(got_bit)} at {fact.neighbour}:{fact.neighbour_iface} over {window:.2f} s"]
    if drops:
        ev.append("dropped on the way out: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    if offered_bit < rate * OVERSEND:
        return skip(name, f"the sender offered only {mbit(offered_bit)}, not over the {mbit(rate)} rate: "
                    "the limit could not be seen", ev)
    if got_bit > high:
        return Result(name, False, f"{where} carried {mbit(got_bit)}, over the {mbit(rate)} rate (at most "
                      f"{mbit(high)} with tbf's bucket): the rate limit is not in place", ev)
    if got_bit < low:
        return Result(name, False, f"{where} carried only {mbit(got_bit)} of its {mbit(rate)} rate while "
                      f"{mbit(offered_bit)} was offered", ev)
    return Result(name, True, f"{where} carried {mbit(got_bit)} for a {mbit(rate)} rate "
                  f"({mbit(low)}-{mbit(high)}) with {mbit(offered_bit)} offered", ev)


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
    spread_ms = (f", rtt min {min(rtts):.1f} / median {statistics.median(rtts):.1f} / max {max(rtts):.1f} ms"
                 if rtts else "")
    ev = [f"{sent} pings {where}: {len(rtts)} answered" + spread_ms]
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
        parts.append(f"rate {m.rate_bit / 1e6:g} Mbit/s: impair-rate measures it")
    return Result(name, True, f"{where}: " + "; ".join(parts), ev)
