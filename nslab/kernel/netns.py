"""Named network namespaces without helper processes: create, enter, list, find pids, delete.

pyroute2's netns.create() and IPRoute(netns=...) fork a helper per call (~27 ms a
node); doing the same from the calling thread with unshare/setns costs ~4 ms.
The layout is the one `ip netns` uses (/run/netns/NAME bind mounts), so the
namespaces are visible to `ip netns`, `ip -n` and `nsenter` too.
"""

import _thread
import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_lock = threading.Lock()
_ticket_lock = threading.Lock()
_run_dir_ready = False  # /run/netns seen as a shared mount point by this process: it stays one
_ticket = -1  # this process's way home, opened before its first visit to a namespace (see _keep_ticket)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind fd."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def path(name: str) -> str:
    """The file of the named namespace; a path (/proc/PID/ns/net, for a namespace with no name) is its own."""
    return name if name.startswith("/") else os.path.join(NETNS_RUN_DIR, name)


def taken(name: str) -> bool:
    """The name is taken in /run/netns: by a namespace, or by a leftover file (see exists)."""
    return os.path.lexists(path(name))


def exists(name: str) -> bool:
    """The name holds a mounted namespace, not just the empty file `ip netns add` and create() make before
    mounting one (a run killed in that gap, or between unmount and unlink, leaves only the file)."""
    try:
        st = os.stat(path(name))
        return st.st_dev == os.stat("/proc/self/ns/net").st_dev  # every namespace lives on the one nsfs
    except OSError:
        return False


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so other mount namespaces see namespaces
    added later. The kernel is asked (making a directory that is no mount point shared fails with EINVAL),
    not /proc/self/mountinfo: that also lists a /run/netns mount hidden under another one (a tmpfs over
    /run, as in a container), and then `ip netns add` bound /run/netns over itself, hiding every lab
    namespace under a copy that `down` could not remove. Once a process: it stays one."""
    global _run_dir_ready
    if _run_dir_ready:
        return
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    rundir = NETNS_RUN_DIR.encode()
    ret = _libc.mount(b"none", rundir, None, MS_SHARED | MS_REC, None)
    if ret != 0:
        if ctypes.get_errno() != errno.EINVAL:
            _check(ret, "mount --make-shared /run/netns")
        _check(_libc.mount(rundir, rundir, b"none", MS_BIND | MS_REC, None), "mount --bind /run/netns")
        _check(_libc.mount(b"none", rundir, None, MS_SHARED | MS_REC, None), "mount --make-shared /run/netns")
    _run_dir_ready = True


def create(name: str) -> None:
    """Create the named namespace. Raises FileExistsError if the name is taken.

    The name file exists before the namespace is mounted on it. Whatever interrupts us (a Ctrl-C while the
    worker thread unshares and mounts) first lets the worker finish, then the name goes again, so a raise
    leaves nothing behind. (A second Ctrl-C inside that cleanup, or a kill -9, is for the caller's journal:
    see NetnsExecutor and apply.)"""
    made = False
    try:
        with _lock:
            _make(name)
            made = True
    except BaseException:
        if made:  # made, then interrupted on the way out (a signal handled as the lock was released)
            delete(name)
        raise


def _make(name: str) -> None:
    """create() under its lock: a raise leaves nothing behind. The waits are bare locks, not threading.Event
    or Thread.start(): a Ctrl-C inside a threading.Condition's wait can break it ("release unlocked lock",
    seen 3 times in 120 interrupted runs), while an interrupted lock acquire just raises."""
    _ensure_run_dir()
    target = path(name)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)
    err, run = [], {"began": False, "cancelled": False, "done": False}
    gate, finished = _thread.allocate_lock(), _thread.allocate_lock()
    finished.acquire()  # the worker releases it when done

    def worker():
        # A thread of our own unshares, so the caller's thread never leaves its namespace.
        try:
            with gate:
                if run["cancelled"]:
                    return
                run["began"] = True
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
            _check(_libc.mount(src, target.encode(), b"none", MS_BIND, None), "mount")
        except OSError as e:
            err.append(e)
        finally:
            run["done"] = True
            finished.release()

    try:
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        _thread.start_new_thread(worker, ())
        finished.acquire()
        if err:
            raise err[0]
    except FileExistsError:
        raise  # someone else's, made since our look: nothing of ours to remove
    except BaseException:
        with gate:  # a worker not begun yet never will; one that has may mount yet: let it finish
            run["cancelled"] = True
            began = run["began"]
        while began and not run["done"]:
            with contextlib.suppress(BaseException):
                finished.acquire(timeout=0.05)
        delete(name)
        raise


def delete(name: str) -> None:
    """Unmount and remove the named namespace (the kernel frees it with its last user)."""
    target = path(name)
    ret = _libc.umount2(target.encode(), MNT_DETACH)
    if ret != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(ret, f"umount {target}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)


def inode(name: str) -> int:
    return os.stat(path(name)).st_ino


def is_host(name: str) -> bool:
    """True if the named namespace is really the host's own (e.g. made by `ip netns attach NAME 1`):
    nslab must then never end processes in it or delete it, whatever its mark says."""
    st = os.stat(path(name))
    for proc in ("/proc/1/ns/net", "/proc/self/ns/net"):
        try:
            host = os.stat(proc)
        except OSError:
            continue
        if (host.st_dev, host.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _keep_ticket() -> None:
    """Open an fd to the calling thread's namespace once, before the process first visits another one, and
    keep it until the process exits or execs (it is close-on-exec). That is how `down` tells a visitor (an
    nslab command reading a lab for a few ms) from a process living in the lab: a visitor holds a way back
    to a namespace outside the lab for as long as it can be inside, not only during each visit, so a visitor
    that leaves and comes back between two looks at /proc is still seen as one (procs.visiting)."""
    global _ticket
    if _ticket < 0:
        with _ticket_lock:
            if _ticket < 0:
                _ticket = os.open("/proc/thread-self/ns/net", os.O_RDONLY)


@contextlib.contextmanager
def entered(name: str):
    """Run the body with the calling thread inside the named namespace, then return.

    Sockets opened inside keep talking to that namespace after we leave, and
    /proc/sys/net opened inside shows that namespace's values. The process keeps a way home from its first
    visit on (_keep_ticket), so `down` of the lab never takes it for one of the lab's own.
    """
    _keep_ticket()
    fd = os.open(path(name), os.O_RDONLY)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(fd)
        os.close(home)


def identities(names) -> dict[tuple, str]:
    """(st_dev, st_ino) -> name of each named namespace that exists: a namespace's identity, whatever its name."""
    out = {}
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(path(n))
            out[(st.st_dev, st.st_ino)] = n
    return out


