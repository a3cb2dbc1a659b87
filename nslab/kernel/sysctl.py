"""Network sysctls of one namespace: /proc/sys/net opened from inside it shows that namespace's values."""

import os

from . import netns


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read(ns: str, key: str) -> str | None:
    """The current value, or None if the key doesn't exist in that namespace."""
    with netns.entered(ns):
        try:
            with open(_path(key)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None


def write(ns: str, key: str, value: str) -> None:
    with netns.entered(ns):
        fd = os.open(_path(key), os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
