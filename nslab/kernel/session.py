"""One open netlink socket per namespace, opened from inside it once and reused by every step."""

import os

from . import netns


class Session:
    """Holds the sockets of one apply/observe run; close() releases them."""

    def __init__(self, run_dir: str | None = None, known: dict | None = None):
        self._iprs = {}
        self._fds = {}
        self.run_dir = run_dir  # where app logs go (/run/nslab/<lab>)
        self.known = dict(known or {})  # state carried between runs: app pids, execs done
        self.undo_data = {}  # action -> what its undo needs (old sysctl values, pids)

    def ipr(self, ns: str):
        if ns not in self._iprs:
            from pyroute2 import IPRoute  # imported late: slow inside an emulated VM
            with netns.entered(ns):
                self._iprs[ns] = IPRoute()
        return self._iprs[ns]

    def ns_fd(self, ns: str) -> int:
        if ns not in self._fds:
            self._fds[ns] = os.open(netns.path(ns), os.O_RDONLY)
        return self._fds[ns]

    def index(self, ns: str, ifname: str) -> int | None:
        found = self.ipr(ns).link_lookup(ifname=ifname)
        return found[0] if found else None

    def forget(self, ns: str) -> None:
        """Drop the cached socket of a namespace that is being deleted."""
        ipr = self._iprs.pop(ns, None)
        if ipr:
            ipr.close()
        fd = self._fds.pop(ns, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for ns in list(self._iprs) + list(self._fds):
            self.forget(ns)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
