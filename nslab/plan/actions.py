"""One small frozen record per kernel change; each prints itself as the commands a student would type."""

import re
import shlex

from .. import pyhelper
from ..record import field, fields, record

# The fields that name the object an action makes: two actions with the same identity make the same object,
# and `up` changes the other fields (a route's next hop, a real server's weight, a sysctl's value) in place.
# A kind not listed here is named by all its fields.
IDENTITY = {
    "AddNetns": (), "AddBridge": ("name",), "AddVeth": ("name", "peer_ns", "peer"), "AddTunnel": ("name",),
    "Sysctl": ("key",), "AddAddress": ("dev", "cidr"), "AddRoute": ("to",),
    "IpvsService": ("protocol", "vip", "port"), "IpvsDest": ("protocol", "vip", "port", "rip", "rport"),
}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shell_word(word: str) -> str:
    """One argv word as a shell reads it back: shlex.quote, or for a word holding a control character (an exec
    command may) bash's $'...' with it escaped, so that plan never sends a raw escape sequence to the terminal."""
    if not _CONTROL.search(word):
        return shlex.quote(word)
    return "$'" + "".join(map(_escaped, word)) + "'"


def _escaped(c: str) -> str:
    if c in "\\'":
        return "\\" + c
    if _CONTROL.match(c):
        return f"\\x{ord(c):02x}" if ord(c) < 0x80 else f"\\u{ord(c):04x}"
    return c


@record
class Action:
    ns: str  # the namespace the change happens in
    reason: str = field(default="", compare=False)

    def argvs(self) -> list[list[str]]:
        raise NotImplementedError

    def commands(self) -> list[str]:
        return [" ".join(shell_word(w) for w in a) for a in self.argvs()]

    def identity(self) -> tuple:
        """(kind, namespace, the fields that name the object): what the journal and a new plan are matched by."""
        known = self.__dict__.get("_identity")  # frozen: worked out once (a big lab matches thousands)
        if known is None:
            kind = type(self).__name__
            names = IDENTITY.get(kind)
            if names is None:
                names = tuple(f.name for f in fields(self) if f.compare and f.name != "ns")
            known = self.__dict__["_identity"] = (kind, self.ns, *(getattr(self, n) for n in names))
        return known

    def record(self) -> dict:
        """The action as JSON-ready data, {"kind": ..., "fields": {...}}: enough to rebuild it (see rebuild)."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = list(value) if isinstance(value, tuple) else value
        return {"kind": type(self).__name__, "fields": values}

    @staticmethod
    def rebuild(record: dict) -> "Action":
        """The action a record() came from. Raises KeyError for a kind this version doesn't know."""
        cls = _KINDS.get(record["kind"]) or _kinds()[record["kind"]]
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["fields"].items()})


_KINDS: dict = {}  # kind name -> Action subclass, filled on first use


def _kinds() -> dict:
    todo = [Action]
    while todo:
        for sub in todo.pop().__subclasses__():
            _KINDS[sub.__name__] = sub
            todo.append(sub)
    return _KINDS


def _ip(ns, *words):
    return ["ip", "-n", ns, *words]


@record
class AddNetns(Action):
    """A namespace, marked as ours by an alias on its lo (read back before anything deletes it)."""

    mark: str = ""

    def argvs(self):
        return [["ip", "netns", "add", self.ns], _ip(self.ns, "link", "set", "lo", "alias", self.mark),
                _ip(self.ns, "link", "set", "lo", "up")]


@record
class Sysctl(Action):
    """One sysctl key of a namespace set to a value; undone by restoring the value it had before."""

    key: str = ""
    value: str = ""
    optional: bool = False  # the key may not exist on every kernel (bridge-nf-call-* without br_netfilter)

    def argvs(self):
        # -e: a shell replaying the plan goes on past an optional key this kernel lacks
        flags = ["-q", "-e", "-w"] if self.optional else ["-q", "-w"]
        # net.ipv4.vs.* is there once ip_vs is loaded (nslab has the kernel load it the same way)
        load = [["modprobe", "ip_vs"]] if self.key.startswith("net.ipv4.vs.") else []
        return [*load, ["ip", "netns", "exec", self.ns, "sysctl", *flags, f"{self.key}={self.value}"]]


