"""keepalived as a lab process: its config written, started in a director's namespace, ended exactly."""

import os
import stat
import subprocess
import time

from ..errors import EnvironmentMissing, KernelError
from . import netns, procs

READY_TIMEOUT = 120  # seconds; keepalived parses and forks in well under one, but an emulated VM is slow
STOP_GRACE = 10  # seconds for keepalived to take its VIPs and IPVS entries away on SIGTERM, slow VM included


def read_pids(paths) -> list[int]:
    """The pids keepalived's pid files (parent, vrrp, checkers) name, of those that exist."""
    out = []
    for path in paths:
        try:  # never through a symlink, and only a file of ours: a pid we signal must be one keepalived wrote
            with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)) as f:
                if os.fstat(f.fileno()).st_uid == os.geteuid() and stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    out.append(int(f.read().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _expected_children(action) -> list[str]:
    """The pid files keepalived writes for what its config has: vrrp for a pair, checkers for a service."""
    _, vrrp, checkers = action.pids
    return [vrrp] * ("vrrp_instance" in action.config) + [checkers] * ("virtual_server" in action.config)


def start(run_dir: str, action) -> int:
    """Write the config and start keepalived in the node's namespace; wait until its children run.
    Raises EnvironmentMissing (no keepalived), KernelError (it did not start)."""
    os.makedirs(action.notify_dir, mode=0o700, exist_ok=True)
    # A pid file of an earlier run would look like readiness, and its notify files like this run's states.
    stale = [os.path.join(action.notify_dir, f) for f in os.listdir(action.notify_dir)
             if f.startswith(f"{action.node}.")]
    for path in [*action.pids, *stale]:
        if os.path.exists(path):
            os.unlink(path)
    procs.write_config(action.conf, action.config)
    log_path = os.path.join(run_dir, f"{action.node}-keepalived.log")
    try:
        # A session of its own: it outlives `nslab up` and is not hit by its Ctrl-C.
        with netns.child_enters(action.ns, new_session=True) as enter, procs.open_log(log_path) as log:
            proc = subprocess.Popen(action.keepalived_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=enter, close_fds=True)
    except FileNotFoundError:
        raise EnvironmentMissing("keepalived is not installed: run scripts/install.sh "
                                 "(or apt-get install keepalived)") from None
    deadline = time.monotonic() + READY_TIMEOUT
    wanted = _expected_children(action)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KernelError(f"keepalived in {action.ns} exited with {proc.returncode}: {procs.tail(log_path)}")
        if all(os.path.exists(p) for p in wanted) and len(read_pids(action.pids)) == len(wanted) + 1:
            return proc.pid
        time.sleep(0.05)
    procs.end([proc.pid, *read_pids(action.pids)], action.ns, grace=STOP_GRACE)
    raise KernelError(f"keepalived in {action.ns} did not start within {READY_TIMEOUT} s: {procs.tail(log_path)}")


class KeepalivedExecutor(procs.LabProcessExecutor):
    """A lab process whose undo data is the parent's pid; undo ends it (SIGTERM: keepalived removes its VIPs
    and IPVS entries and ends its children) and whatever child the pid files still name, then removes its
    config and pid files."""

    @staticmethod
    def do(s, a):
        return start(s.run_dir, a)

    @staticmethod
    def undo(s, a, pid):
        if netns.exists(a.ns):
            procs.end([pid, *read_pids(a.pids)], a.ns, grace=STOP_GRACE)
        for path in (a.conf, *a.pids):
            if os.path.exists(path):
                os.unlink(path)


def _newest(paths: dict) -> tuple:
    """(state, mtime) of the most recently touched of {state: path}; (None, None) if none exists."""
    best = (None, None)
    for state, path in paths.items():
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if best[1] is None or mtime > best[1]:
            best = (state, mtime)
    return best


def status(session, rlab, svc) -> list[dict]:
    """Per director of a keepalived service: whether keepalived runs (and since when), its VRRP state and
    since when (from the files its notify commands touch), whether it holds the VIP (the kernel's
    addresses), and per real server (and sorry server) its health as that director's checker judged it,
    since when, and its IPVS weight now (None: not in the table)."""
    from . import ipvs, observe
    from ..plan import keepalived as conf
    out = []
    for director in svc.directors:
        ns, lab = rlab.ns(director), rlab.name
        parent_file = conf.pid_path(lab, director, "parent")
        parent = next(iter(read_pids([parent_file])), None)
        running = bool(parent) and netns.exists(ns) and procs.alive_in(parent, ns)
        started = _newest({"started": parent_file})[1] if running else None
        vrrp = next((v for v in svc.vrrp if v.director == director), None)
        iface = vrrp.interface if vrrp else svc.vip_interface
        entry = {"node": director, "keepalived": running, "started": started, "vrrp": None, "vrrp_since": None,
                 "holds_vip": False, "real_servers": []}
        if not netns.exists(ns):
            out.append(entry)
            continue
        entry["holds_vip"] = any(a.split("/")[0] == str(svc.vip) for i in observe.interfaces(session, ns)
                                 if i["name"] == iface for a in i["addresses"])
        if vrrp:
            state, since = _newest({s: conf.vrrp_file(lab, director, svc.name, s) for s in conf.VRRP_STATES})
            entry["vrrp"], entry["vrrp_since"] = (state or "init", since or started) if running else ("stopped", None)
        table = {}
        for found in ipvs.read_services(session, ns):
            if (found["vip"], found["port"], found["protocol"]) == (str(svc.vip), svc.port, svc.protocol):
                table = {(d["address"], d["port"]): d["weight"] for d in found["real_servers"]}
        for rs in svc.backends:
            sorry = rs is svc.sorry
            state, since = (None, None) if sorry else _newest(
                {s: conf.rs_file(lab, director, svc.name, rs.node, s) for s in conf.RS_STATES})
            healthy = None if sorry or not svc.health else (state or "up") == "up"  # keepalived starts it up
            entry["real_servers"].append({
                "node": rs.node, "address": str(rs.address), "port": rs.port, "sorry": sorry, "healthy": healthy,
                "since": (since or started) if healthy is not None else None,
                "weight": table.get((str(rs.address), rs.port))})
        out.append(entry)
    return out
