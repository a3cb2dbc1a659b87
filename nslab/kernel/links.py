"""Namespaces (with their ownership mark), bridges, veth pairs and the ipip tunnel device."""

import errno
import subprocess
import time

from ..errors import EnvironmentMissing, KernelError
from ..model import names
from . import netns, procs

IFF_UP = 1


def read_mark(s, ns: str) -> str | None:
    """The ownership mark (lo's alias) of ns, read once a session."""
    if ns not in s.marks:
        links = s.ipr(ns).get_links(1)  # lo is always index 1
        s.marks[ns] = links[0].get("ifalias") if links else None
    return s.marks[ns]


def _marked(s, a, token=None) -> str:
    """The mark a namespace of this lab carries: the plan's mark with the lab's token (the session's unless
    given: a journalled step's own)."""
    token = s.token if token is None else token
    return a.mark + (f":{token}" if token else "")


class NetnsExecutor:
    """Undo data: the lab's token, part of the mark undo must find before it deletes anything. journal_first:
    apply journals the step before do(), since a kill between creating the namespace and marking it would
    leave one that nothing names and no mark proves ours; the next up or down then calls undo_unfinished()."""

    journal_first = True

    @staticmethod
    def done(s, a):
        if not netns.taken(a.ns):
            return False
        if not netns.exists(a.ns):
            if a.identity() in s.journalled:
                return False  # only the name file of one we made is left: do() replaces it
            raise KernelError(f"/run/netns/{a.ns} is there but holds no namespace (left by something killed "
                              "while making or deleting one?); nslab removes only what its journal or its mark "
                              f"proves it made: `ip netns delete {a.ns}` removes it")
        mark, wanted = read_mark(s, a.ns), _marked(s, a)
        if mark != wanted:
            owner = names.parse_mark(mark)
            whose = (f"lab '{owner.lab}'" + (" (another copy: its token differs)" if owner.lab == names.parse_mark(
                     a.mark).lab else "") if owner else "something other than nslab")
            raise KernelError(f"network namespace '{a.ns}' already exists and belongs to {whose}; "
                              "nslab never adopts or deletes a namespace it did not create "
                              "(rename the lab or the node)")
        return True

    @staticmethod
    def do(s, a):
        if netns.taken(a.ns) and not netns.exists(a.ns) and a.identity() in s.journalled:
            netns.delete(a.ns)  # the name file our own earlier run left (its journal says so)
        netns.create(a.ns)  # FileExistsError if the name is taken: nothing made
        try:
            s.ipr(a.ns).link("set", index=1, ifalias=_marked(s, a), state="up")
        except BaseException:  # all or nothing: never leave a namespace without its mark
            s.forget(a.ns)
            netns.delete(a.ns)
            raise
        s.fresh.add(a.ns)
        s.marks[a.ns] = _marked(s, a)
        return s.token

    @staticmethod
    def undo(s, a, token):
        """End what runs in the namespace and delete it, if it still carries this lab's mark."""
        wanted = _marked(s, a, token or "")
        NetnsExecutor._delete(s, a, lambda mark: mark == wanted)

    @staticmethod
    def undo_unfinished(s, a):
        """Undo a do() that was cut short: the namespace may have no mark yet, or be only the name file
        netns.create makes before it mounts one (create() refuses a name that exists, so it is ours); its
        token may be one the killed run made up and never recorded."""
        role = names.parse_mark(a.mark)[:2]
        NetnsExecutor._delete(s, a, lambda mark: not mark or (names.parse_mark(mark) or ())[:2] == role)

    @staticmethod
    def _delete(s, a, ours):
        """Delete the namespace if ours(its mark); the bare name file of one (the journal's step proves it
        ours, and it holds nothing)."""
        if not netns.taken(a.ns):
            return
        if netns.exists(a.ns):
            try:
                mark = read_mark(s, a.ns)
            except OSError:
                mark = None
            if not ours(mark):
                return  # not ours (any more): never delete it
            if a.ns not in s.emptied:
                procs.end_all([a.ns])
        s.forget(a.ns)
        netns.delete(a.ns)


def _is_up(s, ns, name):
    idx = s.index(ns, name)
    return idx is not None and s.ipr(ns).get_links(idx)[0]["flags"] & IFF_UP


def _delete_link(s, ns, name):
    from pyroute2.netlink.exceptions import NetlinkError
    idx = s.index(ns, name) if netns.exists(ns) else None
    if idx is not None:
        try:
            s.ipr(ns).link("del", index=idx)
        except NetlinkError as e:
            if e.code != errno.ENODEV:  # gone already (its veth peer went): what we wanted
                raise
    s.forget_link(ns, name)


def _set_up(s, ns, name, up: bool):
    idx = s.index(ns, name) if netns.exists(ns) else None
    if idx is not None:
        s.ipr(ns).link("set", index=idx, state="up" if up else "down")


def _bridge_info(s, ns, name, key):
    link = s.ipr(ns).get_links(s.index(ns, name))[0]
    return link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA").get_attr(key)


