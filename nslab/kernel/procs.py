"""Processes inside a lab: built-in apps, start-up commands, and ending everything in a namespace."""

import contextlib
import os
import select
import signal
import subprocess
import time

from .. import pyhelper, state
from ..errors import KernelError, StateError
from . import netns

APP_READY_TIMEOUT = 120  # seconds; Python inside an emulated VM starts 20-50x slower


# The app runs under a small sh that waits for it and writes its exit status next to its log, so `status`
# can say how a dead app ended (nslab itself has long exited by then). The app is the sh's only child.
# spawn() removes the old file first; set -C (O_EXCL) then never writes through anything put in its place.
_WATCHER = '"$@" & wait $!; s=$?; set -C; echo $s >"$0"'


def exit_path(log_path: str) -> str:
    return log_path.rsplit(".", 1)[0] + ".exit"


def spawn(ns: str, argv, log_path: str, ready_timeout=APP_READY_TIMEOUT, env=None) -> int:
    """Start argv inside ns in the background; wait until it writes 'ready' to its --ready-fd; return its pid.
    Its exit status goes to exit_path(log_path) when it ends."""
    rfd, wfd = os.pipe()
    exit_file = exit_path(log_path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_file)
    pid = None
    try:
        # A session of its own: apps outlive `nslab up` and are not hit by its Ctrl-C.
        with netns.child_enters(ns, new_session=True) as enter, open_log(log_path) as log:
            proc = subprocess.Popen(["/bin/sh", "-c", _WATCHER, exit_file, *argv, "--ready-fd", str(wfd)],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, pass_fds=(wfd,), preexec_fn=enter, close_fds=True,
                                    env=env)
        os.close(wfd)
        wfd = -1
        ready = b"ready" in _read_until_ready(rfd, ready_timeout)
        pid = _child_of(proc.pid)
        if not ready or not pid:
            if pid:
                signal_inside(pid, _identities([ns]), signal.SIGKILL)
            proc.kill()
            proc.wait()
            raise KernelError(f"{argv[2] if len(argv) > 2 else argv[0]} in {ns} did not start: " + tail(log_path))
        return pid
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


def _child_of(parent: int) -> int | None:
    """The pid of a process's child (the app under its watcher), or None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        return int(entry)
            except (OSError, IndexError, ValueError):
                continue
    return None


def _read_until_ready(fd: int, timeout: float) -> bytes:
    """What the watcher and the app wrote to the pipe, up to 'ready', its end, or the timeout."""
    got = b""
    deadline = time.monotonic() + timeout
    while b"ready" not in got:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 256) if ready else b""
        if not chunk:
            break
        got += chunk
    return got


def open_log(path: str):
    """The log file opened for appending, if it is a file of ours (state.open_file; StateError if not)."""
    return open(state.open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


def write_config(path: str, text: str) -> None:
    """A lab process's configuration, written beside the lab's state (state.open_file; StateError if not ours)."""
    with open(state.open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as f:
        f.write(text)


def exit_status(log_path: str) -> int | None:
    """The exit status the watcher recorded for the app (128+N: killed by signal N), or None."""
    try:
        with open(state.open_file(exit_path(log_path), os.O_RDONLY)) as f:
            text = f.read().strip()
    except (OSError, StateError):
        return None
    return int(text) if text.isdigit() else None


def tail(path, lines=5):
    """The last lines of a log, on one line (for error messages)."""
    try:
        with open(state.open_file(path, os.O_RDONLY), errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:]) or "(no output)"
    except (OSError, StateError):
        return "(no log)"


def run_in(ns: str, argv, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run of argv inside ns (keywords pass through)."""
    with netns.child_enters(ns) as enter:
        return subprocess.run(list(argv), preexec_fn=enter, **kwargs)


def run(ns: str, argv, log_path: str, timeout=60) -> int:
    """Run argv inside ns to completion (output to the log), return its exit status."""
    try:
        with open_log(log_path) as log:
            return run_in(ns, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                          timeout=timeout).returncode
    except FileNotFoundError:
        raise KernelError(f"{argv[0]}: command not found (in {ns})") from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"{' '.join(argv)} in {ns} did not finish within {timeout} s") from None


def capture(ns: str, argv, timeout=60, env=None) -> subprocess.CompletedProcess:
    """Run argv inside ns and return it with its stdout/stderr as text."""
    return run_in(ns, argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)


