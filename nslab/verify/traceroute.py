"""Traceroute proven from captures: ICMP echo probes crafted with scapy leave a node with TTL 1, 2, ... under
the lab-wide sniffers. Each router decrements the TTL; where it reaches 0 the router drops the probe and
answers time-exceeded; the destination answers the echo. The check reads who answered each probe and the
TTL on every link the probe crossed, so a routing loop shows as the same routers answering in turn."""

import os
from dataclasses import dataclass, field

from . import probe
from .concepts import Result, skip
from .frames import parse_ip
from .sniff import Capture
from .walk import transmissions

ECHO_REQUEST, ECHO_REPLY, TIME_EXCEEDED = 8, 0, 11
SPACING = 0.05  # seconds between probes: each gets its answer in turn, and ICMP rate limits stay unhit
QUIET = 0.3  # seconds without a new frame that end the capture


@dataclass
class Probe:
    ttl: int
    crossings: list = field(default_factory=list)  # (link, sender, receiver-side TTL as sent) in time order
    answer: str = "nothing"  # time exceeded | echo reply | nothing
    answered_by: str | None = None  # the node that answered
    source: str | None = None  # the address it answered from

    def line(self) -> str:
        trail = " -> ".join(f"{sender} {ttl}" for _, sender, ttl in self.crossings) or "never sent"
        tail = f"{self.answer} from {self.answered_by} ({self.source})" if self.answered_by else "no answer"
        return f"ttl {self.ttl}: TTL as sent on each link: {trail}; {tail}"


def capture_probes(lab, node: str, dst: str, max_ttl: int) -> tuple[list, int]:
    """(frames, ident): the probes sent from node under sniffers on every link, until the lab is quiet."""
    ident = os.getpid() & 0xFFFF
    cap = Capture(lab.taps, max_seconds=30).start()
    try:
        probe.echoes(lab.ns(node), dst, ident, max_ttl, SPACING, ttl_is_seq=True)
        cap.wait_quiet(QUIET)
    finally:
        frames = cap.stop()
    return frames, ident


def probes(frames, ident: int, max_ttl: int) -> list[Probe]:
    """Each probe's crossings and answer, from the captured frames."""
    out = {t: Probe(t) for t in range(1, max_ttl + 1)}
    for f in transmissions(frames):
        ip = f.ip
        if not ip or not ip.icmp:
            continue
        kind, _, pid, seq = ip.icmp
        if kind == ECHO_REQUEST and pid == ident and seq in out:
            out[seq].crossings.append((f.link, f.sender, ip.ttl))
            continue
        if kind == ECHO_REPLY and pid == ident and seq in out:
            probe, what = out[seq], "echo reply"
        elif kind == TIME_EXCEEDED:
            inner = parse_ip(ip.payload)
            if not inner or not inner.icmp or inner.icmp[0] != ECHO_REQUEST or inner.icmp[2] != ident:
                continue
            probe, what = out.get(inner.icmp[3]), "time exceeded"
        else:
            continue
        if probe and probe.answered_by is None:
            probe.answer, probe.answered_by, probe.source = what, f.sender, ip.src
    return [out[t] for t in sorted(out)]


def _ttl_steps(p: Probe) -> list[str]:
    """Crossings where the TTL did not fall by exactly one from the previous link."""
    return [f"{sender} sent it on {link} with TTL {ttl} after {prev}" for (_, _, prev), (link, sender, ttl)
            in zip(p.crossings, p.crossings[1:]) if ttl != prev - 1]


def check(i: int, exp, lab, path: list) -> Result:
    """expect[i] with `traceroute: true`: probes from exp.sender to the target, answered in order by each
    router of `path` (time exceeded) and then by its last node (echo reply), the TTL one less per router."""
    name = f"expect[{i}].traceroute"
    dst = exp.to.rpartition(":")[0] if ":" in exp.to else None
    if dst is None:
        addr = lab.first_address(exp.to) if lab.topology.has_node(exp.to) else None
        svc = lab.service(exp.to)
        dst = str(svc.vip) if svc else (str(addr) if addr else None)
    if dst is None:
        return skip(name, f"{exp.to} has no address to probe")
    want = path[1:]
    max_ttl = len(want) + 1 if want else 8  # one spare: a path longer than the lab says shows
    frames, ident = capture_probes(lab, exp.sender, dst, max_ttl)
    got = probes(frames, ident, max_ttl)
    ev = [p.line() for p in got]
    answers = [p.answered_by for p in got]
    reached = next((p for p in got if p.answer == "echo reply"), None)
    bad_ttl = [s for p in got for s in _ttl_steps(p)]
    routers = [p.answered_by for p in got if p.answer == "time exceeded"]
    repeat = next((n for k, n in enumerate(routers) if n in routers[:k]), None)
    if repeat and not reached:
        loop = routers[routers.index(repeat):]
        last = got[-1]
        return Result(name, False, f"routing loop: no probe reached {dst}; time-exceeded came from "
                      f"{', '.join(routers)}: {' and '.join(sorted(set(loop)))} hand the packet back and forth until "
                      f"its TTL runs out (the TTL {last.ttl} probe crossed {len(last.crossings)} links and died at "
                      f"{last.answered_by}); each one's route to {dst} points at the other", ev)
    if bad_ttl:
        return Result(name, False, "the TTL did not fall by one per router: " + bad_ttl[0], ev)
    if reached is None:
        stop = routers[-1] if routers else exp.sender
        return Result(name, False, f"no probe of TTL 1-{max_ttl} reached {dst}; the last to answer was {stop}", ev)
    seen = [a for a in answers[:answers.index(reached.answered_by) + 1]]
    if want and seen != want:
        return Result(name, False, f"the probes were answered by {' -> '.join(map(str, seen))}, the lab expects "
                      f"{' -> '.join(want)}", ev)
    return Result(name, True, f"TTL {', '.join(str(p.ttl) for p in got[:len(seen)])}: time exceeded from "
                  f"{', '.join(seen[:-1]) or 'no router'}, then the echo reply from {seen[-1]}; the TTL fell by one "
                  "at every router", ev)
