"""The topology as declared: frozen records (nslab.record), no kernel knowledge."""

from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from ..record import field, record


class Forward(str, Enum):
    """How a director hands a request to a real server (LVS forwarding method)."""

    NAT = "nat"
    DR = "dr"
    TUN = "tun"


# The schedulers the kernel's IPVS ships (net/netfilter/ipvs/ip_vs_*.c).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
APPS = ("http", "echo")
PROTOCOLS = ("tcp", "udp")
HEALTH_CHECKS = ("http", "tcp")
ON_FAILURE = ("remove", "weight0")


@record
class Switch:
    """A switch's settings, where the topology gives any (`switches: [{name: lan, ageing: 0}]`)."""

    name: str
    ageing: int | None = None  # seconds a learned MAC stays in the bridge's FDB; None: the kernel's 300


@record
class Impair:
    """netem (and tbf) on what an interface sends."""

    delay_us: int = 0
    jitter_us: int = 0
    loss_pct: float = 0.0
    rate_bit: int = 0  # bits per second; 0: no limit


@record
class Interface:
    name: str
    addresses: tuple[IPv4Interface, ...] = ()
    switch: str | None = None
    peer: tuple[str, str] | None = None  # (node, interface) of a direct link
    mac: str | None = None
    impair: Impair | None = None
    vlans: tuple[int, ...] = ()  # on a switch: its port's VLANs; else the VLAN of a sub-interface PARENT.VID
    trunk: bool = False  # vlans given as a list: the switch port carries them tagged

    @property
    def parent(self) -> str | None:
        """The trunk interface of an 802.1Q sub-interface (named PARENT.VID); None for any other."""
        return self.name.rpartition(".")[0] if self.vlans and not self.switch and not self.peer else None


@record
class Route:
    to: IPv4Network
    via: IPv4Address | None = None
    dev: str | None = None
    origin: tuple = field(default=(), compare=False, repr=False)  # YAML path, for messages

    @property
    def is_default(self) -> bool:
        return self.to.prefixlen == 0


@record
class Nat:
    """Masquerade (SNAT to the interface's address) traffic leaving `out`."""

    out: str
    source: IPv4Network | None = None


@record
class PortForward:
    """DNAT: packets for the node's own `port` (arriving on `iface`, or any) go on to to_ip:to_port."""

    port: int
    to_ip: IPv4Address
    to_port: int
    iface: str | None = None
    protocol: str = "tcp"


@record
class App:
    kind: str  # one of APPS
    port: int | None = None  # None: the port of the service it serves, else 80 (http) / 7 (echo)
    protocol: str = "tcp"
    reply_size: int | None = None  # http: bytes of each reply body; None: just the node's name


@record
class Proxy:
    """haproxy in a node: round robin over `servers`, a path prefix to one server."""

    servers: tuple[str, ...]
    port: int = 80
    paths: tuple[tuple[str, str], ...] = ()  # (prefix, node)


@record
class Node:
    name: str
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    forward: bool | None = None  # None: derived (a NAT director forwards)
    sysctls: tuple[tuple[str, str], ...] = ()
    nat: tuple[Nat, ...] = ()
    dnat: tuple[PortForward, ...] = ()  # port forwards, from the `dnat:` entries of `nat:`
    exec: tuple[tuple[str, ...], ...] = ()
    app: App | None = None
    proxy: Proxy | None = None

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    @property
    def gateway(self) -> IPv4Address | None:
        return next((r.via for r in self.routes if r.is_default), None)


@record
class RealServer:
    node: str
    weight: int = 1
    address: IPv4Address | None = None  # None: derived from the topology
    port: int | None = None  # None: the service's port


@record
class Health:
    """How keepalived checks a real server (its HTTP_GET or TCP_CHECK)."""

    check: str = "http"  # one of HEALTH_CHECKS
    path: str = "/"
    interval: int = 1  # seconds between checks (delay_loop)
    timeout: int = 1  # seconds (connect_timeout)
    retries: int = 1  # failed checks in a row after the first before it counts as down


@record
class Service:
    name: str
    director: str
    vip: IPv4Address
    port: int
    protocol: str = "tcp"
    scheduler: str = "rr"
    forward: Forward = Forward.NAT
    persistence: int | None = None
    real_servers: tuple[RealServer, ...] = ()
    arp_tuning: bool = True  # DR/TUN: arp_ignore=1, arp_announce=2 on real servers
    rp_filter_relax: bool = True  # TUN: rp_filter 0 on real servers so decapsulated packets pass
    vip_interface: str | None = None  # the director interface that holds the VIP; None: derived
    return_path_check: bool = True  # NAT: refuse real servers whose replies bypass the director
    directors: tuple[str, ...] = ()  # a VRRP pair (or more), `director` first; () for one director
    health: Health | None = None
    on_failure: str = "remove"  # one of ON_FAILURE
    sorry_server: str | None = None  # a node answering while every real server is down

    @property
    def keepalived(self) -> bool:
        """keepalived owns this service's IPVS table (and its VIP, for a pair)."""
        return bool(self.health or self.directors)


@record
class Expect:
    """A lab's own claim for `verify`: traffic from a node to a target takes (or never takes) a path."""

    sender: str  # the sending node (`from:` in YAML)
    to: str  # a node, a service name or IP:PORT
    reaches: bool = True  # False: the request must go unanswered (a lab broken on purpose)
    path: tuple[str, ...] = ()  # the request's nodes in order, sender first
    reply_path: tuple[str, ...] = ()  # the reply's nodes in order
    same_ip: bool = False  # the request keeps its IP pair on every link (no NAT on the way)
    traceroute: bool = False  # TTL-limited probes are answered by each router of `path` in turn
    switch_learning: bool = False  # the shared switch floods the first frame to `to`, then learns its port
    connections: int | None = None  # connections held open at once, each its own client port (the 4-tuple)
    share: tuple[tuple[str, int], ...] = ()  # (real server, weight): the split of a service's connections


@record
class Topology:
    name: str
    nodes: tuple[Node, ...]
    switches: tuple[str, ...] = ()  # every switch's name
    switch_settings: tuple[Switch, ...] = ()  # the switches given as a mapping, with their settings
    services: tuple[Service, ...] = ()
    expect: tuple[Expect, ...] = ()
    description: str = ""
    source: str = field(default="<string>", compare=False)
    text: str = field(default="", compare=False, repr=False)  # the YAML it came from, kept in the lab's state

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    def switch(self, name: str) -> Switch:
        return next((s for s in self.switch_settings if s.name == name), Switch(name))