def _state(pid: int) -> str | None:
    """The one-letter process state from /proc (Z: zombie), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _exists(pid) -> bool:
    return _state(pid) not in (None, "Z")


def _identities(namespaces) -> set:
    """(st_dev, st_ino) of each named namespace that exists: how the kernel tells namespaces apart."""
    return set(netns.identities(namespaces))


def _inside(pid: int, identities) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in identities


def visiting(pid: int, identities) -> bool:
    """True if the process holds a way out of the namespaces: an open fd to a network namespace that is not
    one of them. Such a process is a visitor (an nslab command or test run that entered the lab for a few
    ms, from another lab or the host), not one of the lab's own: `down` must never end it. nslab opens that
    fd before a process's first visit and keeps it (netns._keep_ticket), so a visitor is seen as one whether
    it is inside at this instant or between two visits. A process started inside (an app, `nslab exec`, a
    start-up command) holds none: exec closes nslab's fds. (A visitor that goes back through a pidfd or a
    path it opens later is not seen: only nslab's own visitors are promised to be.)"""
    inodes = {ino for _, ino in identities}
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("net:[") and int(target[5:-1]) not in inodes:
            return True
    return False


def alive_in(pid: int, ns: str) -> bool:
    """True if pid is alive, not a zombie, and inside the namespace."""
    return _exists(pid) and _inside(pid, _identities([ns]))


def signal_inside(pid: int, identities, sig) -> bool:
    """Send sig to pid only if it lives in one of the namespaces and is not a visitor there (see visiting):
    a recorded pid may have been recycled by now, by an nslab command that is reading the lab. The checks
    and the signal go through one pidfd, so a process that took the pid in between is never hit. True if
    the signal was sent."""
    if pid == os.getpid():
        return False
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        # Inside first, then the fds: a visitor found inside already held its way out, and keeps it.
        if not _inside(pid, identities) or visiting(pid, identities):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def _gone(pids, timeout: float) -> list:
    """Wait up to timeout for the pids to end (reaping our own children); return those still there."""
    deadline = time.monotonic() + timeout
    while True:
        for p in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p, os.WNOHANG)
        pids = [p for p in pids if _exists(p)]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.02)


def end(pids, ns: str, grace=2.0) -> None:
    """SIGTERM those of the pids that still live in ns, then SIGKILL whatever is left after the grace period
    (each checked through a pidfd: a recorded pid may have been recycled by now)."""
    identities = _identities([ns])
    left = _gone([p for p in pids if p and signal_inside(p, identities, signal.SIGTERM)], grace)
    if left:
        _gone([p for p in left if signal_inside(p, identities, signal.SIGKILL)], grace)


def end_all(namespaces, grace=2.0, give_up=15.0) -> int:
    """End every process inside the namespaces, whoever started it (found by namespace identity, not by
    name or pid file), visitors aside (see visiting), and look again until none is left: a process may fork
    on SIGTERM, or one may enter meanwhile. SIGTERM first, SIGKILL for whatever is still there after the
    grace period. Returns how many processes were ended; raises KernelError naming those left after give_up
    seconds."""
    return end_inside(netns.identities(namespaces), grace, give_up)


def end_inside(identities: dict, grace=2.0, give_up=15.0) -> int:
    """end_all for namespaces given by identity ((st_dev, st_ino) -> name, as netns.identities gives them),
    which live on after their names are deleted while a process is inside."""
    ended, sig = set(), signal.SIGTERM
    deadline = time.monotonic() + give_up
    while identities:
        # Visitors are left alone: they go back on their own, and the namespace goes with its last user.
        pids = [p for p in netns.pids_with(identities) if p != os.getpid() and not visiting(p, identities)]
        if not pids:
            break
        if time.monotonic() > deadline:
            raise KernelError(f"{len(pids)} process(es) in {', '.join(sorted(set(identities.values())))} would not "
                              f"end (pids {', '.join(map(str, sorted(pids)))}); run the command again to retry")
        ended.update(p for p in pids if signal_inside(p, identities, sig))
        _gone(pids, grace if sig == signal.SIGTERM else 0.5)
        sig = signal.SIGKILL  # anything still there, or new since, had its chance
    return len(ended)


def _identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def lost_namespaces(session, entries, lab: str, token: str | None) -> dict:
    """/proc/PID/ns/net -> namespace identity, for each lab process the journal records (entries: (action,
    pid)) that runs in a namespace with no name that carries the lab's mark for its node: that node's
    namespace, deleted by hand (`ip netns delete`) while the process kept it alive. Nothing else finds it.
    The host's namespace, and any with a name (the lab's own, or someone else's), are never among them."""
    from ..model import names
    named = set(netns.identities(netns.list_names()))
    host = {_identity("/proc/1/ns/net"), _identity("/proc/self/ns/net")}
    out = {}
    for a, pid in entries:
        if type(a).__name__ not in LAB_PROCESSES or not isinstance(pid, int):
            continue
        where = f"/proc/{pid}/ns/net"
        ident = _identity(where)
        if ident is None or ident in named or ident in host:
            continue
        try:
            links = session.ipr(where).get_links(1)  # lo
        except Exception:  # noqa: BLE001 - gone meanwhile: nothing to end
            continue
        owner = names.parse_mark(links[0].get("ifalias") if links else None)
        if owner and (owner.lab, owner.role) == (lab, a.node) and token in (None, owner.token):
            out[where] = ident
    return out


