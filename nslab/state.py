"""/run/nslab/<lab>/: what a lab is (its topology text), what exists, which pids; and a lock."""

import contextlib
import fcntl
import json
import os
import shutil
import tempfile

from .model import check_name

RUN_DIR = "/run/nslab"


def lab_dir(lab: str) -> str:
    """The lab's state directory; refuses anything but a valid lab name (this path gets rmtree'd)."""
    return os.path.join(RUN_DIR, check_name(lab))


def labs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(RUN_DIR) if os.path.isfile(os.path.join(RUN_DIR, d, "state.json")))
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
    fd, tmp = tempfile.mkstemp(dir=path, prefix=".state-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(path, "state.json"))


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
