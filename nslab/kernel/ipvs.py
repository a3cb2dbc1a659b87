"""IPVS services and real servers through pyroute2's generic-netlink IPVS socket, in the director's namespace."""

import errno
import os
import socket
import time
from enum import IntEnum

from ..plan import actions as A
from ..record import replace
from . import ipvs_batch as batch
from . import netns

IP_VS_SVC_F_PERSISTENT = 0x1
STATS_FOLD_S = 2.0  # the kernel's estimator folds per-CPU counters into the readable ones every 2 s
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


class Method(IntEnum):
    """The kernel's forwarding-method numbers (IP_VS_CONN_F_*). Always pass one explicitly:
    pyroute2's IPVSDest defaults to 3, which is DR, so a forgotten method turns NAT into DR."""

    NAT = 0  # IP_VS_CONN_F_MASQ
    TUN = 2  # IP_VS_CONN_F_TUNNEL
    DR = 3  # IP_VS_CONN_F_DROUTE

    @classmethod
    def of(cls, name: str) -> "Method":
        return {"nat": cls.NAT, "dr": cls.DR, "tun": cls.TUN}[name]


def _sock(s, ns):
    """One IPVS socket per namespace, opened inside it (it keeps working after we leave)."""
    def make():
        from pyroute2 import IPVS
        return IPVS()
    return s.socket(ns, "ipvs", make)


def load_module(s, ns) -> None:
    """Have the kernel load ip_vs (and with it net.ipv4.vs.*): it does when IPVS's generic netlink family is
    first asked for, as opening an IPVS socket does. A kernel without IPVS leaves things as they were."""
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        _sock(s, ns)
    except (NetlinkError, OSError):
        pass


def _service(a, settings=None):
    """The pyroute2 service an action names; with its scheduler and persistence from settings (default: the
    action's own, for an IpvsService)."""
    from pyroute2 import IPVSService
    spec = {"addr": a.vip, "port": a.port, "protocol": PROTOCOLS[a.protocol]}
    if settings is None and isinstance(a, A.IpvsService):
        settings = {"scheduler": a.scheduler, "persistence": a.persistence}
    if settings:
        spec["sched_name"] = settings["scheduler"]
        if settings["persistence"]:
            spec["flags"] = {"flags": IP_VS_SVC_F_PERSISTENT, "mask": 0xFFFF}
            spec["timeout"] = settings["persistence"]
    return IPVSService(**spec)


def _settings(attrs):
    """{"scheduler", "persistence"} of a dumped service."""
    persistent = attrs.get("IPVS_SVC_ATTR_FLAGS", {}).get("flags", 0) & IP_VS_SVC_F_PERSISTENT
    return {"scheduler": attrs.get("IPVS_SVC_ATTR_SCHED_NAME"),
            "persistence": attrs.get("IPVS_SVC_ATTR_TIMEOUT") if persistent else None}


def _ignoring_gone(call, *args, **kwargs):
    """call(...), where "no such service/destination" (ESRCH, ENOENT) means undo has nothing left to do."""
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        call(*args, **kwargs)
    except NetlinkError as e:
        if e.code not in (errno.ESRCH, errno.ENOENT):
            raise


def _attrs(msg, nla):
    return dict(msg.get(nla)["attrs"])


def _find_service(s, a):
    for msg in _sock(s, a.ns).service("dump"):
        attrs = _attrs(msg, "IPVS_CMD_ATTR_SERVICE")
        if (attrs.get("IPVS_SVC_ATTR_ADDR") == a.vip and attrs.get("IPVS_SVC_ATTR_PORT") == a.port
                and attrs.get("IPVS_SVC_ATTR_PROTOCOL") == PROTOCOLS[a.protocol]):
            return attrs
    return None


class IpvsServiceExecutor:
    """A virtual service; scheduler and persistence are changed in place. Undo data: None when do() added
    the service (undo deletes it, its real servers with it), else the {"scheduler", "persistence"} it had."""

    @staticmethod
    def done(s, a):
        attrs = _find_service(s, a)
        return bool(attrs) and _settings(attrs) == {"scheduler": a.scheduler, "persistence": a.persistence or None}

    @staticmethod
    def do(s, a):
        attrs = _find_service(s, a)
        _sock(s, a.ns).service("set" if attrs else "add", service=_service(a))
        return _settings(attrs) if attrs else None

    @staticmethod
    def undo(s, a, before):
        if not netns.exists(a.ns):
            return
        if before is None:
            _ignoring_gone(_sock(s, a.ns).service, "del", service=_service(a))
        else:
            _ignoring_gone(_sock(s, a.ns).service, "set", service=_service(a, before))