@contextlib.contextmanager
def held(names):
    """Keep the named namespaces alive for the body (an fd open on each), whatever becomes of their names;
    yields (st_dev, st_ino) -> name of each. While held, no namespace made meanwhile can take the identity of
    one of them: the kernel gives a freed namespace's inode number to the next one it makes."""
    fds = {}
    try:
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                fds[n] = os.open(path(n), os.O_RDONLY | os.O_CLOEXEC)
        yield {(st.st_dev, st.st_ino): n for n, st in ((n, os.fstat(fd)) for n, fd in fds.items())}
    finally:
        for fd in fds.values():
            os.close(fd)


def _scan():
    """(pid, namespace identity) of every process we can see."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            yield int(entry), (st.st_dev, st.st_ino)


def pids_with(wanted) -> list[int]:
    """Pids of every process whose network namespace has one of the (st_dev, st_ino) identities."""
    return [pid for pid, ident in _scan() if ident in wanted] if wanted else []


def pids_inside(names) -> dict[str, list[int]]:
    """Pids of every process whose network namespace is one of the named ones."""
    wanted = identities(names)
    found = {n: [] for n in wanted.values()}
    for pid, ident in _scan() if wanted else ():
        if ident in wanted:
            found[wanted[ident]].append(pid)
    return found


@contextlib.contextmanager
def child_enters(name: str, new_session: bool = False):
    """A preexec_fn that moves a subprocess into the named namespace before exec (and, for daemons
    that must outlive us and our Ctrl-C, into a session of its own); the fd is closed afterwards."""
    fd = os.open(path(name), os.O_RDONLY)

    def enter():
        setns(fd)
        if new_session:
            os.setsid()
    try:
        yield enter
    finally:
        os.close(fd)


def setns_path(name: str) -> None:
    """Move the calling thread into the named namespace for good (`nslab exec` before it execs)."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)
