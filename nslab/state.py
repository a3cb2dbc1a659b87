"""/run/nslab/<lab>/: what a lab is (state.json: its topology text and source), the journal of every step
applied to the kernel (what exists, app pids, what to undo), and a lock."""

import contextlib
import fcntl
import json
import os
import shutil

from .model.names import RUN_DIR, check_name


def lab_dir(lab: str) -> str:
    """The lab's state directory; refuses anything but a valid lab name (this path gets rmtree'd)."""
    return os.path.join(RUN_DIR, check_name(lab))


def labs() -> list[str]:
    """Labs with a state or a journal (an `up` killed before its first state still has the latter)."""
    try:
        return sorted(d for d in os.listdir(RUN_DIR)
                      if any(os.path.isfile(os.path.join(RUN_DIR, d, f)) for f in ("state.json", "journal")))
    except FileNotFoundError:
        return []


def ensure_dir(lab: str) -> str:
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    path = lab_dir(lab)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def load(lab: str) -> dict | None:
    try:
        with open(os.path.join(lab_dir(lab), "state.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save(lab: str, data: dict) -> None:
    """Write atomically, so a crash leaves the old state or the new one, never half."""
    path = ensure_dir(lab)
    import tempfile  # here: validate and plan import this module and never write
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".state-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(path, "state.json"))


def faults(lab: str) -> list[dict]:
    """The faults `nslab fail` made and `heal` has not undone (see nslab/faults.py); `up` drops them with the
    state it rewrites, since it brings the lab back to its file."""
    return (load(lab) or {}).get("faults", [])


def set_faults(lab: str, records: list[dict]) -> None:
    data = load(lab) or {}
    data["faults"] = records
    save(lab, data)


def remove(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(RUN_DIR)  # only if no other lab is left


@contextlib.contextmanager
def locked(lab: str):
    """One up/down of a lab at a time (a second one waits)."""
    path = ensure_dir(lab)
    fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
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
        self.path = os.path.join(lab_dir(lab), "journal")
        self._fd = None
        self._live = {}  # line number -> (action, undo data, line text): the steps not undone, in order
        self._by_identity = {}  # identity -> line numbers of its live steps
        self._pending = {}  # identity -> action begun and never finished
        self._lines = 0
        try:
            with open(self.path) as f:
                for text in f:
                    self._read(text)
        except FileNotFoundError:
            pass

    def _read(self, text: str) -> None:
        from .plan.actions import Action  # here: validate imports this module and reads no journal
        self._lines += 1
        try:
            line = json.loads(text)
            action = Action.rebuild(line.get("do") or line.get("doing") or line["undone"])
        except (ValueError, KeyError, TypeError):
            # The last line of a run killed while writing it, or a kind this version doesn't know: what it
            # made is left to the mark-based sweep of the lab's namespaces.
            return
        if "do" in line:
            self._add(action, line.get("undo"), text)
        elif "doing" in line:
            self._pending[action.identity()] = action
        else:
            self._drop(action.identity())

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
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