def _ageing(s, ns, name):
    """A bridge's ageing_time in seconds."""
    return _bridge_info(s, ns, name, "IFLA_BR_AGEING_TIME") // 100


class BridgeExecutor:
    """Undo data: None when do() made the bridge (undo deletes it); else what it changed on an existing one:
    "was-down" (undo brings it down again), or {"up": ..., "ageing": seconds} when it also set the ageing."""

    @staticmethod
    def done(s, a):
        return (bool(_is_up(s, a.ns, a.name)) and (a.ageing is None or _ageing(s, a.ns, a.name) == a.ageing)
                and (not a.vlan_filtering or _bridge_info(s, a.ns, a.name, "IFLA_BR_VLAN_FILTERING") == 1))

    @staticmethod
    def do(s, a):
        made = s.index(a.ns, a.name) is None
        options = {} if a.ageing is None else {"br_ageing_time": a.ageing * 100}  # centiseconds, as the kernel
        if a.vlan_filtering:
            options["br_vlan_filtering"] = 1
        if made:
            s.ipr(a.ns).link("add", ifname=a.name, kind="bridge", **options)
            s.ipr(a.ns).link("set", index=s.index(a.ns, a.name), state="up")
            return None
        before = {"up": bool(_is_up(s, a.ns, a.name)), "ageing": _ageing(s, a.ns, a.name)}
        if options:
            s.ipr(a.ns).link("set", index=s.index(a.ns, a.name), kind="bridge", **options)
        s.ipr(a.ns).link("set", index=s.index(a.ns, a.name), state="up")
        return before if options else "was-down"

    @staticmethod
    def undo(s, a, undo_data):
        if undo_data is None:
            _delete_link(s, a.ns, a.name)
            return
        if isinstance(undo_data, dict) and netns.exists(a.ns) and s.index(a.ns, a.name) is not None:
            s.ipr(a.ns).link("set", index=s.index(a.ns, a.name), kind="bridge",
                             br_ageing_time=undo_data["ageing"] * 100)
            _set_up(s, a.ns, a.name, undo_data["up"])
            return
        _set_up(s, a.ns, a.name, False)


def _link_settings(s, ns, name):
    link = s.ipr(ns).get_links(s.index(ns, name))[0]
    master = link.get("master")
    masters = [m.get("ifname") for m in s.ipr(ns).get_links(master)] if master else [None]
    return {"up": bool(link["flags"] & IFF_UP), "mac": link.get("address"), "master": masters[0]}


class VethExecutor:
    """Undo data: None when do() made the pair (undo deletes it, and the peer with it); else the settings
    do() changed on an existing pair (undo puts them back)."""

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
        ipr = s.ipr(a.ns)
        before = None
        if s.index(a.ns, a.name) is not None and s.index(a.peer_ns, a.peer) is None:
            # A cable end whose other end is not where it belongs: its namespace was deleted by hand (and lives
            # on, held by a process) and made again. A cable to nowhere the lab reaches: replace it.
            _delete_link(s, a.ns, a.name)
        if s.index(a.ns, a.name) is None:
            if s.index(a.peer_ns, a.peer) is not None:
                raise KernelError(f"{a.peer_ns} already has an interface '{a.peer}' that nslab did not cable")
            ipr.link("add", ifname=a.name, kind="veth", peer={"ifname": a.peer, "net_ns_fd": s.ns_fd(a.peer_ns)})
        else:
            before = {"end": _link_settings(s, a.ns, a.name), "peer": _link_settings(s, a.peer_ns, a.peer)}
        _configure(s, a.ns, a.name, state="up", address=a.mac, master=a.master)
        _configure(s, a.peer_ns, a.peer, state="up", address=a.peer_mac)
        return before

    @staticmethod
    def undo(s, a, before):
        if before is None:
            _delete_link(s, a.ns, a.name)  # the peer goes with it
            s.forget_link(a.peer_ns, a.peer)
            return
        for ns, name, was in ((a.ns, a.name, before["end"]), (a.peer_ns, a.peer, before["peer"])):
            if netns.exists(ns) and s.index(ns, name) is not None:
                _configure(s, ns, name, state="up" if was["up"] else "down", address=was["mac"],
                           master=was["master"] or 0)


def _configure(s, ns, name, state, address=None, master=None):
    """Set a link's state, and its MAC and bridge (a name; 0 for none) when given."""
    extra = {}
    if address:
        extra["address"] = address
    if master is not None:
        extra["master"] = s.index(ns, master) if master else 0
    s.ipr(ns).link("set", index=s.index(ns, name), state=state, **extra)