def _dests(s, a):
    """{(address, port): attrs} of the real servers of a's service."""
    out = {}
    for msg in _sock(s, a.ns).dest("dump", service=_service(a)):
        attrs = _attrs(msg, "IPVS_CMD_ATTR_DEST")
        out[(attrs.get("IPVS_DEST_ATTR_ADDR"), attrs.get("IPVS_DEST_ATTR_PORT"))] = attrs
    return out


def _dests_by_service(s, actions) -> dict:
    """{service key: _dests} for the services of actions (one namespace): one dump per service."""
    out = {}
    for a in actions:
        if _service_key(a) not in out:
            out[_service_key(a)] = _dests(s, a)
    return out


def _service_key(a):
    return a.protocol, a.vip, a.port


def _dest(a, weight=None, method=None):
    from pyroute2 import IPVSDest
    return IPVSDest(addr=a.rip, port=a.rport, weight=a.weight if weight is None else weight,
                    fwd_method=int(Method.of(method or a.method)))


def _family(s, ns) -> int:
    """The IPVS generic-netlink family id, which pyroute2 looks up on its socket's first request."""
    sock = _sock(s, ns)
    try:
        return sock.prid
    except RuntimeError:
        sock.service("dump")
        return sock.prid


def _encoded(s, command, a) -> bytes:
    return request(command, a, _family(s, a.ns))


def request(command: str, a, family: int) -> bytes:
    """The encoded "add", "set" or "del" request for the real server of an IpvsDest action, as pyroute2 builds
    it (ipvs_batch copies it for the others); family: the IPVS generic-netlink family id."""
    from pyroute2.netlink.generic import ipvs as genl
    from pyroute2.netlink.nlsocket import NetlinkRequest
    cmd, flags = {"add": (genl.IPVS_CMD_NEW_DEST, "create"), "set": (genl.IPVS_CMD_SET_DEST, "change"),
                  "del": (genl.IPVS_CMD_DEL_DEST, "req")}[command]
    msg = genl.ipvsmsg()
    msg["cmd"], msg["version"] = cmd, genl.GENL_VERSION
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", _service(a).dump_key()), ("IPVS_CMD_ATTR_DEST", _dest(a).dump_nla())]
    msg["header"]["type"], msg["header"]["flags"] = family, NetlinkRequest.flags[flags]
    msg.encode()
    return bytes(msg.data)


def _values(a):
    return a.rip, a.rport, int(Method.of(a.method)), a.weight


def _dest_settings(attrs):
    """{"weight", "method"} of a dumped real server."""
    method = Method(attrs.get("IPVS_DEST_ATTR_FWD_METHOD", 0) & 0x7).name.lower()
    return {"weight": attrs.get("IPVS_DEST_ATTR_WEIGHT"), "method": method}


class IpvsDestExecutor:
    """A real server of a service; weight and forwarding method are changed in place. Undo data: None when
    do() added it (undo deletes it), else the {"weight", "method"} it had.

    A service may have a thousand real servers, so apply hands consecutive ones of a namespace to
    done_many/do_many: one dump per service to compare, and the requests sent many per netlink send."""

    @staticmethod
    def done(s, a):
        return IpvsDestExecutor.done_many(s, [a])[0]

    @staticmethod
    def do(s, a):
        return IpvsDestExecutor.do_many(s, [a])[0]

    @staticmethod
    def done_many(s, actions) -> list[bool]:
        known = _dests_by_service(s, actions)
        out = []
        for a in actions:
            attrs = known[_service_key(a)].get((a.rip, a.rport))
            out.append(bool(attrs) and _dest_settings(attrs) == {"weight": a.weight, "method": a.method})
        return out

    @staticmethod
    def do_many(s, actions) -> list:
        """do() of each action (all in one namespace), all or nothing: the undo data of each, in order.
        Raises NetlinkError (with .action set: the first that failed) after taking back the others."""
        # Nothing can exist yet in a namespace this run created: no dump to decide between add and set.
        known = {} if actions[0].ns in s.fresh else _dests_by_service(s, actions)
        befores = []
        for a in actions:
            attrs = known.get(_service_key(a), {}).get((a.rip, a.rport))
            befores.append(_dest_settings(attrs) if attrs else None)
        requests = [("add" if b is None else "set", a) for a, b in zip(actions, befores)]
        failed = batch.send(s, actions[0].ns, requests, _encoded, _values)
        if failed:  # take back the others, batched too
            back = [("del", a) if before is None else ("set", replace(a, weight=before["weight"], method=before["method"]))
                    for k, (a, before) in enumerate(zip(actions, befores)) if k not in failed]
            batch.send(s, actions[0].ns, back, _encoded, _values)
            from pyroute2.netlink.exceptions import NetlinkError
            first = min(failed)
            e = NetlinkError(failed[first], f"{os.strerror(failed[first])} (IPVS real server {actions[first].rip})")
            e.action = actions[first]
            raise e
        return befores

    @staticmethod
    def undo(s, a, before):
        if not netns.exists(a.ns):
            return
        if before is None:
            _ignoring_gone(_sock(s, a.ns).dest, "del", service=_service(a), dest=_dest(a))
        else:
            _ignoring_gone(_sock(s, a.ns).dest, "set", service=_service(a),
                           dest=_dest(a, before["weight"], before["method"]))


