"""Read-only looks into a node's kernel for `nslab why`: the route it would pick, its routing table, its
neighbours, its drop counters, its listening sockets. Nothing here changes anything."""

import os
import socket
import struct

from pyroute2.netlink.exceptions import NetlinkError

from . import netns, observe

RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
NUD_STATES = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE", 0x20: "FAILED",
              0x40: "NOARP", 0x80: "PERMANENT"}
TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"


def _ifnames(session, ns) -> dict[int, str]:
    return {link["index"]: link.get("ifname") for link in session.ipr(ns).get_links()}


def route_get(session, ns: str, dst, src=None, iif: str | None = None) -> dict:
    """What `ip route get DST [from SRC iif IFACE]` answers inside ns, as a dict: command, ok, and either
    type/via/dev/src/text or errno/error. With iif the kernel judges the packet as if it had arrived on
    that interface, forwarding and reverse-path (rp_filter) checks included."""
    args, cmd = {"dst": str(dst)}, f"ip route get {dst}"
    if src is not None:
        args["src"] = str(src)
        cmd += f" from {src}"
    if iif is not None:
        index = session.index(ns, iif)
        if index is not None:
            args["iif"] = index
            cmd += f" iif {iif}"
    try:
        msg = session.ipr(ns).route("get", **args)[0]
    except NetlinkError as e:
        return {"command": cmd, "ok": False, "errno": e.code, "error": os.strerror(e.code)}
    names = _ifnames(session, ns)
    out = {"command": cmd, "ok": True, "type": RTN_TYPES.get(msg["type"], str(msg["type"])),
           "via": msg.get("gateway"), "dev": names.get(msg.get("oif")), "src": msg.get("prefsrc")}
    text = ("local " if out["type"] == "local" else "") + str(dst)
    text += (f" via {out['via']}" if out["via"] else "") + (f" dev {out['dev']}" if out["dev"] else "")
    out["text"] = text + (f" src {out['src']}" if out["src"] else "")
    return out


def routes(session, ns: str) -> list[str]:
    """The main routing table of ns, one `ip route` line each."""
    names = _ifnames(session, ns)
    out = []
    for r in session.ipr(ns).get_routes(family=socket.AF_INET, table=254):
        dst = f"{r.get('dst')}/{r['dst_len']}" if r.get("dst") else "default"
        line = dst + (f" via {r.get('gateway')}" if r.get("gateway") else "")
        line += f" dev {names.get(r.get('oif'), '?')}" + (f" src {r.get('prefsrc')}" if r.get("prefsrc") else "")
        out.append(line)
    return out


def neighbours(session, ns: str) -> list[dict]:
    """The IPv4 neighbour (ARP) table of ns: ip, dev, mac, state (FAILED/INCOMPLETE: asked, never answered)."""
    names = _ifnames(session, ns)
    out = []
    for n in session.ipr(ns).get_neighbours(family=socket.AF_INET):
        state = next((name for bit, name in NUD_STATES.items() if n["state"] & bit), str(n["state"]))
        out.append({"ip": n.get("dst"), "dev": names.get(n["ifindex"]), "mac": n.get("lladdr"), "state": state})
    return out


def _read_net(ns: str, names) -> dict[str, str]:
    """Files of /proc/net as seen from inside ns (thread-self: this thread's namespace after setns)."""
    out = {}
    with netns.entered(ns):
        for name in names:
            try:
                with open(f"/proc/thread-self/net/{name}") as f:
                    out[name] = f.read()
            except FileNotFoundError:
                out[name] = ""
    return out


def counters(ns: str) -> dict[str, int]:
    """Every counter of /proc/net/netstat and /proc/net/snmp in ns, as {'TcpExt.IPReversePathFilter': n,
    'Ip.InAddrErrors': n, ...}. Read before and after a probe, the ones that moved say what the kernel did."""
    out = {}
    for text in _read_net(ns, ("netstat", "snmp")).values():
        lines = text.splitlines()
        for head, values in zip(lines[::2], lines[1::2]):
            group, keys = head.split(":", 1)
            for key, value in zip(keys.split(), values.split(":", 1)[1].split()):
                try:
                    out[f"{group}.{key}"] = int(value)
                except ValueError:
                    pass
    return out


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16)


