"""A switch floods, then learns: with its FDB emptied, the first frame to a MAC it doesn't know goes out of
every port; the answer teaches it where that MAC lives, and later frames go out of that one port only.
Proven from the frames each bridge port handed to its node, and from the bridge's FDB read afterwards."""

import os

from ..kernel import fdb
from ..kernel.session import Session
from . import probe
from .concepts import Result
from .sniff import Capture

COUNT = 4  # echoes: the first finds the MAC unknown, the rest find it learned
SPACING = 0.1  # seconds between echoes: each answer is back before the next leaves
QUIET = 0.3


def _shared_switch(lab, a: str, b: str):
    return next((s for s in lab.shared_segments(a, b) if s.kind == "switch"), None)


def _delivered(frames, ident: int, kind: int) -> dict[int, set]:
    """{sequence: nodes whose bridge port handed them the echo (request or reply) with our id}."""
    out: dict[int, set] = {}
    for f in frames:
        if f.direction == "to" and f.ip and f.ip.icmp and f.ip.icmp[0] == kind and f.ip.icmp[2] == ident:
            out.setdefault(f.ip.icmp[3], set()).add(f.node)
    return out


def check(i: int, exp, lab) -> Result:
    """expect[i] with `switch_learning: true`: exp.sender pings exp.to across the switch they share."""
    name = f"expect[{i}].switch_learning"
    seg = _shared_switch(lab, exp.sender, exp.to)
    if seg is None:
        return Result(name, False, f"{exp.sender} and {exp.to} share no switch: there is no switch to learn")
    src, dst = seg.end(exp.sender), seg.end(exp.to)
    if not dst.addresses:
        return Result(name, False, f"{exp.to} has no address on {seg.name} to send to")
    target, ident = str(dst.addresses[0].ip), os.getpid() & 0xFFFF
    ns = lab.ns(exp.sender)
    probe.echoes(ns, target, ident ^ 0xFFFF, 1, SPACING)  # ARP now, so the echoes below are unicast frames
    with Session() as s:
        fdb.forget(s, lab.fabric_ns, seg.name)
        cap = Capture([t for t in lab.taps if t.segment == seg.name], max_seconds=30).start()
        try:
            probe.echoes(ns, target, ident, COUNT, SPACING)
            cap.wait_quiet(QUIET)
        finally:
            frames = cap.stop()
        table = fdb.learned(s, lab.fabric_ns, seg.name)
    others = {e.node for e in seg.ends} - {exp.sender}
    asked, answered = _delivered(frames, ident, 8), _delivered(frames, ident, 0)
    ev = [f"echo {q} ({exp.sender} -> {target}) handed to: {', '.join(sorted(asked.get(q, ()))) or 'nobody'}"
          for q in range(1, COUNT + 1)]
    ev.append(f"{seg.name}'s FDB afterwards: " + (", ".join(f"{mac} on {port}" for mac, port in sorted(table.items()))
                                                  or "nothing learned"))
    first, later = asked.get(1, set()), [asked.get(q, set()) for q in range(2, COUNT + 1)]
    if not answered:
        return Result(name, False, f"{exp.to} never answered {exp.sender}'s echoes: nothing to learn from", ev)
    if first != others:
        return Result(name, False, f"the first echo to {exp.to}'s MAC (unknown: the FDB was just emptied) reached "
                      f"{', '.join(sorted(first)) or 'nobody'}; a switch floods it to every other port: "
                      f"{', '.join(sorted(others))}", ev)
    flooded = next((q for q, got in enumerate(later, 2) if got != {exp.to}), None)
    if flooded:
        ageing = lab.topology.switch(seg.name).ageing
        why = (f"ageing {ageing}: it forgets each MAC the moment it learns it, so every frame floods, as a hub's "
               "would" if ageing == 0 else "it did not learn the port of "
               f"{exp.to}'s MAC from its answer")
        return Result(name, False, f"{seg.name} kept flooding: echo {flooded} to {exp.to}'s MAC also reached "
                      f"{', '.join(sorted(asked[flooded] - {exp.to}))}; {why}", ev)
    learned_at = table.get(_mac_of(frames, exp.to))
    if learned_at != dst.port:
        return Result(name, False, f"{seg.name}'s FDB does not hold {exp.to}'s MAC on its port {dst.port} "
                      f"({learned_at or 'not learned'})", ev)
    return Result(name, True, f"echo 1 to {exp.to}'s MAC, unknown to {seg.name}, was flooded to "
                  f"{', '.join(sorted(others))}; {exp.to}'s answer taught {seg.name} its port ({dst.port} in the "
                  f"FDB), and echoes 2-{COUNT} reached {exp.to} only", ev)


def _mac_of(frames, node: str) -> str | None:
    """The MAC node sent its frames from on this capture."""
    return next((f.src_mac for f in frames if f.direction == "from" and f.node == node), None)