STAT_KEYS = {"IPVS_STATS_ATTR_CONNS": "conns", "IPVS_STATS_ATTR_INPKTS": "inpkts",
             "IPVS_STATS_ATTR_OUTPKTS": "outpkts", "IPVS_STATS_ATTR_INBYTES": "inbytes",
             "IPVS_STATS_ATTR_OUTBYTES": "outbytes"}


def _stats(attrs, prefix):
    raw = attrs.get(f"{prefix}_STATS64") or attrs.get(f"{prefix}_STATS")
    values = dict(raw["attrs"]) if raw else {}
    return {short: values.get(long, 0) for long, short in STAT_KEYS.items()}


def read_services(session, ns: str) -> list[dict]:
    """Every IPVS service in ns with its real servers and counters, like `ipvsadm -Ln --stats`."""
    sock = _sock(session, ns)
    out = []
    from pyroute2 import IPVSService
    for msg in sock.service("dump"):
        attrs = _attrs(msg, "IPVS_CMD_ATTR_SERVICE")
        proto = {v: k for k, v in PROTOCOLS.items()}.get(attrs.get("IPVS_SVC_ATTR_PROTOCOL"), "?")
        svc = {"protocol": proto, "vip": attrs.get("IPVS_SVC_ATTR_ADDR"), "port": attrs.get("IPVS_SVC_ATTR_PORT"),
               "scheduler": attrs.get("IPVS_SVC_ATTR_SCHED_NAME"),
               "stats": _stats(attrs, "IPVS_SVC_ATTR"), "real_servers": []}
        key = IPVSService(addr=svc["vip"], port=svc["port"], protocol=attrs.get("IPVS_SVC_ATTR_PROTOCOL"))
        for dmsg in sock.dest("dump", service=key):
            d = _attrs(dmsg, "IPVS_CMD_ATTR_DEST")
            svc["real_servers"].append({
                "address": d.get("IPVS_DEST_ATTR_ADDR"), "port": d.get("IPVS_DEST_ATTR_PORT"),
                "method": Method(d.get("IPVS_DEST_ATTR_FWD_METHOD", 0) & 0x7).name,
                "weight": d.get("IPVS_DEST_ATTR_WEIGHT"), "active": d.get("IPVS_DEST_ATTR_ACTIVE_CONNS", 0),
                "inactive": d.get("IPVS_DEST_ATTR_INACT_CONNS", 0), "stats": _stats(d, "IPVS_DEST_ATTR")})
        out.append(svc)
    return out


def read_services_settled(session, ns: str) -> list[dict]:
    """read_services after the kernel's next counter fold, so fresh traffic never reads as zero."""
    first = read_services(session, ns)
    deadline = time.monotonic() + STATS_FOLD_S + 0.3
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = read_services(session, ns)
        if now != first:
            return now  # a fold happened: these are current
    return read_services(session, ns)


def read_connections(ns: str) -> list[dict]:
    """The IPVS connection table (state per client connection) from /proc/net/ip_vs_conn in ns."""
    with netns.entered(ns):
        try:
            with open("/proc/thread-self/net/ip_vs_conn") as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            return []

    def addr(hexip, hexport):
        return f"{socket.inet_ntoa(bytes.fromhex(hexip))}:{int(hexport, 16)}"
    out = []
    for line in lines:
        p = line.split()
        if len(p) >= 9:
            out.append({"protocol": p[0].lower(), "client": addr(p[1], p[2]), "vip": addr(p[3], p[4]),
                        "real_server": addr(p[5], p[6]), "state": p[7], "expires_s": int(p[8])})
    return out
