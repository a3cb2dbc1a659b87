"""Processes inside a lab: built-in apps, start-up commands, and ending everything in a namespace."""

import os
import select
import signal
import subprocess
import time

from ..errors import KernelError
from . import netns

APP_READY_TIMEOUT = 120  # seconds; Python inside an emulated VM starts 20-50x slower


def spawn(ns: str, argv, log_path: str, ready_timeout=APP_READY_TIMEOUT) -> int:
    """Start argv inside ns in the background; wait until it writes 'ready' to its --ready-fd."""
    rfd, wfd = os.pipe()
    try:
        # A session of its own: apps outlive `nslab up` and are not hit by its Ctrl-C.
        with netns.child_enters(ns, new_session=True) as enter, open(log_path, "ab") as log:
            proc = subprocess.Popen([*argv, "--ready-fd", str(wfd)], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, pass_fds=(wfd,), preexec_fn=enter, close_fds=True)
        os.close(wfd)
        wfd = -1
        ready, _, _ = select.select([rfd], [], [], ready_timeout)
        got = os.read(rfd, 64) if ready else b""
        if b"ready" not in got:
            proc.kill()
            proc.wait()
            raise KernelError(f"{argv[2] if len(argv) > 2 else argv[0]} in {ns} did not start: " + tail(log_path))
        return proc.pid
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


def tail(path, lines=5):
    """The last lines of a log, on one line (for error messages)."""
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


def run_in(ns: str, argv, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run of argv inside ns (keywords pass through)."""
    with netns.child_enters(ns) as enter:
        return subprocess.run(list(argv), preexec_fn=enter, **kwargs)


def run(ns: str, argv, log_path: str, timeout=60) -> int:
    """Run argv inside ns to completion (output to the log), return its exit status."""
    try:
        with open(log_path, "ab") as log:
            return run_in(ns, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                          timeout=timeout).returncode
    except FileNotFoundError:
        raise KernelError(f"{argv[0]}: command not found (in {ns})") from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"{' '.join(argv)} in {ns} did not finish within {timeout} s") from None


def capture(ns: str, argv, timeout=60) -> subprocess.CompletedProcess:
    """Run argv inside ns and return it with its stdout/stderr as text."""
    return run_in(ns, argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _state(pid: int) -> str | None:
    """The one-letter process state from /proc (Z: zombie), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _exists(pid) -> bool:
    return _state(pid) not in (None, "Z")


def alive_in(pid: int, ns: str) -> bool:
    """True if pid is alive, not a zombie, and inside the namespace."""
    try:
        return _exists(pid) and os.stat(f"/proc/{pid}/ns/net").st_ino == netns.inode(ns)
    except OSError:
        return False


def end(pids, grace=2.0) -> None:
    """SIGTERM the exact pids, then SIGKILL whatever is left after the grace period."""
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            _reap(pids)
            pids = [p for p in pids if _exists(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _reap(pids):
    for p in pids:
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass


def end_all(namespaces) -> int:
    """End every process inside the namespaces (found by namespace identity, not by name)."""
    pids = [p for found in netns.pids_inside(namespaces).values() for p in found]
    end(pids)
    return len(pids)


LAB_PROCESSES = ("StartApp", "StartKeepalived")  # the actions that start a lab process of a node


def recorded_processes(entries, ns: str) -> list[dict]:
    """The lab processes the journal's (action, pid) entries record in ns (built-in apps, keepalived): kind,
    port (None for keepalived), pid, whether it still runs, and the action that starts it again (a process
    started again is listed once, with its newest pid)."""
    newest = {a.identity(): (a, pid) for a, pid in entries if type(a).__name__ in LAB_PROCESSES and a.ns == ns}
    return [{"kind": getattr(a, "kind", "keepalived"), "port": getattr(a, "port", None), "pid": pid,
             "running": bool(pid) and alive_in(pid, ns), "action": a} for a, pid in newest.values()]


class AppExecutor:
    """A built-in app, started in the background. Undo data: its pid (undo ends exactly that process, if it
    still runs in that namespace); done() asks whether the pid the journal holds still runs."""

    lab_process = True

    @staticmethod
    def done(s, a):
        pid = s.journalled.get(a.identity())
        return bool(pid) and alive_in(pid, a.ns)

    @staticmethod
    def do(s, a):
        return spawn(a.ns, a.app_argv(), os.path.join(s.run_dir, f"{a.node}-{a.kind}.log"))

    @staticmethod
    def undo(s, a, pid):
        if pid and netns.exists(a.ns) and alive_in(pid, a.ns):
            end([pid])


class ExecExecutor:
    """A start-up command: run once, so done() means the journal holds it. Undo data: None; undo does
    nothing (a command cannot be unrun; what it made goes with its namespace)."""

    @staticmethod
    def done(s, a):
        return a.identity() in s.journalled

    @staticmethod
    def do(s, a):
        log = os.path.join(s.run_dir, f"{a.node}-exec.log")
        status = run(a.ns, a.argv, log)
        if status != 0:
            raise KernelError(f"nodes.{a.node}.exec: {' '.join(a.argv)} exited with {status}: {tail(log)}")

    @staticmethod
    def undo(s, a, undo_data):
        pass
