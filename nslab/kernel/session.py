"""One open netlink socket per namespace, opened from inside it once and reused by every step."""

import os

from . import netns


class Session:
    """Holds the sockets of one apply/observe run; close() releases them."""

    def __init__(self, run_dir: str | None = None, journalled: dict | None = None):
        self._socks = {}
        self._fds = {}
        self.run_dir = run_dir  # where app logs go (/run/nslab/<lab>)
        # action identity -> the undo data of its latest journalled step: what earlier runs made (an app's
        # pid, an exec that ran); apply adds this run's steps
        self.journalled = dict(journalled or {})
        self.fresh = set()  # namespaces this run created: nothing in them can be in place yet
        self.emptied = set()  # namespaces whose processes this run has ended already
        self.marks = {}  # namespace -> the ownership mark on its lo, as read (or set) this run
        self.token = ""  # the lab's random token, the last part of its marks ('' for a lab from before them)
        self._index = {}  # (ns, ifname) -> ifindex; lookups dominate apply time otherwise

    def socket(self, ns: str, kind: str, factory):
        """The `kind` socket of ns, made by factory() from inside ns on first use."""
        key = (kind, ns)
        if key not in self._socks:
            with netns.entered(ns):
                self._socks[key] = factory()
        return self._socks[key]

    def ipr(self, ns: str):
        def make():
            from pyroute2 import IPRoute  # imported late: slow inside an emulated VM
            return IPRoute()
        return self.socket(ns, "rtnl", make)

    def ns_fd(self, ns: str) -> int:
        if ns not in self._fds:
            self._fds[ns] = os.open(netns.path(ns), os.O_RDONLY)
        return self._fds[ns]

    def index(self, ns: str, ifname: str) -> int | None:
        if (ns, ifname) not in self._index:
            found = self.ipr(ns).link_lookup(ifname=ifname)
            if not found:
                return None
            self._index[(ns, ifname)] = found[0]
        return self._index[(ns, ifname)]

    def forget_link(self, ns: str, ifname: str) -> None:
        self._index.pop((ns, ifname), None)

    def forget(self, ns: str) -> None:
        """Drop the cached socket of a namespace that is being deleted."""
        for key in [k for k in self._socks if k[1] == ns]:
            self._socks.pop(key).close()
        self._index = {k: v for k, v in self._index.items() if k[0] != ns}
        self.marks.pop(ns, None)
        fd = self._fds.pop(ns, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for ns in {k[1] for k in self._socks} | set(self._fds):
            self.forget(ns)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
