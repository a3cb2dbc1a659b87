"""A client for failover tests: back-to-back HTTP requests to the VIP, each on a new connection (IPVS
schedules connections), from a lab node, every outcome kept with its time: who answered, or the error."""

import socket
import threading
import time

from nslab.kernel import netns


class Prober:
    """`workers` threads in the client's namespace, each sending one request after another until stop()."""

    def __init__(self, ns: str, ip: str, port: int, workers: int = 2, timeout: float = 1.0):
        self.ns, self.addr, self.timeout = ns, (ip, port), timeout
        self.outcomes = []  # (seconds since start, server name or None, error name or None)
        self.failures = []  # (seconds since start, the client port, the error) of each failed request
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        self.t0 = None
        self._local = threading.local()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self):
        self.t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list:
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.outcomes

    def _one(self):
        with netns.entered(self.ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.addr)
            except TimeoutError:
                return None, "connect-timeout"  # the SYN (or its SYN-ACK) lost: nobody answered it in time
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
            return (body or None), (None if body else "empty")
        except TimeoutError:
            return None, "answer-timeout"  # connected, but no whole answer in time
        except ConnectionRefusedError:
            return None, "refused"
        except ConnectionResetError:
            return None, "reset"
        except OSError as e:
            return None, type(e).__name__
        finally:
            try:  # the client port (0 once a refused connection has let it go)
                self._local.port = sock.getsockname()[1]
            except OSError:
                self._local.port = 0
            sock.close()

    def _run(self):
        while not self._stop.is_set():
            started = self.now()
            server, error = self._one()
            with self._lock:
                self.outcomes.append((started, server, error))
                if error:
                    self.failures.append((started, self._local.port, error))
            if error:
                time.sleep(0.02)  # a refused connection returns at once: don't spin


def answers_by(outcomes, start: float, end: float) -> dict:
    """{server: answers} of the requests sent in [start, end)."""
    out = {}
    for t, server, _ in outcomes:
        if start <= t < end and server:
            out[server] = out.get(server, 0) + 1
    return out


def errors_in(outcomes, start: float, end: float) -> list:
    return [(t, e) for t, _, e in outcomes if start <= t < end and e]
