"""Micro-benchmark: requests/s of nslab.apps.http vs http.server.ThreadingHTTPServer, on loopback.

    python3 bench/apps_throughput.py [--scale 1.0]

Both servers answer the same body; the same client (nslab.verify.traffic, run as
a subprocess like nslab runs it in a lab, one fresh connection per request) drives
each at concurrency 1, 50 and 200. Client and server share the machine's CPUs, and
on a small box the client saturates first, so requests/s is a floor for both
servers; the server's own CPU time per request (from /proc/PID/stat) is what
tells the serving models apart, and the ratio is printed for both.
Bounded: every run has a fixed request count and a hard timeout (< 30 s in all
on a 2-CPU box at scale 1).
"""

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
LOOPBACK = "127.0.0.1"
LEVELS = [(1, 1000), (50, 4000), (200, 4000)]   # (concurrency, requests)

# The baseline: the stdlib's threaded server, same body and headers, same backlog and
# ready-fd contract, so the only difference is the serving model.
BASELINE = r"""
import os, sys, http.server
name, port, fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = (name + "\n").encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", name)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
srv = S(("127.0.0.1", port), H)
os.write(fd, b"ready\n"); os.close(fd)
import signal; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
srv.serve_forever()
"""


def free_port():
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def start(argv_without_fd):
    """Start a server, wait on its ready pipe; returns the Popen."""
    r, w = os.pipe()
    proc = subprocess.Popen(argv_without_fd(w), pass_fds=(w,), env=ENV, cwd=ROOT)
    os.close(w)
    ready = select.select([r], [], [], 20)[0] and os.read(r, 16)
    os.close(r)
    if ready != b"ready\n":
        proc.kill()
        sys.exit("server never became ready")
    return proc


def cpu_seconds(pid):
    """utime + stime of a process so far, from /proc (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(proc, port, concurrency, count):
    cpu_before = cpu_seconds(proc.pid)
    done = subprocess.run(
        [sys.executable, "-m", "nslab.verify.traffic", "http", "--target", f"{LOOPBACK}:{port}",
         "--count", str(count), "--concurrency", str(concurrency), "--timeout", "5"],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout)
    cpu_us = (cpu_seconds(proc.pid) - cpu_before) / max(1, result["ok"]) * 1e6
    return result["ok"] / result["elapsed_s"], cpu_us, result["failed"], result["latency_ms"]["p99"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count")
    scale = parser.parse_args().scale
    servers = {
        "nslab.apps.http": lambda port: lambda fd: [sys.executable, "-m", "nslab.apps.http", "--name", "bench",
                                                    "--port", str(port), "--bind", LOOPBACK, "--ready-fd", str(fd)],
        "ThreadingHTTPServer": lambda port: lambda fd: [sys.executable, "-c", BASELINE, "bench", str(port), str(fd)],
    }
    rates = {}
    for label, argv in servers.items():
        port = free_port()
        proc = start(argv(port))
        try:
            drive(proc, port, 10, 100)   # warm-up: page caches, first imports
            for concurrency, count in LEVELS:
                rates[label, concurrency] = drive(proc, port, concurrency, max(1, int(count * scale)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    print(f"{'':>11} {'------ nslab.apps.http ------':>29} {'---- ThreadingHTTPServer ----':>29} {'-- ratio --':>14}")
    print(f"{'concurrency':>11} {'req/s':>7} {'p99 ms':>8} {'CPU us/req':>12} {'req/s':>7} {'p99 ms':>8} "
          f"{'CPU us/req':>12} {'req/s':>6} {'CPU':>6}")
    for concurrency, _ in LEVELS:
        ours, ours_cpu, ours_failed, ours_p99 = rates["nslab.apps.http", concurrency]
        base, base_cpu, base_failed, base_p99 = rates["ThreadingHTTPServer", concurrency]
        note = f"  (failed: nslab {ours_failed}, baseline {base_failed})" if ours_failed or base_failed else ""
        # a few requests can take less than one clock tick of CPU (the small --scale CI runs)
        cpu_ratio = f"{base_cpu / ours_cpu:>5.2f}x" if ours_cpu else "  n/a "
        print(f"{concurrency:>11} {ours:>7.0f} {ours_p99 or 0:>8.2f} {ours_cpu:>12.0f} {base:>7.0f} "
              f"{base_p99 or 0:>8.2f} {base_cpu:>12.0f} {ours / base:>5.2f}x {cpu_ratio}{note}")
    print("ratio: req/s nslab / baseline; CPU: baseline CPU per request / nslab's (higher = nslab cheaper)")


if __name__ == "__main__":
    main()