class TunnelExecutor:
    """tunl0, the ipip fallback device: it appears in every namespace once the ipip module is loaded, so we
    load the module if tunl0 is missing (`modprobe ipip`, as the plan prints), wait for it, and bring it up;
    undo brings it down again. Undo data: None."""

    FB_KEY = "net.core.fb_tunnels_only_for_init_net"
    LOAD_TIMEOUT = 60  # seconds: loading a module inside an emulated VM is slow

    @staticmethod
    def done(s, a):
        return bool(_is_up(s, a.ns, a.name))

    @staticmethod
    def do(s, a):
        idx = s.index(a.ns, a.name)
        if idx is None:
            idx = TunnelExecutor._load_ipip(s, a)
        s.ipr(a.ns).link("set", index=idx, state="up")

    @staticmethod
    def _load_ipip(s, a) -> int:
        """Load ipip and return tunl0's index in a.ns. Raises EnvironmentMissing, KernelError."""
        key = TunnelExecutor.FB_KEY
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
                                    timeout=TunnelExecutor.LOAD_TIMEOUT)
        except FileNotFoundError:
            raise EnvironmentMissing(f"{a.ns} has no {a.name} and modprobe (kmod) is not installed to load the "
                                     "ipip module LVS TUN needs: apt-get install kmod") from None
        except subprocess.TimeoutExpired:
            raise KernelError(f"`modprobe ipip` did not finish within {TunnelExecutor.LOAD_TIMEOUT} s") from None
        if loaded.returncode != 0:
            why = " | ".join(loaded.stderr.strip().splitlines()[-2:]) or f"exit status {loaded.returncode}"
            raise EnvironmentMissing(f"{a.ns} has no {a.name} and `modprobe ipip` failed ({why}): the running "
                                     "kernel cannot load the ipip module LVS TUN needs (run the lab inside "
                                     "`nslab vm -- nslab up ...`)")
        deadline = time.monotonic() + TunnelExecutor.LOAD_TIMEOUT
        while (idx := s.index(a.ns, a.name)) is None:
            if time.monotonic() > deadline:
                raise KernelError(f"`modprobe ipip` succeeded but no {a.name} appeared in {a.ns} within "
                                  f"{TunnelExecutor.LOAD_TIMEOUT} s")
            time.sleep(0.05)
        return idx

    @staticmethod
    def undo(s, a, undo_data):
        _set_up(s, a.ns, a.name, False)


def _port_vlans(s, ns, port) -> dict[int, int]:
    """{vid: flags} of a bridge port (flags: 2 pvid, 4 untagged)."""
    out = {}
    for link in s.ipr(ns).get_vlans(index=s.index(ns, port)):
        spec = link.get_attr("IFLA_AF_SPEC")
        for info in spec.get_attrs("IFLA_BRIDGE_VLAN_INFO") if spec else []:
            out[info["vid"]] = info["flags"]
    return out


BRIDGE_VLAN_PVID, BRIDGE_VLAN_UNTAGGED = 2, 4


class BridgeVlanExecutor:
    """A bridge port's VLANs. Undo data: the port's {vid: flags} before (undo puts exactly those back)."""

    @staticmethod
    def _want(a) -> dict[int, int]:
        flags = BRIDGE_VLAN_PVID | BRIDGE_VLAN_UNTAGGED if a.access else 0
        return {v: flags for v in a.vids}

    @staticmethod
    def done(s, a):
        return s.index(a.ns, a.port) is not None and _port_vlans(s, a.ns, a.port) == BridgeVlanExecutor._want(a)

    @staticmethod
    def do(s, a):
        before = _port_vlans(s, a.ns, a.port)
        BridgeVlanExecutor._set(s, a.ns, a.port, before, BridgeVlanExecutor._want(a))
        return {str(v): f for v, f in before.items()}

    @staticmethod
    def _set(s, ns, port, have, want):
        idx = s.index(ns, port)
        for vid, flags in want.items():  # add first: a port never sits in no VLAN at all
            if have.get(vid) != flags:
                # pyroute2 turns pvid: True into the pvid and untagged flags (an access port); none: tagged
                info = {"vid": vid, "pvid": True} if flags else {"vid": vid}
                s.ipr(ns).vlan_filter("add", index=idx, vlan_info=info)
        for vid in have:
            if vid not in want:
                s.ipr(ns).vlan_filter("del", index=idx, vlan_info={"vid": vid})

    @staticmethod
    def undo(s, a, before):
        if netns.exists(a.ns) and s.index(a.ns, a.port) is not None:
            BridgeVlanExecutor._set(s, a.ns, a.port, _port_vlans(s, a.ns, a.port),
                                    {int(v): f for v, f in (before or {}).items()})


class VlanExecutor:
    """An 802.1Q sub-interface of a node's trunk interface. Undo data: None (undo deletes it)."""

    @staticmethod
    def done(s, a):
        return bool(_is_up(s, a.ns, a.name))

    @staticmethod
    def do(s, a):
        if s.index(a.ns, a.name) is None:
            s.ipr(a.ns).link("add", ifname=a.name, kind="vlan", link=s.index(a.ns, a.parent), vlan_id=a.vid)
        s.ipr(a.ns).link("set", index=s.index(a.ns, a.name), state="up")

    @staticmethod
    def undo(s, a, undo_data):
        _delete_link(s, a.ns, a.name)
