"""Network sysctls of one namespace: /proc/sys/net opened from inside it shows that namespace's values."""

import os

from . import netns


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def read_many(ns: str, keys) -> dict:
    """{key: current value, or None if the key doesn't exist in that namespace}."""
    out = {}
    with netns.entered(ns):
        for key in keys:
            try:
                with open(_path(key)) as f:
                    out[key] = f.read().strip()
            except FileNotFoundError:
                out[key] = None
    return out


def read(ns: str, key: str) -> str | None:
    return read_many(ns, [key])[key]


def write_many(ns: str, pairs) -> None:
    """Set (key, value) pairs in one visit to the namespace."""
    with netns.entered(ns):
        for key, value in pairs:
            fd = os.open(_path(key), os.O_WRONLY)
            try:
                os.write(fd, str(value).encode())
            finally:
                os.close(fd)


def write(ns: str, key: str, value: str) -> None:
    write_many(ns, [(key, value)])
