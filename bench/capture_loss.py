"""Sniffer readiness and loss: brings up a lab, starts a capture on every tap at once, sends COUNT frames
back to back out of one node (the local experimental EtherType 0x88b5, so they stay on that switch) and
counts how many every socket saw. Prints the figures; last line `capture: N taps ready in X ms, lost L of
COUNT`. Run as root: python3 bench/capture_loss.py [--count 5000] [--topology topologies/routing.yaml]."""

import argparse
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nslab import api, model  # noqa: E402
from nslab.kernel import netns  # noqa: E402
from nslab.verify.sniff import Capture  # noqa: E402

ETHERTYPE = b"\x88\xb5"


def measure(rlab, node: str, iface: str = "eth0", count: int = 1000) -> dict:
    """Start a capture on every tap of a running lab, send `count` frames out of node:iface, count them."""
    cap = Capture(rlab.taps)
    t0 = time.monotonic()
    cap.start()
    ready = time.monotonic() - t0
    with netns.entered(rlab.ns(node)):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind((iface, 0))
        src = s.getsockname()[4]
        for i in range(count):
            s.send(b"\xff" * 6 + src + ETHERTYPE + struct.pack("!I", i) + bytes(42))
    finally:
        s.close()
    frames = cap.stop()
    mine = [f for f in frames if f.node == node and f.direction == "from" and f.raw[12:14] == ETHERTYPE]
    seen = {struct.unpack("!I", f.raw[14:18])[0] for f in mine}
    return {"taps": len(cap.taps), "ready_seconds": round(ready, 4), "sent": count,
            "captured": len(seen), "lost": count - len(seen), "first_seen": 0 in seen}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--topology", default=os.path.join(os.path.dirname(__file__), "..", "topologies", "routing.yaml"))
    p.add_argument("--node", default=None, help="node to send from (default: the first)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    topo = model.load(args.topology)
    from dataclasses import replace
    topo = replace(topo, name=f"bcap{os.getpid() % 1000}")
    with api.Lab(topo) as lab:
        m = measure(model.resolve(lab.topo), args.node or topo.nodes[0].name, count=args.count)
    if args.json:
        print(json.dumps(m))
    else:
        print(f"capture: {m['taps']} taps ready in {m['ready_seconds'] * 1000:.1f} ms, lost {m['lost']} of {m['sent']}")
    return 0 if m["lost"] == 0 and m["first_seen"] else 1


if __name__ == "__main__":
    sys.exit(main())