def listening(ns: str) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every listening TCP socket and bound UDP socket in ns, like `ss -ltun`."""
    out = []
    for proto, text in _read_net(ns, ("tcp", "udp")).items():
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) > 3 and parts[3] == (TCP_LISTEN if proto == "tcp" else UDP_UNCONNECTED):
                ip, port = _addr(parts[1])
                out.append((proto, ip, port))
    return sorted(set(out))


def tcp_connections(ns: str) -> list[tuple[str, int, str, int, str]]:
    """(local ip, local port, remote ip, remote port, state) of every TCP socket in ns that has a peer (not
    listening), like `ss -tan`; state as the kernel numbers it (hex text: '01' is ESTABLISHED)."""
    out = []
    for line in _read_net(ns, ("tcp",))["tcp"].splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[3] != TCP_LISTEN:
            out.append((*_addr(parts[1]), *_addr(parts[2]), parts[3]))
    return out


def sysctls(ns: str, keys) -> dict[str, str | None]:
    """{key: its value in ns, or None if ns has no such key} (/proc/sys/net opened from inside ns)."""
    out = {}
    with netns.entered(ns):
        for key in keys:
            try:
                with open("/proc/sys/" + key.replace(".", "/")) as f:
                    out[key] = f.read().strip()
            except FileNotFoundError:
                out[key] = None
    return out


COUNTERS = {  # what a counter that moved during a probe says the kernel did
    "TcpExt.IPReversePathFilter": "dropped by the reverse-path filter (rp_filter)",
    "Ip.InAddrErrors": "packets for another address dropped: forwarding is off",
    "Ip.InNoRoutes": "packets it had no route for", "Ip.OutNoRoutes": "packets it could not send: no route",
    "Icmp.OutDestUnreachs": "ICMP destination unreachable sent", "Tcp.OutRsts": "TCP resets sent",
    "Udp.NoPorts": "UDP datagrams to a port nobody listens on",
    "Ip.InUnknownProtos": "packets of a protocol nobody takes (IP-in-IP without tunl0)",
}


class Looks:
    """Read-only looks into a lab's nodes by name, each also printable as an evidence line (what `ip`,
    `sysctl` or `nstat` would show); counters snapshot before and after a probe."""

    def __init__(self, session, ns_of, nodes):
        self.s, self.ns, self.nodes = session, ns_of, list(nodes)
        self.before, self.after = {}, {}

    def snapshot(self, into: dict) -> None:
        for node in self.nodes:
            into[node] = counters(self.ns(node))

    def moved(self, node, key) -> int:
        return self.after.get(node, {}).get(key, 0) - self.before.get(node, {}).get(key, 0)

    def counter_line(self, node, key) -> str:
        group = "netstat" if key.startswith("TcpExt") else "snmp"
        return f"counter {key} +{self.moved(node, key)} in {node} (/proc/net/{group}: {COUNTERS[key]})"

    def moved_lines(self, node, keys=COUNTERS) -> list[str]:
        return [self.counter_line(node, k) for k in keys if self.moved(node, k) > 0]

    def route(self, node, dst, src=None, iif=None) -> dict:
        return route_get(self.s, self.ns(node), dst, src, iif)

    @staticmethod
    def route_line(node, r) -> str:
        return f"{r['command']} in {node}: " + (r["text"] if r["ok"] else f"{r['error']} (errno {r['errno']})")

    def routes_line(self, node) -> str:
        return f"ip route in {node}: " + "; ".join(routes(self.s, self.ns(node)))

    def sysctls(self, node, keys) -> dict:
        return sysctls(self.ns(node), keys)

    def interfaces(self, node) -> list:
        return observe.interfaces(self.s, self.ns(node))

    def neighbour_lines(self, node, ip) -> list[str]:
        return [f"ip neigh in {node}: {n['ip']} dev {n['dev']} {n['state']}"
                for n in neighbours(self.s, self.ns(node)) if n["ip"] == str(ip)]

    def listening(self, node) -> list:
        return listening(self.ns(node))