@record
class AddBridge(Action):
    name: str = ""
    ageing: int | None = None  # seconds a learned MAC is kept; None: the kernel's default (300)
    vlan_filtering: bool = False  # forward only between ports of a frame's VLAN

    def argvs(self):
        # ip takes ageing_time in centiseconds (the kernel's clock_t), as netlink does
        extra = ["ageing_time", str(self.ageing * 100)] if self.ageing is not None else []
        extra += ["vlan_filtering", "1"] if self.vlan_filtering else []
        return [_ip(self.ns, "link", "add", self.name, "type", "bridge", *extra),
                _ip(self.ns, "link", "set", self.name, "up")]


@record
class AddVeth(Action):
    """A veth pair: `name` stays in ns, `peer` is moved into peer_ns; both come up."""

    name: str = ""
    peer_ns: str = ""
    peer: str = ""
    master: str | None = None  # bridge in ns that `name` joins
    mac: str | None = None
    peer_mac: str | None = None

    def argvs(self):
        out = [_ip(self.ns, "link", "add", self.name, "type", "veth", "peer", "name", self.peer,
                   "netns", self.peer_ns)]
        if self.mac:
            out.append(_ip(self.ns, "link", "set", self.name, "address", self.mac))
        if self.peer_mac:
            out.append(_ip(self.peer_ns, "link", "set", self.peer, "address", self.peer_mac))
        if self.master:
            out.append(_ip(self.ns, "link", "set", self.name, "master", self.master))
        out.append(_ip(self.ns, "link", "set", self.name, "up"))
        out.append(_ip(self.peer_ns, "link", "set", self.peer, "up"))
        return out


@record
class BridgeVlan(Action):
    """A bridge port's VLANs: an access port (one VID, pvid and untagged) or a trunk (tagged VIDs); the port
    leaves the default VLAN 1."""

    port: str = ""
    vids: tuple[int, ...] = ()
    access: bool = True

    def argvs(self):
        bridge = ["ip", "netns", "exec", self.ns, "bridge", "vlan"]
        flags = ["pvid", "untagged"] if self.access else []
        return ([bridge + ["add", "dev", self.port, "vid", str(v), *flags] for v in self.vids]
                + [bridge + ["del", "dev", self.port, "vid", "1"]])


@record
class AddVlan(Action):
    """An 802.1Q sub-interface: frames of `parent` tagged `vid` come and go through it."""

    name: str = ""
    parent: str = ""
    vid: int = 0

    def argvs(self):
        return [_ip(self.ns, "link", "add", "link", self.parent, "name", self.name, "type", "vlan", "id", str(self.vid)),
                _ip(self.ns, "link", "set", self.name, "up")]


@record
class AddTunnel(Action):
    """tunl0, the ipip fallback device: receives IP-in-IP from any source (LVS TUN)."""

    name: str = "tunl0"

    def argvs(self):
        # A module is the kernel's, not a namespace's: loading it gives tunl0 to every namespace.
        return [["modprobe", "ipip"], _ip(self.ns, "link", "set", self.name, "up")]


@record
class AddAddress(Action):
    dev: str = ""
    cidr: str = ""

    def argvs(self):
        return [_ip(self.ns, "addr", "add", self.cidr, "dev", self.dev)]


@record
class AddRoute(Action):
    to: str = ""  # "default" or a prefix
    via: str | None = None
    dev: str | None = None

    def argvs(self):
        words = ["route", "add", self.to]
        if self.via:
            words += ["via", self.via]
        if self.dev:
            words += ["dev", self.dev]
        return [_ip(self.ns, *words)]


