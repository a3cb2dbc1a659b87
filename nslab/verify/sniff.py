"""Sniffers on every link of a lab at once: one raw AF_PACKET socket per tap, opened inside its namespace.

Every switched link is sniffed in the lab's fabric namespace on the switch-side
end of each node's veth; direct links and TUN real servers' tunl0 are sniffed
inside a node. A socket is bound to its interface at creation and from then on
the kernel queues every frame for it, so "ready" means "every socket is bound":
no sleep is needed before sending traffic. Frames carry kernel timestamps
(SO_TIMESTAMPNS), so frames from different sockets order correctly.
"""

import select
import socket
import struct
import threading
import time
from ..errors import KernelError
from ..kernel import netns
from ..model.resolve import Tap
from .frames import Frame, parse

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33


def _open(tap: Tap, rcvbuf: int) -> socket.socket:
    """A raw socket bound to the tap's interface, opened inside its namespace.

    Created with protocol 0 so it hears nothing until bind() names both the
    interface and ETH_P_ALL: otherwise it would briefly hear every interface.
    """
    with netns.entered(tap.ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:  # not root enough for FORCE: take what the sysctl allows
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((tap.ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


class Capture:
    """Sniff a set of taps until stop(), at most max_frames frames and max_seconds seconds.

        with Capture(resolved_lab.taps) as cap:   # returns once every socket is bound
            ...send traffic...
        frames = cap.frames                    # ordered by kernel timestamp
    """

    def __init__(self, taps, max_frames: int = 20000, max_seconds: float = 60.0, rcvbuf: int = 4 << 20):
        self.taps = list(taps)
        self.max_frames, self.max_seconds, self.rcvbuf = max_frames, max_seconds, rcvbuf
        self.frames: list[Frame] = []
        self.truncated = False
        self.ready_seconds = None
        self._raw = []  # (tap, t, bytes, pkttype): decoded after stop, so the reader stays quick
        self.went_down: set[str] = set()  # labels of taps whose interface went down while sniffed
        self._socks = []
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "Capture":
        """Open and bind every socket (raises KernelError naming the tap), then start the reader."""
        started = time.monotonic()
        try:
            for tap in self.taps:
                try:
                    self._socks.append((tap, _open(tap, self.rcvbuf)))
                except OSError as e:  # the lab is not as its file says: an interface deleted by hand
                    raise KernelError(f"cannot sniff {tap.ifname} in {tap.ns}: {e.strerror}. `nslab status` "
                                      "shows what the lab holds; `nslab up FILE` puts back what is missing") from None
        except BaseException:
            self._close()
            raise
        self.ready_seconds = time.monotonic() - started
        self._deadline = started + self.max_seconds
        # One reader polling every socket: in a slow VM one thread per socket only adds GIL churn.
        self._thread = threading.Thread(target=self._read, name="nslab-capture", daemon=True)
        self._thread.start()
        return self

    def _read(self):
        poller = select.poll()
        by_fd = {s.fileno(): (tap, s) for tap, s in self._socks}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while True:
            stopping = self._stop.is_set()
            for fd, _ in poller.poll(0 if stopping else 50):
                tap, s = by_fd[fd]
                self._drain(tap, s)
            if stopping or len(self._raw) >= self.max_frames or time.monotonic() > self._deadline:
                if not stopping:
                    self.truncated = True
                return

    def _drain(self, tap, s):
        while len(self._raw) < self.max_frames:
            try:
                data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return
            except OSError:
                # The interface went down (ENETDOWN, reported once): the socket stays bound and
                # hears frames again once it is up, so one failed link must not end the capture.
                self.went_down.add(tap.label)
                return
            t = time.time()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    t = sec + nsec / 1e9
            self._raw.append((tap, t, data, addr[2]))

    @property
    def seen(self) -> int:
        """Frames read so far (while running)."""
        return len(self._raw)

    def wait_quiet(self, interval: float) -> None:
        """Return once no frame arrived for `interval` seconds (the last answers and FINs in flight)."""
        seen = -1
        while self.seen != seen:
            seen = self.seen
            time.sleep(interval)

    def stop(self) -> list[Frame]:
        """Stop reading (after draining what is queued) and return the frames in time order."""
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._close()
        frames = []
        for tap, t, data, pkttype in self._raw:
            out = pkttype == PACKET_OUTGOING
            # In the fabric, "outgoing" on a bridge port means the bridge hands it TO the node.
            direction = ("to" if out else "from") if tap.in_fabric else ("from" if out else "to")
            sender = tap.node if direction == "from" else tap.peer
            frames.append(parse(data, tap.label, tap.node, direction, t, l2=tap.l2, sender=sender,
                                segment=tap.segment))
        frames.sort(key=lambda f: f.time)
        for i, f in enumerate(frames):
            f.index = i
        self.frames = frames
        return frames

    def _close(self):
        for _, s in self._socks:
            s.close()
        self._socks = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