# The actions that start a lab process of a node, with the kind of process each starts (an app: its own kind).
LAB_PROCESSES = {"StartApp": None, "StartKeepalived": "keepalived", "StartProxy": "haproxy"}


def recorded_processes(entries, ns: str, run_dir: str | None = None) -> list[dict]:
    """The lab processes the journal's (action, pid) entries record in ns (built-in apps, keepalived, haproxy): kind,
    port (None for keepalived), pid, whether it still runs, for a built-in app that died the exit status its
    watcher recorded, and the action that starts it again (a process started again is listed once, with its
    newest pid)."""
    newest = {a.identity(): (a, pid) for a, pid in entries if type(a).__name__ in LAB_PROCESSES and a.ns == ns}
    out = []
    for a, pid in newest.values():
        running = bool(pid) and alive_in(pid, ns)
        app = type(a).__name__ == "StartApp"
        status = exit_status(os.path.join(run_dir, app_log(a))) if app and run_dir and not running else None
        kind = LAB_PROCESSES[type(a).__name__] or a.kind
        out.append({"kind": kind, "port": getattr(a, "port", None), "pid": pid,
                    "running": running, "exit_status": status, "action": a})
    return out


def app_log(a) -> str:
    return f"{a.node}-{a.kind}.log"


def end_orphans(ns: str, argv) -> None:
    """End copies of this app already running in ns that no journal records (their pid was lost with the
    lab's state): they would hold its port. Matched by namespace identity and command line."""
    identities = _identities([ns])
    want = [w for w in argv if w != "-S"]  # an app started by an nslab before helpers ran with -S matches too
    for pid in netns.pids_with(identities):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                words = [w.decode(errors="replace") for w in f.read().split(b"\0")]
        except OSError:
            continue
        if [w for w in words if w != "-S"][:len(want)] == want:
            end([pid], ns)


class LabProcessExecutor:
    """A process of a node that outlives `nslab up` (`nslab fail` stops it). Undo data: its pid; done() asks
    whether the pid the journal holds still runs in the node's namespace; undo ends exactly that process."""

    lab_process = True

    @staticmethod
    def done(s, a):
        pid = s.journalled.get(a.identity())
        return bool(pid) and alive_in(pid, a.ns)

    @staticmethod
    def undo(s, a, pid):
        if pid and netns.exists(a.ns):
            end([pid], a.ns)


class AppExecutor(LabProcessExecutor):
    """A built-in app, started in the background."""

    @staticmethod
    def do(s, a):
        end_orphans(a.ns, a.app_argv())
        return spawn(a.ns, a.app_argv(), os.path.join(s.run_dir, app_log(a)), env=pyhelper.env())


PROXY_READY_TIMEOUT = 60  # seconds until haproxy listens


def _listening(ns: str, port: int) -> bool:
    with netns.entered(ns):
        with open("/proc/thread-self/net/tcp") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
    return any(r[3] == "0A" and int(r[1].rpartition(":")[2], 16) == port for r in rows if len(r) > 3)


class ProxyExecutor(LabProcessExecutor):
    """haproxy in the node, its configuration written beside the lab's state."""

    @staticmethod
    def do(s, a):
        cfg = os.path.join(s.run_dir, f"{a.node}-haproxy.cfg")
        write_config(cfg, a.config)
        log_path = os.path.join(s.run_dir, f"{a.node}-haproxy.log")
        try:
            # A session of its own: it outlives `nslab up` and is not hit by its Ctrl-C.
            with netns.child_enters(a.ns, new_session=True) as enter, open_log(log_path) as log:
                proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, preexec_fn=enter, close_fds=True)
        except FileNotFoundError:
            raise KernelError("haproxy: command not found (apt-get install haproxy; scripts/install.sh does)") from None
        deadline = time.monotonic() + PROXY_READY_TIMEOUT
        while not _listening(a.ns, a.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                end([proc.pid], a.ns)
                raise KernelError(f"haproxy on {a.node} did not start: " + tail(log_path))
            time.sleep(0.1)
        return proc.pid


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
