"""IPVS services and real servers through pyroute2's generic-netlink IPVS socket, in the director's namespace."""

import socket
import time
from enum import IntEnum

from ..plan import actions as A
from . import apply, netns

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


def _service(a):
    from pyroute2 import IPVSService
    spec = {"addr": a.vip, "port": a.port, "protocol": PROTOCOLS[a.protocol]}
    if isinstance(a, A.IpvsService):
        spec["sched_name"] = a.scheduler
        if a.persistence:
            spec["flags"] = {"flags": IP_VS_SVC_F_PERSISTENT, "mask": 0xFFFF}
            spec["timeout"] = a.persistence
    return IPVSService(**spec)


def _attrs(msg, nla):
    return dict(msg.get(nla)["attrs"])


def _find_service(s, a):
    for msg in _sock(s, a.ns).service("dump"):
        attrs = _attrs(msg, "IPVS_CMD_ATTR_SERVICE")
        if (attrs.get("IPVS_SVC_ATTR_ADDR") == a.vip and attrs.get("IPVS_SVC_ATTR_PORT") == a.port
                and attrs.get("IPVS_SVC_ATTR_PROTOCOL") == PROTOCOLS[a.protocol]):
            return attrs
    return None


class IpvsService:
    @staticmethod
    def done(s, a):
        attrs = _find_service(s, a)
        if not attrs:
            return False
        persistent = attrs.get("IPVS_SVC_ATTR_FLAGS", {}).get("flags", 0) & IP_VS_SVC_F_PERSISTENT
        return (attrs.get("IPVS_SVC_ATTR_SCHED_NAME") == a.scheduler
                and bool(persistent) == bool(a.persistence)
                and (not a.persistence or attrs.get("IPVS_SVC_ATTR_TIMEOUT") == a.persistence))

    @staticmethod
    def do(s, a):
        _sock(s, a.ns).service("set" if _find_service(s, a) else "add", service=_service(a))

    @staticmethod
    def undo(s, a):
        _sock(s, a.ns).service("del", service=_service(a))


def _dests(s, a):
    out = {}
    for msg in _sock(s, a.ns).dest("dump", service=_service(a)):
        attrs = _attrs(msg, "IPVS_CMD_ATTR_DEST")
        out[(attrs.get("IPVS_DEST_ATTR_ADDR"), attrs.get("IPVS_DEST_ATTR_PORT"))] = attrs
    return out


def _dest(a):
    from pyroute2 import IPVSDest
    return IPVSDest(addr=a.rip, port=a.rport, weight=a.weight, fwd_method=int(Method.of(a.method)))


class IpvsDest:
    @staticmethod
    def done(s, a):
        attrs = _dests(s, a).get((a.rip, a.rport))
        return bool(attrs) and (attrs.get("IPVS_DEST_ATTR_WEIGHT") == a.weight
                                and attrs.get("IPVS_DEST_ATTR_FWD_METHOD") == int(Method.of(a.method)))

    @staticmethod
    def do(s, a):
        exists = (a.rip, a.rport) in _dests(s, a)
        _sock(s, a.ns).dest("set" if exists else "add", service=_service(a), dest=_dest(a))

    @staticmethod
    def undo(s, a):
        _sock(s, a.ns).dest("del", service=_service(a), dest=_dest(a))


apply.register(A.IpvsService, IpvsService)
apply.register(A.IpvsDest, IpvsDest)

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
