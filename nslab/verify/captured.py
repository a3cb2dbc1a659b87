"""Frames captured around a block of a user's own traffic, handed over as scapy packets or pcap files.

    with lab.capture() as cap:          # sniffers on every link are bound when this returns
        lab.run("host1", ["ping", "-c1", "192.168.2.10"])
    for pkt in cap.packets("lan1"):     # scapy packets: pkt[IP].dst, pkt[Ether].src
        ...

scapy is imported only when packets are asked for: it costs seconds to import in the kernel VM.
"""

from ..errors import UsageError
from .sniff import Capture

QUIET_SECONDS = 0.2  # after the block: wait until no frame arrived for this long (replies in flight)


class Captured:
    """A capture on some or all of a lab's taps; frames are read when the block ends."""

    def __init__(self, rlab, links=None):
        self.rlab = rlab
        self.taps = _select(rlab, links)
        self._cap = Capture(self.taps)
        self.frames = []
        self.went_down = set()  # labels of links whose interface went down during the block

    def __enter__(self) -> "Captured":
        self._cap.start()
        return self

    def __exit__(self, *exc):
        import time
        seen = -1
        while self._cap.seen != seen:
            seen = self._cap.seen
            time.sleep(QUIET_SECONDS)
        self.frames = self._cap.stop()
        self.went_down = set(self._cap.went_down)

    @property
    def links(self) -> list[str]:
        """The names packets() accepts: each segment (switch or cable) and each tap's own label."""
        return sorted({t.segment for t in self.taps if t.segment} | {t.label for t in self.taps})

    def packets(self, link: str | None = None) -> list:
        """The captured frames as scapy packets (Ether, or IP for tunl0), in time order, each with .time set
        and .sniffed_on (the tap's label). A switch's name gives what every port of it saw, so a frame
        crossing the switch appears once per port it crossed. Raises UsageError for an unknown link."""
        from scapy.layers.inet import IP
        from scapy.layers.l2 import Ether
        if link is not None and link not in self.links:
            raise UsageError(f"no captured link '{link}' (links: {', '.join(self.links)})")
        out = []
        for f in self.frames:
            if link is None or link in (f.segment, f.link):
                pkt = Ether(f.raw) if f.l2 else IP(f.raw)
                pkt.time = f.time
                pkt.sniffed_on = f.link
                out.append(pkt)
        return out

    def pcap(self, directory: str) -> dict:
        """One pcap file per tap in directory (for Wireshark); returns {tap label: path}."""
        from .export import write_pcaps
        return write_pcaps(self.frames, directory)


def _select(rlab, links):
    if links is None:
        return list(rlab.taps)
    wanted = [links] if isinstance(links, str) else list(links)
    known = {t.segment for t in rlab.taps if t.segment} | {t.label for t in rlab.taps}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UsageError(f"lab '{rlab.name}' has no link '{unknown[0]}' (links: {', '.join(sorted(known))})")
    return [t for t in rlab.taps if t.segment in wanted or t.label in wanted]
