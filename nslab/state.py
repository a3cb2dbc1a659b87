"""/run/nslab/<lab>/: what a lab is (state.json: its topology text and source, its mark token), the journal of
every step applied to the kernel (what exists, app pids, what to undo), and a lock that names its holder.

nslab runs as root, so nothing here is followed or trusted blindly: /run/nslab and each lab's directory must
be real directories owned by us (made 0700); a file is opened with O_NOFOLLOW and used only if it is a regular
file of ours. Anything else in their place is refused with a StateError naming it, never followed.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat

from .errors import LabBusy, StateError
from .model.names import LAB_NAME, RUN_DIR, check_name

STATE = "state.json"
JOURNAL = "journal"
LOCK = ".lock"


def lab_dir(lab: str) -> str:
    """The lab's state directory; refuses anything but a valid lab name (this path gets rmtree'd)."""
    return os.path.join(RUN_DIR, check_name(lab))


def _refuse(path: str, what: str) -> StateError:
    return StateError(f"{path} {what}; nslab refuses to use it (it could point anywhere on this machine). "
                      f"Remove it (as root) and run the command again")


def _open_dir(path: str, create: bool) -> None:
    """Check that path is a real directory of ours, never through a symlink; tighten it to 0700."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(path, "is a symbolic link" if os.path.islink(path) else "is not a directory") from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise _refuse(path, f"belongs to uid {st.st_uid}, not to uid {os.geteuid()} (nslab's)")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def open_file(path: str, flags: int, mode: int = 0o600) -> int:
    """An fd of path, opened without following a symlink, if it is a regular file of ours with one link
    (StateError if not): the lab's state, journal and lock, and the logs and configs of its lab processes.
    A FIFO or device in its place is refused without being opened, and O_NONBLOCK keeps one that appears in
    between from blocking the open (a FIFO with no writer did, forever). O_TRUNC waits for the checks: a hard
    link to a file elsewhere must not be emptied before it is refused."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(path).st_mode) and not stat.S_ISLNK(os.lstat(path).st_mode):
            raise _refuse(path, "is not a regular file")
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _refuse(path, "is a symbolic link") from None
        if e.errno == errno.EISDIR:
            raise _refuse(path, "is a directory") from None
        if e.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise _refuse(path, "is not a regular file") from None
        raise
    st = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(st.st_mode) else
               f"belongs to uid {st.st_uid}, not to uid {os.geteuid()} (nslab's)" if st.st_uid != os.geteuid()
               else f"has {st.st_nlink} hard links (a file nslab made has one; writing it would change another)"
               if st.st_nlink != 1 else None)
    if problem:
        os.close(fd)
        raise _refuse(path, problem)
    if flags & os.O_TRUNC:
        os.ftruncate(fd, 0)
    return fd


def read_file(path: str) -> bytes:
    """The bytes of a state file (see open_file); FileNotFoundError if there is none."""
    fd = open_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def labs() -> list[str]:
    """Labs with a state or a journal (an `up` killed before its first state still has the latter).
    Raises StateError if /run/nslab is unsafe."""
    if not os.path.lexists(RUN_DIR):
        return []
    _open_dir(RUN_DIR, create=False)
    entries = os.listdir(RUN_DIR)
    out = []
    for d in entries:
        path = os.path.join(RUN_DIR, d)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode) and any(
                    stat.S_ISREG(os.lstat(os.path.join(path, f)).st_mode) for f in (STATE, JOURNAL)
                    if os.path.lexists(os.path.join(path, f))):
                out.append(d)
    return sorted(out)


def ensure_dir(lab: str) -> str:
    """The lab's state directory, made (0700, ours) if missing; StateError if it or /run/nslab is unsafe."""
    path = lab_dir(lab)
    _open_dir(RUN_DIR, create=True)
    _open_dir(path, create=True)
    return path


def check_dirs(lab: str) -> bool:
    """Whether the lab has a state directory; StateError if it or /run/nslab is unsafe."""
    path = lab_dir(lab)
    for d in (RUN_DIR, path):
        if not os.path.lexists(d):
            return False
        _open_dir(d, create=False)
    return True


def _valid(data) -> str | None:
    """What is wrong with a state's content, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, kind in (("lab", str), ("topology", str), ("namespaces", list), ("updated", (int, float))):
        if not isinstance(data.get(key), kind):
            return f"'{key}' missing or not a {kind.__name__ if isinstance(kind, type) else 'number'}"
    if not isinstance(data.get("source"), (str, type(None))) or not isinstance(data.get("token", ""), str):
        return "'source' or 'token' is not a string"
    if not all(isinstance(n, str) for n in data["namespaces"]):
        return "'namespaces' holds something other than names"
    if not re.fullmatch("[0-9a-f]*", data.get("token", "")):  # new_token()'s hex; '' in a lab from before tokens
        return "'token' is not one nslab makes"
    if not isinstance(data.get("faults", []), list) or not all(_fault(f) for f in data.get("faults", [])):
        return "'faults' is not a list of the records `nslab fail` writes"
    return None


def _fault(f) -> bool:
    """Whether f is a fault record as nslab/faults.py writes it: status, fail and heal read every field."""
    if not isinstance(f, dict):
        return False
    processes, links = f.get("processes"), f.get("links")
    return (f.get("kind") in ("processes", "link", "node")
            and isinstance(f.get("node"), str) and LAB_NAME.fullmatch(f["node"]) is not None
            and isinstance(f.get("iface"), (str, type(None))) and type(f.get("since")) in (int, float)
            and 0 <= f["since"] < 2 ** 33 and isinstance(links, dict)
            and all(isinstance(r, list) for r in links.values()) and isinstance(processes, list)
            and all(isinstance(p, dict) and isinstance(p.get("action"), dict)
                    and isinstance(p["action"].get("fields"), dict) and type(p.get("pid")) is int for p in processes))


def load(lab: str) -> dict | None:
    """The lab's state, or None if it has none. Raises StateError for one that is unsafe or not what nslab
    wrote (garbage, truncated, hand-edited): `down` still works without it."""
    if not check_dirs(lab):
        return None
    path = os.path.join(lab_dir(lab), STATE)
    try:
        data = json.loads(read_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as e:  # bad UTF-8, bad JSON, or JSON nested past the parser's depth
        problem = f"unreadable ({type(e).__name__})"
    else:
        problem = _valid(data)
        if problem is None:
            return data
    raise StateError(f"{path}: not a state nslab wrote: {problem}. `nslab down {lab}` still removes the lab "
                     "(from its journal and the marks on its namespaces); `nslab up` then builds it again")


def save(lab: str, data: dict) -> None:
    """Write atomically, so a crash leaves the old state or the new one, never half."""
    path = ensure_dir(lab)
    import tempfile  # here: validate and plan import this module and never write
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".state-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    try:
        os.replace(tmp, os.path.join(path, STATE))  # replaces a symlink itself, never its target
    except IsADirectoryError:
        os.unlink(tmp)
        raise _refuse(os.path.join(path, STATE), "is a directory") from None


def faults(lab: str) -> list[dict]:
    """The faults `nslab fail` made and `heal` has not undone (see nslab/faults.py); `up` drops them with the
    state it rewrites, since it brings the lab back to its file."""
    return (load(lab) or {}).get("faults", [])


def set_faults(lab: str, records: list[dict]) -> None:
    data = load(lab) or {}
    data["faults"] = records
    save(lab, data)


def remove(lab: str) -> None:
    """Delete the lab's state directory (never through a symlink), and /run/nslab if no other lab is left."""
    if check_dirs(lab):
        shutil.rmtree(lab_dir(lab), ignore_errors=True)  # rmtree unlinks symlinks inside, never follows them
    with contextlib.suppress(OSError):
        os.rmdir(RUN_DIR)


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it: 'pid N (command)', if that process still runs."""
    try:
        pid, _, cmd = os.pread(fd, 4096, 0).decode(errors="replace").partition("\n")
        if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            return f"pid {pid} ({cmd.strip() or '?'})"
    except OSError:
        pass
    return "another nslab run"


def _command() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            words = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    return " ".join(" ".join(w.decode(errors="replace").split()) for w in words)[:300]  # one line


@contextlib.contextmanager
def locked(lab: str, wait: bool = False):
    """One up/down of a lab at a time. A second one raises LabBusy at once, naming the holder's pid and
    command; with wait=True it waits for the lock instead."""
    while True:
        path = os.path.join(ensure_dir(lab), LOCK)
        fd = open_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LabBusy(f"lab '{lab}' is busy: {holder} is working on it. Try again when it is done, or "
                          "add --wait to wait for it") from None
        except BaseException:
            os.close(fd)
            raise
        # A down that held the lock removes the lab's directory with it: then lock the file there now.
        with contextlib.suppress(FileNotFoundError):
            if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) == (os.lstat(path).st_ino, os.lstat(path).st_dev):
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_command()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class Journal:
    """/run/nslab/<lab>/journal: every step applied to the kernel, one JSON line each, written through (to
    tmpfs) before `up` moves on, so `down` and the next `up` can undo exactly what was done, even after a
    kill -9. A line is one of

        {"do": ACTION, "undo": DATA}   a step done; DATA is what its executor needs to undo it
        {"doing": ACTION}              a step begun, journalled first (creating a namespace): if no "do"
                                       follows, the run died inside it and it is pending()
        {"undone": ACTION}             the latest "do" of that action (or its pending "doing") was undone

    where ACTION is Action.record(): {"kind": "AddRoute", "fields": {"ns": ..., "to": ..., ...}}. Steps are
    matched by Action.identity(); one object changed in place has several "do" lines, undone newest first.
    """

    def __init__(self, lab: str):
        self.lab = lab
        self.path = os.path.join(lab_dir(lab), JOURNAL)
        self._fd = None
        self._live = {}  # line number -> (action, undo data, line text): the steps not undone, in order
        self._by_identity = {}  # identity -> line numbers of its live steps
        self._pending = {}  # identity -> action begun and never finished
        self._lines = 0
        try:
            data = read_file(self.path) if check_dirs(lab) else b""
        except FileNotFoundError:
            data = b""
        for raw in data.splitlines(keepends=True):
            self._read(raw.decode(errors="replace"))

    def _read(self, text: str) -> None:
        from .plan.actions import Action  # here: validate imports this module and reads no journal
        self._lines += 1
        try:
            line = json.loads(text)
            action = Action.rebuild(line.get("do") or line.get("doing") or line["undone"])
            action.identity()
            if not self._ours(action):
                return
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            # The last line of a run killed while writing it, a kind this version doesn't know, or a line
            # nslab never wrote: what it made is left to the mark-based sweep of the lab's namespaces.
            return
        if "do" in line:
            self._add(action, line.get("undo"), text)
        elif "doing" in line:
            self._pending[action.identity()] = action
        else:
            self._drop(action.identity())

    def _ours(self, action) -> bool:
        """Only steps inside this lab's own namespaces are ever undone, whatever a line says."""
        return all(isinstance(ns, str) and ns.startswith(self.lab + "-")
                   for ns in (action.ns, getattr(action, "peer_ns", action.ns)))

    def _add(self, action, undo, text):
        ident = action.identity()
        self._pending.pop(ident, None)
        self._live[self._lines] = (action, undo, text)
        self._by_identity.setdefault(ident, []).append(self._lines)

    def _drop(self, ident):
        if self._pending.pop(ident, None) is None and self._by_identity.get(ident):
            del self._live[self._by_identity[ident].pop()]

    def steps(self) -> list[tuple]:
        """(action, undo data) of every step done and not undone, oldest first."""
        return [(a, u) for a, u, _ in self._live.values()]

    def pending(self) -> list:
        """Actions a run began (journalled first) and never finished: it was killed inside them."""
        return list(self._pending.values())

    def latest(self) -> dict:
        """identity -> undo data of its newest live step (an app's pid)."""
        return {ident: self._live[lines[-1]][1] for ident, lines in self._by_identity.items() if lines}

    def _write(self, texts: list[str]) -> None:
        if self._fd is None:
            self._fd = open_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(self._fd, "".join(texts).encode())

    def done(self, steps) -> None:
        """Journal (action, undo data) steps just applied, in one write."""
        texts = []
        for action, undo in steps:
            texts.append(json.dumps({"do": action.record(), "undo": undo}, separators=(",", ":")) + "\n")
            self._lines += 1
            self._add(action, undo, texts[-1])
        self._write(texts)

    def doing(self, action) -> None:
        """Journal a step about to be applied (see the class doc)."""
        self._lines += 1
        self._pending[action.identity()] = action
        self._write([json.dumps({"doing": action.record()}, separators=(",", ":")) + "\n"])

    def undone(self, actions) -> None:
        """Journal that the newest live step of each action (or its pending start) was undone, in one write."""
        texts = []
        for action in actions:
            self._lines += 1
            self._drop(action.identity())
            texts.append(json.dumps({"undone": action.record()}, separators=(",", ":")) + "\n")
        if texts:
            self._write(texts)

    def compact(self) -> None:
        """Rewrite the journal with only its live steps (atomically), if it holds any other line."""
        if self._lines == len(self._live) or self._pending:
            return
        self.close()
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".journal-")
        with os.fdopen(fd, "w") as f:
            f.write("".join(text for _, _, text in self._live.values()))
        os.replace(tmp, self.path)
        self._live = {n: step for n, step in enumerate(self._live.values(), 1)}
        self._by_identity = {}
        for n, (action, _, _) in self._live.items():
            self._by_identity.setdefault(action.identity(), []).append(n)
        self._lines = len(self._live)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
