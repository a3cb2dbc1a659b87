"""HTTP load with wrk (Debian's `wrk`) inside a lab node: a request count or a duration, a new
connection per request or kept-alive ones, answers counted per server, one result dict.

wrk has no request count and prints no per-server tally; the Lua script beside this module
(wrk_report.lua) adds both: each thread stops issuing requests at its share of the count (or at
the end of the duration), waits for the answers in flight, stops, and says so on stderr; then
wrk is ended with SIGINT (its main thread sleeps for the whole -d otherwise) and its done()
prints one JSON line. Connections that were open but idle when the threads stopped carried no
request; `before_stop` runs while they are still open (api.load reads the IPVS connection
table there, to tell them from the connections that carried requests).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import time

from ..errors import EnvironmentMissing, UsageError
from ..kernel import netns

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_report.lua")
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")


def available() -> bool:
    return shutil.which("wrk") is not None


def argv(url: str, count: int | None, duration: float | None, connections: int, threads: int,
         keepalive: bool, timeout: float, progress: bool) -> list[str]:
    """The wrk command line; -d is only a ceiling: the script ends the run."""
    per_thread = connections // threads
    if count:
        ceiling = 30 + math.ceil(count / connections * timeout) + 2 * math.ceil(timeout)
    else:
        ceiling = math.ceil(duration) + 30 + 2 * math.ceil(timeout)
    out = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{ceiling}s",
           "--timeout", f"{max(1, math.ceil(timeout))}s", "-s", SCRIPT]
    if not keepalive:
        out += ["-H", "Connection: close"]
    return out + [url, str(count or 0), str(duration or 0), "1" if progress else "0", str(threads), str(per_thread)]


def shape(count: int | None, duration: float | None, connections: int, threads: int):
    """(connections, threads) wrk can run: at least one connection per thread, no more connections
    than requests, and every thread the same number (wrk gives each connections // threads)."""
    if (count is None) == (duration is None):
        raise UsageError("give a request count or a duration, not both")
    if count is not None and count < 1:
        raise UsageError("the count must be at least 1")
    if duration is not None and not duration > 0:
        raise UsageError("the duration must be positive")
    if connections < 1 or threads < 1:
        raise UsageError("the connections and threads must be at least 1")
    if count is not None:
        connections = min(connections, count)
    threads = min(threads, connections)
    return connections - connections % threads, threads


def run(ns: str, ip: str, port: int, count: int | None = None, duration: float | None = None,
        connections: int = 50, threads: int = 2, keepalive: bool = False, timeout: float = 3.0,
        progress=None, before_stop=None, probe: bool = True, started=None) -> dict:
    """Run wrk inside namespace ns against http://ip:port/; the result dict (see result()).

    progress(answered, elapsed_s) is called as answers come in; before_stop() once every thread is
    done, while wrk still holds its idle connections. probe=False leaves out wrk's test connection to
    the target before the run (to a VIP, the director would count it). started(t0) is called with the
    time.monotonic() wrk was started at. Raises EnvironmentMissing without wrk."""
    if not available():
        raise EnvironmentMissing("HTTP load needs wrk: apt-get install wrk (scripts/install.sh installs it)")
    connections, threads = shape(count, duration, connections, threads)
    cmd = argv(f"http://{ip}:{port}/", count, duration, connections, threads, keepalive, timeout, progress is not None)
    started_at = time.monotonic()
    answered, done, other = {}, set(), []
    env = dict(os.environ, NSLAB_WRK_NO_PROBE="0" if probe else "1")
    with netns.child_enters(ns) as enter:
        proc = subprocess.Popen(cmd, preexec_fn=enter, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    try:
        if started:
            started(started_at)
        for line in proc.stderr:
            word, _, rest = line.partition(" ")
            if word in ("nslab-progress", "nslab-done"):
                tid, n = (int(x) for x in rest.split())
                answered[tid] = n
                if progress:
                    progress(sum(answered.values()), time.monotonic() - started_at)
                if word == "nslab-done":
                    done.add(tid)
                    if len(done) == threads:
                        try:
                            if before_stop:
                                before_stop()
                        finally:
                            proc.send_signal(signal.SIGINT)
            else:
                other.append(line.rstrip())
        stdout = proc.stdout.read()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return result(stdout, other, proc.returncode, ip, port, count, duration, connections, threads, keepalive,
                  stopped_by_script=len(done) == threads)


def result(stdout: str, stderr_lines, returncode: int, ip, port, count, duration, connections, threads,
           keepalive, stopped_by_script=True) -> dict:
    """The result dict, shaped like the Python generator's (kind, target, sent, ok, failed, errors,
    by_server, elapsed_s, rate_per_s, latency_ms) plus wrk's own: engine, mode, connections,
    threads, requests, errors by kind (all five), and duration_s for a duration run."""
    base = {"engine": "wrk", "kind": "http", "mode": "keepalive" if keepalive else "close",
            "target": f"{ip}:{port}", "connections": connections, "threads": threads}
    line = next((x for x in reversed(stdout.splitlines()) if x.startswith('{"nslab_wrk"')), None)
    if line is None:
        why = " | ".join(x for x in stderr_lines if x)[-300:] or f"wrk exited {returncode} without a result"
        return {**base, "sent": count or 0, "ok": 0, "failed": count or 0, "errors": {}, "by_server": {},
                "error": f"wrk: {why}"}
    out = json.loads(line)
    errors = {k: int(out["errors"].get(k, 0)) for k in ERROR_KINDS}
    ok = int(out["ok"])
    elapsed = float(out["duration_s"])
    res = {**base, "sent": count if count else int(out["answered"]) + errors["connect"] + errors["read"]
           + errors["write"], "ok": ok, "failed": sum(errors.values()), "errors": errors,
           "by_server": dict(sorted(out["by_server"].items())), "requests": int(out["requests"]),
           "elapsed_s": round(elapsed, 4), "rate_per_s": _rate(out, ok, elapsed, duration),
           "latency_ms": out["latency_ms"] or {}, "bytes": int(out["bytes"])}
    if duration:
        res["duration_s"] = duration
    if not stopped_by_script:
        res["error"] = (f"not every wrk thread finished within its ceiling (answered {out['answered']} of "
                        f"{count}): requests were lost" if count else "wrk ran into its ceiling")
    return res


def _rate(out: dict, ok: int, elapsed: float, duration) -> float | None:
    """Answers per second: of a count, over the whole run; of a duration, those answered within it, over
    it (as plain wrk counts), so the drain at the end (no new requests, the last answers coming in)
    doesn't count against the rate."""
    if duration:
        return round(int(out.get("in_time", ok)) / duration, 1)
    return round(ok / elapsed, 1) if elapsed > 0 else None
