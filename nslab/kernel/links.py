"""Namespaces (with their ownership mark), bridges, veth pairs and the ipip tunnel device."""

import contextlib
import subprocess
import time

from ..errors import EnvironmentMissing, KernelError
from ..model import names
from . import netns, procs

IFF_UP = 1


def read_mark(s, ns: str) -> str | None:
    links = s.ipr(ns).get_links(1)  # lo is always index 1
    return links[0].get("ifalias") if links else None


class AddNetns:
    @staticmethod
    def done(s, a):
        if not netns.exists(a.ns):
            return False
        mark = read_mark(s, a.ns)
        if mark != a.mark:
            owner = names.parse_mark(mark)
            whose = f"lab '{owner[0]}'" if owner else "something other than nslab"
            raise KernelError(f"network namespace '{a.ns}' already exists and belongs to {whose}; "
                              "nslab never adopts or deletes a namespace it did not create "
                              "(rename the lab or the node)")
        return True

    @staticmethod
    def do(s, a):
        netns.create(a.ns)
        s.fresh.add(a.ns)
        ipr = s.ipr(a.ns)
        ipr.link("set", index=1, ifalias=a.mark, state="up")

    @staticmethod
    def undo(s, a):
        procs.end_all([a.ns])
        s.forget(a.ns)
        netns.delete(a.ns)


def _is_up(s, ns, name):
    idx = s.index(ns, name)
    return idx is not None and s.ipr(ns).get_links(idx)[0]["flags"] & IFF_UP


class AddBridge:
    @staticmethod
    def done(s, a):
        return bool(_is_up(s, a.ns, a.name))

    @staticmethod
    def do(s, a):
        ipr = s.ipr(a.ns)
        if s.index(a.ns, a.name) is None:
            ipr.link("add", ifname=a.name, kind="bridge")
        ipr.link("set", index=s.index(a.ns, a.name), state="up")

    @staticmethod
    def undo(s, a):
        _delete_link(s, a.ns, a.name)


def _delete_link(s, ns, name):
    idx = s.index(ns, name) if netns.exists(ns) else None
    if idx is not None:
        s.ipr(ns).link("del", index=idx)
    s.forget_link(ns, name)


class AddVeth:
    @staticmethod
    def done(s, a):
        if not (_is_up(s, a.ns, a.name) and _is_up(s, a.peer_ns, a.peer)):
            return False
        for ns, name, mac in ((a.ns, a.name, a.mac), (a.peer_ns, a.peer, a.peer_mac)):
            if mac and s.ipr(ns).get_links(s.index(ns, name))[0].get("address") != mac:
                return False
        if a.master:
            link = s.ipr(a.ns).get_links(s.index(a.ns, a.name))[0]
            return link.get("master") == s.index(a.ns, a.master)
        return True

    @staticmethod
    def do(s, a):
        ipr, pipr = s.ipr(a.ns), s.ipr(a.peer_ns)
        if s.index(a.ns, a.name) is None:
            if s.index(a.peer_ns, a.peer) is not None:
                raise KernelError(f"{a.peer_ns} already has an interface '{a.peer}' that nslab did not cable")
            ipr.link("add", ifname=a.name, kind="veth", peer={"ifname": a.peer, "net_ns_fd": s.ns_fd(a.peer_ns)})
        pidx = s.index(a.peer_ns, a.peer)
        if a.peer_mac:
            pipr.link("set", index=pidx, address=a.peer_mac)
        extra = {"master": s.index(a.ns, a.master)} if a.master else {}
        if a.mac:
            extra["address"] = a.mac
        ipr.link("set", index=s.index(a.ns, a.name), state="up", **extra)
        pipr.link("set", index=pidx, state="up")

    @staticmethod
    def undo(s, a):
        _delete_link(s, a.ns, a.name)  # the peer goes with it
        s.forget_link(a.peer_ns, a.peer)


class AddTunnel:
    """tunl0, the ipip fallback device: it appears in every namespace once the ipip module is loaded, so we
    load the module if tunl0 is missing (`modprobe ipip`, as the plan prints), wait for it, and bring it up."""

    FB_KEY = "net.core.fb_tunnels_only_for_init_net"
    LOAD_TIMEOUT = 60  # seconds: loading a module inside an emulated VM is slow

    @staticmethod
    def done(s, a):
        return bool(_is_up(s, a.ns, a.name))

    @staticmethod
    def do(s, a):
        idx = s.index(a.ns, a.name)
        if idx is None:
            idx = AddTunnel._load_ipip(s, a)
        s.ipr(a.ns).link("set", index=idx, state="up")

    @staticmethod
    def _load_ipip(s, a) -> int:
        """Load ipip and return tunl0's index in a.ns. Raises EnvironmentMissing, KernelError."""
        key = AddTunnel.FB_KEY
        try:  # a global sysctl, shown only in the host's namespace (where nslab itself runs)
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                fb = f.read().strip()
        except OSError:
            fb = "0"  # a kernel without it gives every namespace the fallback devices
        if fb != "0":
            raise EnvironmentMissing(
                f"{a.ns} has no {a.name}: {key}={fb} on this host keeps the ipip fallback device out of every "
                f"namespace but the host's, and LVS TUN needs it in each real server. Run `sysctl -w {key}=0`, "
                "then `nslab down` the lab and `nslab up` it again")
        try:
            loaded = subprocess.run(["modprobe", "ipip"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=AddTunnel.LOAD_TIMEOUT)
        except FileNotFoundError:
            raise EnvironmentMissing(f"{a.ns} has no {a.name} and modprobe (kmod) is not installed to load the "
                                     "ipip module LVS TUN needs: apt-get install kmod") from None
        except subprocess.TimeoutExpired:
            raise KernelError(f"`modprobe ipip` did not finish within {AddTunnel.LOAD_TIMEOUT} s") from None
        if loaded.returncode != 0:
            why = " | ".join(loaded.stderr.strip().splitlines()[-2:]) or f"exit status {loaded.returncode}"
            raise EnvironmentMissing(f"{a.ns} has no {a.name} and `modprobe ipip` failed ({why}): the running "
                                     "kernel cannot load the ipip module LVS TUN needs (run the lab inside "
                                     "`nslab vm -- nslab up ...`)")
        deadline = time.monotonic() + AddTunnel.LOAD_TIMEOUT
        while (idx := s.index(a.ns, a.name)) is None:
            if time.monotonic() > deadline:
                raise KernelError(f"`modprobe ipip` succeeded but no {a.name} appeared in {a.ns} within "
                                  f"{AddTunnel.LOAD_TIMEOUT} s")
            time.sleep(0.05)
        return idx

    @staticmethod
    def undo(s, a):
        with contextlib.suppress(Exception):
            s.ipr(a.ns).link("set", index=s.index(a.ns, a.name), state="down")
