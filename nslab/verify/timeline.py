"""What a load saw second by second while a fault came and went: the client's own kernel counts every
connection that failed (a RST to its SYN: refused; a RST on an open one: reset) and shows the SYNs it keeps
retransmitting because nobody answers (stalled); the load generator counts the answers.

The sampler reads the client namespace's /proc/net/snmp and /proc/net/tcp, opened once from inside it (an
open /proc/net file stays bound to its namespace), every STEP seconds from a thread of its own.
"""

import socket
import struct
import threading
import time

STEP = 0.2  # seconds between samples: the resolution of "when the errors stopped"


def _tcp_counters(snmp_text: str) -> dict:
    rows = [line.split() for line in snmp_text.splitlines() if line.startswith("Tcp:")]
    return dict(zip(rows[0][1:], (int(v) for v in rows[1][1:])))


def _hex_addr(ip: str, port: int) -> str:
    """An address as /proc/net/tcp prints it: the 32-bit word in host byte order, then the port."""
    return f"{struct.unpack('=I', socket.inet_aton(ip))[0]:08X}:{port:04X}"


def stalled(tcp_text: str, ip: str, port: int) -> int:
    """Sockets to ip:port in SYN_SENT whose SYN has been sent again at least once: nobody answers them."""
    want = _hex_addr(ip, port)
    n = 0
    for line in tcp_text.splitlines()[1:]:
        p = line.split()
        if len(p) > 6 and p[2] == want and p[3] == "02" and int(p[6], 16) > 0:
            n += 1
    return n


class Sampler:
    """Samples (t, answered, refused, reset, stalled) from start() until stop(); answered is whatever the
    load generator last reported through note_answered()."""

    def __init__(self, ns: str, ip: str, port: int):
        from ..kernel import netns
        with netns.entered(ns):
            self._snmp = open("/proc/thread-self/net/snmp")
            self._tcp = open("/proc/thread-self/net/tcp")
        self.ip, self.port = ip, port
        self.answered = 0
        self.samples = []
        self.t0 = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="nslab-timeline", daemon=True)

    def _read(self, f):
        f.seek(0)
        return f.read()

    def sample(self):
        """Take a sample now (also called by the fault injector right before a fail or heal, so that no
        sample interval straddles one)."""
        with self._lock:
            if self._snmp.closed:  # stopped: the load is over
                return
            c = _tcp_counters(self._read(self._snmp))
            self.samples.append((time.monotonic() - self.t0, self.answered, c["AttemptFails"], c["EstabResets"],
                                 stalled(self._read(self._tcp), self.ip, self.port)))

    def note_answered(self, answered: int) -> None:
        self.answered = answered

    def start(self, t0: float) -> None:
        self.t0 = t0
        self.sample()
        self._thread.start()

    def _run(self):
        k = 1
        while not self._stop.wait(max(0.0, self.t0 + k * STEP - time.monotonic())):
            self.sample()
            k += 1

    def stop(self) -> list:
        self._stop.set()
        if self.t0 is not None:  # started
            self._thread.join()
            self.sample()
        with self._lock:
            self._snmp.close()
            self._tcp.close()
        return self.samples


def summarize(samples, events, fail_at: float | None, heal_at: float | None) -> dict:
    """Per whole second: answers, refused, reset and the most stalled SYNs seen; when the errors (refused,
    reset, stalled) began and ended; and, when answers came after the last error, how long after the fail
    (and the heal, if the errors outlasted it) the service had recovered: the end of the last sample
    interval with an error. `events` are the fail and heal as they happened ({"at", "what", ...})."""
    seconds = []
    errors = []  # (start, end) of each sample interval with an error
    for (t0, a0, f0, r0, _), (t1, a1, f1, r1, s1) in zip(samples, samples[1:]):
        k = int(t0)
        while len(seconds) <= k:
            seconds.append({"second": len(seconds), "answered": 0, "refused": 0, "reset": 0, "stalled": 0})
        row = seconds[k]
        row["answered"] += a1 - a0
        row["refused"] += f1 - f0
        row["reset"] += r1 - r0
        row["stalled"] = max(row["stalled"], s1)
        if f1 > f0 or r1 > r0 or s1:
            errors.append((t0, t1))
    out = {"events": events, "seconds": seconds, "sample_s": STEP,
           "refused": sum(r["refused"] for r in seconds), "reset": sum(r["reset"] for r in seconds),
           "first_error_s": round(errors[0][0], 2) if errors else None,
           "last_error_s": round(errors[-1][1], 2) if errors else None, "recovered": None}
    if fail_at is None or not samples:
        return out
    after = [e for e in errors if e[1] > fail_at]
    end = after[-1][1] if after else fail_at
    # recovered: the service answered again after its last error (not merely stopped being asked)
    at_end = next((a for t, a, *_ in samples if t >= end), None)
    out["recovered"] = at_end is not None and samples[-1][1] > at_end
    if out["recovered"]:
        out["recovered_after_fail_s"] = round(end - fail_at, 2)
        if heal_at is not None and end > heal_at:
            out["recovered_after_heal_s"] = round(end - heal_at, 2)
    return out