@record
class Masquerade(Action):
    """SNAT traffic leaving `out` to out's own address (nftables)."""

    out: str = ""
    source: str | None = None

    TABLE = "nslab"
    OWNER = "nslab"  # the comment that marks the table and chain as nslab's (removed with their last rule)

    @property
    def comment(self) -> str:
        """The rule's comment: how `up` (and undo) find this very rule again, however it was added."""
        return f"nslab masquerade {self.out} {self.source or 'any'}"

    def argvs(self):
        nft = ["ip", "netns", "exec", self.ns, "nft"]
        match = ["ip", "saddr", self.source] if self.source else []
        return [nft + ["add", "table", "ip", self.TABLE, f'{{ comment "{self.OWNER}" ; }}'],
                nft + ["add", "chain", "ip", self.TABLE, "postrouting",
                       f'{{ type nat hook postrouting priority srcnat ; policy accept ; comment "{self.OWNER}" ; }}'],
                nft + ["add", "rule", "ip", self.TABLE, "postrouting", *match, "oifname", self.out, "masquerade",
                       "comment", f'"{self.comment}"']]


@record
class Dnat(Action):
    """A port forward (nftables DNAT): packets for `port` of the node's own addresses, arriving on `iface`
    (or any), get to_ip:to_port as their destination; conntrack restores the replies' source."""

    protocol: str = "tcp"
    port: int = 0
    to_ip: str = ""
    to_port: int = 0
    iface: str | None = None

    TABLE = Masquerade.TABLE
    OWNER = Masquerade.OWNER

    @property
    def comment(self) -> str:
        return f"nslab dnat {self.protocol} {self.iface or 'any'}:{self.port} {self.to_ip}:{self.to_port}"

    def argvs(self):
        nft = ["ip", "netns", "exec", self.ns, "nft"]
        match = ["iifname", self.iface] if self.iface else []
        return [nft + ["add", "table", "ip", self.TABLE, f'{{ comment "{self.OWNER}" ; }}'],
                nft + ["add", "chain", "ip", self.TABLE, "prerouting",
                       f'{{ type nat hook prerouting priority dstnat ; policy accept ; comment "{self.OWNER}" ; }}'],
                nft + ["add", "rule", "ip", self.TABLE, "prerouting", *match, self.protocol, "dport", str(self.port),
                       "dnat", "to", f"{self.to_ip}:{self.to_port}", "comment", f'"{self.comment}"']]


