"""Network sysctls of one namespace (/proc/sys/net opened from inside it shows that namespace's values), and
the executor of the Sysctl action, which remembers the value a key had before nslab set it."""

import os

from . import netns

IPVS_KEYS = "net.ipv4.vs."  # there once the ip_vs module is loaded


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


def _put(key: str, value) -> None:
    """Write one key of the namespace the calling thread is in."""
    fd = os.open(_path(key), os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def write_many(ns: str, pairs) -> None:
    """Set (key, value) pairs in one visit to the namespace."""
    with netns.entered(ns):
        for key, value in pairs:
            _put(key, value)


def write(ns: str, key: str, value: str) -> None:
    write_many(ns, [(key, value)])


def _same(current: str | None, wanted: str) -> bool:
    # The kernel shows vector values (tcp_rmem) tab-separated; a topology writes them with spaces.
    return current is not None and current.split() == str(wanted).split()


class SysctlExecutor:
    """Undo data: the key's value before do() (None if the key doesn't exist here, for an optional key).

    A plan sets thousands of keys in a big lab, so apply hands consecutive keys of one namespace to
    done_many/do_many, which read and write them in one visit to the namespace."""

    @staticmethod
    def done(s, a) -> bool:
        return SysctlExecutor.done_many(s, [a])[0]

    @staticmethod
    def do(s, a):
        return SysctlExecutor.do_many(s, [a])[0]

    @staticmethod
    def undo(s, a, before) -> None:
        if before is not None and netns.exists(a.ns):
            write(a.ns, a.key, before)

    @staticmethod
    def done_many(s, actions) -> list[bool]:
        """done() of each action (all in one namespace)."""
        current = read_many(actions[0].ns, [a.key for a in actions])
        return [_same(current[a.key], a.value) or (current[a.key] is None and a.optional) for a in actions]

    @staticmethod
    def do_many(s, actions) -> list:
        """do() of each action (all in one namespace), all or nothing: the undo data of each, in order.
        Raises FileNotFoundError (with .action set) for a key this kernel lacks that isn't optional."""
        ns = actions[0].ns
        current = read_many(ns, [a.key for a in actions])
        if any(current[a.key] is None and a.key.startswith(IPVS_KEYS) for a in actions):
            from . import ipvs
            ipvs.load_module(s, ns)
            current = read_many(ns, [a.key for a in actions])
        for a in actions:
            if current[a.key] is None and not a.optional:
                e = FileNotFoundError(f"sysctl {a.key} does not exist in {ns}")
                e.action = a
                raise e
        written = []
        with netns.entered(ns):
            for a in actions:
                if current[a.key] is None or _same(current[a.key], a.value):
                    continue
                try:
                    _put(a.key, a.value)
                except OSError as e:
                    e.action = a
                    for key in reversed(written):  # leave the namespace as it was
                        _put(key, current[key])
                    raise
                written.append(a.key)
        return [current[a.key] for a in actions]