@record
class SetImpair(Action):
    """netem on what an interface sends (delay, jitter, loss), and tbf beneath it for a rate."""

    dev: str = ""
    delay_us: int = 0
    jitter_us: int = 0
    loss_pct: float = 0.0
    rate_bit: int = 0

    TBF_LATENCY_MS = 200  # how long a packet may wait in tbf's queue before it is dropped

    @property
    def burst(self) -> int:
        """tbf's bucket in bytes: 10 ms at the rate, never below one full frame (a smaller one sends nothing)."""
        return max(1600, self.rate_bit // 8 // 100)

    def argvs(self):
        tc = ["ip", "netns", "exec", self.ns, "tc", "qdisc", "replace", "dev", self.dev]
        netem = [*tc, "root", "handle", "1:", "netem"]
        if self.delay_us:
            netem += ["delay", f"{self.delay_us}us"] + ([f"{self.jitter_us}us"] if self.jitter_us else [])
        if self.loss_pct:
            netem += ["loss", f"{self.loss_pct:g}%"]
        out = [netem]
        if self.rate_bit:
            out.append([*tc, "parent", "1:1", "handle", "10:", "tbf", "rate", f"{self.rate_bit}bit", "burst",
                        str(self.burst), "latency", f"{self.TBF_LATENCY_MS}ms"])
        return out


@record
class IpvsService(Action):
    protocol: str = "tcp"
    vip: str = ""
    port: int = 0
    scheduler: str = "rr"
    persistence: int | None = None

    def argvs(self):
        flag = "-t" if self.protocol == "tcp" else "-u"
        words = ["ipvsadm", "-A", flag, f"{self.vip}:{self.port}", "-s", self.scheduler]
        if self.persistence:
            words += ["-p", str(self.persistence)]
        return [["ip", "netns", "exec", self.ns, *words]]


@record
class IpvsDest(Action):
    protocol: str = "tcp"
    vip: str = ""
    port: int = 0
    rip: str = ""
    rport: int = 0
    weight: int = 1
    method: str = "nat"  # nat | dr | tun: the caller always names it (see kernel/ipvs.py)

    FLAGS = {"nat": "-m", "dr": "-g", "tun": "-i"}

    def argvs(self):
        flag = "-t" if self.protocol == "tcp" else "-u"
        return [["ip", "netns", "exec", self.ns, "ipvsadm", "-a", flag, f"{self.vip}:{self.port}",
                 "-r", f"{self.rip}:{self.rport}", self.FLAGS[self.method], "-w", str(self.weight)]]


@record
class StartApp(Action):
    """A built-in server (nslab.apps.*) started inside the node and recorded in the state."""

    node: str = ""
    kind: str = "http"
    port: int = 80
    protocol: str = "tcp"
    reply_size: int | None = None  # http: bytes of each reply body

    def app_argv(self) -> list[str]:
        argv = pyhelper.argv(f"nslab.apps.{self.kind}", "--name", self.node, "--port", str(self.port))
        if self.kind == "echo":
            argv += ["--protocol", self.protocol]
        if self.reply_size:
            argv += ["--reply-size", str(self.reply_size)]
        return argv

    def argvs(self):
        return [["ip", "netns", "exec", self.ns, "python3", *self.app_argv()[2:]]]  # as a user types it: no -S

    def commands(self):
        return [c + " &" for c in super().commands()]


@record
class StartProxy(Action):
    """haproxy started inside the node with a configuration of nslab's, recorded in the state like an app."""

    node: str = ""
    port: int = 80
    config: str = ""  # haproxy.cfg, written beside the lab's state

    @property
    def config_path(self) -> str:
        lab = self.ns[: -len(self.node) - 1]
        return f"/run/nslab/{lab}/{self.node}-haproxy.cfg"

    def argvs(self):
        return [["ip", "netns", "exec", self.ns, "haproxy", "-db", "-f", self.config_path]]

    def commands(self):
        return [f"mkdir -p {shlex.quote(self.config_path.rpartition('/')[0])}",
                f"cat > {shlex.quote(self.config_path)} <<'EOF'\n{self.config}EOF"] + [c + " &" for c in super().commands()]


@record
class Exec(Action):
    """A start-up command from the topology's `exec:`; run once, when the lab is first built."""

    argv: tuple[str, ...] = ()
    node: str = ""

    def argvs(self):
        return [["ip", "netns", "exec", self.ns, *self.argv]]


@record
class StartKeepalived(Action):
    """keepalived in a director's namespace, a lab process of that node like an app (recorded in the state;
    `down` ends it): its config, pid files and notify files live in the lab's state dir, it logs to its
    console (-l -D, no syslog: -G), which nslab keeps in a log file beside them."""

    node: str = ""
    config: str = ""  # keepalived.conf's text (plan/keepalived.py)
    conf: str = ""  # where it is written
    pids: tuple[str, ...] = ()  # pid files: parent, vrrp, checkers
    notify_dir: str = ""  # where its notify commands touch files

    def keepalived_argv(self) -> list[str]:
        parent, vrrp, checkers = self.pids
        return ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--use-file", self.conf,
                "--pid", parent, "--vrrp_pid", vrrp, "--checkers_pid", checkers]

    def argvs(self):
        return [["mkdir", "-p", self.notify_dir], ["ip", "netns", "exec", self.ns, *self.keepalived_argv()]]

    def commands(self):
        mkdir, start = super().commands()
        return [mkdir, f"cat > {shlex.quote(self.conf)} <<'EOF'\n{self.config}EOF", start + " &"]
