"""What a topology file may say, declared once: the loader (build.py) takes its key lists, required keys,
names, limits and defaults from here, `nslab schema` (jsonschema.py) turns it into a JSON Schema, and each
key's description is its documentation.

Types: Text, Int, Bool, List (of a type), Map (name -> a type), Ref (an Obj, by name) and Either (a
shorthand: one of several forms). build.py reads every key declared here; test_jsonschema checks that.
"""

import re

from ..record import field, record
from .names import LAB_NAME, MAX_LAB, MAX_NODE
from .schema import APPS, HEALTH_CHECKS, ON_FAILURE, PROTOCOLS, SCHEDULERS, Forward
from .sysctls import INTERFACE_SYSCTLS, NETNS_SYSCTLS

NODE_NAME = LAB_NAME
IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
SWITCH_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
SYSCTL_KEY = re.compile(r"^net\.[A-Za-z0-9_.-]+$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MAX_IFNAME = 15  # IFNAMSIZ - 1
MAX_REPLY = 64 * 1024 * 1024  # an http reply body the app builds once, in memory
CHARSET = {LAB_NAME.pattern: "lowercase letters and digits, '-' between them, starting with a letter",
           IFNAME.pattern: "letters, digits, '_', '.', '-', starting with a letter",
           SWITCH_NAME.pattern: "lowercase letters, digits, '_', '-', starting with a letter"}
RESERVED_NODES = ("fabric",)  # <lab>-fabric holds the switches
# Device names no interface or switch may take: the kernel refuses 'all' and 'default' (they would
# clash with /proc/sys/net/ipv4/conf/all|default) and has 'lo' in every namespace; and once a tunnel
# module is loaded it creates its fallback device in every new namespace (tunl0 is the one TUN labs use).
RESERVED_DEVICES = {"all": "/proc/sys/net/ipv4/conf/all names every interface",
                    "default": "/proc/sys/net/ipv4/conf/default names the defaults of new interfaces",
                    "lo": "every namespace has its loopback 'lo'"}
RESERVED_DEVICES.update({dev: f"the kernel creates '{dev}' in every namespace once the {mod} module is loaded"
                         for dev, mod in (("tunl0", "ipip"), ("sit0", "sit"), ("gre0", "ip_gre"),
                                          ("gretap0", "ip_gre"), ("erspan0", "ip_gre"), ("ip_vti0", "ip_vti"),
                                          ("ip6_vti0", "ip6_vti"), ("ip6tnl0", "ip6_tunnel"),
                                          ("ip6gre0", "ip6_gre"))})

# Text patterns for the schema only: the loader checks these values with the ipaddress module.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_PREFIX = rf"([0-9]|[12][0-9]|3[0-2]|{_IPV4})"  # a length or a netmask, as ipaddress takes them
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
IPV4_TEXT = rf"^{_IPV4}$"
CIDR_TEXT = rf"^{_IPV4}/{_PREFIX}$"
NETWORK_TEXT = rf"^(default|{_IPV4}(/{_PREFIX})?)$"
VIP_TEXT = rf"^{_IPV4}:{_PORT}$"
PEER_TEXT = r"^[^:]+:[^:]+$"
UNICAST_MAC_TEXT = r"^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$"  # the low bit of octet 1 marks a group
NO_NUL_TEXT = r"^[^\x00]*$"  # exec() refuses a NUL in a word
COMMAND_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"  # some words, no NUL
SYSCTL_VALUE_TEXT = r"\S"
PATH_PREFIX_TEXT = r"^/[A-Za-z0-9._~/-]*$"
# A URL path and query in keepalived.conf, written bare: none of its comment ('#', '!'), quoting, block ('{', '}'),
# variable ('$') or escape ('\') characters, nothing outside ASCII.
URL_PATH_TEXT = r"^/[A-Za-z0-9._~/?=&%+:@,;*()-]*$"
DURATION_TEXT = r"^[0-9]+(\.[0-9]+)?(us|ms|s)$"
PERCENT_TEXT = r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)%$"
RATE_TEXT = r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$"


@record
class Text:
    pattern: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    enum: tuple | None = None
    forbid: tuple = ()  # values the pattern lets through but nslab refuses (reserved names)
    doc: str = ""  # what this form means, where it is one form of several


@record
class Int:
    lo: int | None = None
    hi: int | None = None


@record
class Bool:
    pass


@record
class List:
    item: object
    unique: bool = False
    min_items: int | None = None
    doc: str = ""


@record
class Map:
    """A mapping from names (the key Text) to values."""

    key: Text
    value: object
    min_items: int | None = None
    names: object = None  # a further type every name must have (the schema's propertyNames)


@record
class Ref:
    obj: str  # an Obj's name
    doc: str = ""
    nullable: bool = False  # null: the object with no settings


@record
class Either:
    """A shorthand: the value takes one of these forms."""

    forms: tuple


@record
class Key:
    name: str
    type: object
    doc: str
    required: bool = False
    nullable: bool = False  # null means the same as leaving the key out
    default: object = None


@record
class Obj:
    name: str
    doc: str
    keys: tuple
    any_of: tuple = ()  # at least one of these keys
    not_both: tuple = ()  # never all of these keys together
    fields: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self.fields.update({k.name: k for k in self.keys})

    @property
    def names(self) -> tuple:
        return tuple(k.name for k in self.keys)

    @property
    def required(self) -> tuple:
        return tuple(k.name for k in self.keys if k.required)

    def default(self, key):
        return self.fields[key].default


def _name(pattern, limit, forbid=()):
    return Text(pattern=pattern.pattern, max_length=limit, forbid=tuple(forbid))


# The sysctls a node may set (sysctls.py): a namespace's own keys, or a per-interface key for one interface.
SYSCTL_NAMES = Either((
    Text(enum=tuple(sorted(NETNS_SYSCTLS)), doc="a key of the node's namespace"),
    Text(pattern="^(" + "|".join(re.escape(prefix) + r"[^.]+\.(" + "|".join(sorted(leaves)) + ")"
                                 for prefix, leaves in INTERFACE_SYSCTLS.items()) + ")$",
         doc="a per-interface key: PREFIX.INTERFACE.KEY, INTERFACE being one of the node's, 'all' or 'default'")))
NODE_REF = _name(NODE_NAME, MAX_NODE)
CIDR = Text(pattern=CIDR_TEXT, doc="one IPv4 address with its prefix length, e.g. 10.0.0.1/24")
CIDRS = List(CIDR, doc="several, e.g. [10.0.0.1/24, 10.0.0.5/24]")
PATH = List(NODE_REF)
PORT = Int(1, 65535)

EXPECT = Obj("expect", "A lab's own claim for `verify`: traffic from a node to a target takes (or never takes) "
             "a path.", (
                 Key("from", NODE_REF, "The sending node.", required=True),
                 Key("to", Text(min_length=1), "A node, a service name or IP:PORT.", required=True),
                 Key("reaches", Bool(), "false: the request must go unanswered (a lab broken on purpose).",
                     default=True),
                 Key("path", PATH, "The request's nodes in order, the sender first."),
                 Key("reply_path", PATH, "The reply's nodes in order."),
                 Key("same_ip", Bool(), "true: the request keeps its IP pair on every link (no router may NAT "
                     "it); the lesson 'the IP stays, the MAC changes'.", default=False),
                 Key("traceroute", Bool(), "true: ICMP probes with TTL 1, 2, ... are answered time-exceeded by each "
                     "router of `path` in turn, then by the target; the TTL falls by one per router.", default=False),
                 Key("switch_learning", Bool(), "true: with the FDB of the switch `from` and `to` share emptied, the "
                     "first frame to `to`'s MAC floods every port; its answer teaches the switch, and later frames "
                     "reach `to`'s port only.", default=False),
                 Key("connections", Int(1, 10000), "Open this many TCP connections at once from `from` to `to` (a "
                     "node's app or IP:PORT) and hold them: each needs a client port of its own, and the server's "
                     "socket table shows each 4-tuple."),
                 Key("share", Map(NODE_REF, Int(0, 65535), min_items=1),
                     "`to` a service: how its connections should split among its real servers, as weights, e.g. "
                     "{rs1: 3, rs2: 1}; verify sends many requests and compares."),
             ))
IMPAIR = Obj("impair", "Link impairment on the packets leaving this interface (the kernel's netem, and tbf for a "
              "rate): the loss and delay of a long or bad line. Needs sch_netem (and sch_tbf).", (
                  Key("delay", Text(pattern=DURATION_TEXT), "Added to every packet, e.g. 50ms (us, ms, s); at most "
                      "60s."),
                  Key("jitter", Text(pattern=DURATION_TEXT), "The delay varies this much either way, e.g. 5ms (at "
                      "most 60s); needs "
                      "a delay."),
                  Key("loss", Text(pattern=PERCENT_TEXT), "The share of packets dropped at random, e.g. 1%."),
                  Key("rate", Text(pattern=RATE_TEXT), "The line's speed, e.g. 10mbit (bit, kbit, mbit, gbit), from "
                      "1kbit to 32gbit."),
              ), any_of=("delay", "loss", "rate"))
INTERFACE = Obj("interface", "A network interface of a node: on a switch, on a direct link to another node's "
                "interface, or the loopback 'lo' (addresses only).", (
                    Key("switch", Text(min_length=1), "The switch (L2 segment) this interface is plugged into.",
                        nullable=True),
                    Key("peer", Text(pattern=PEER_TEXT), "NODE:INTERFACE at the other end of a direct link "
                        "(no switch), e.g. router:eth2."),
                    Key("address", Either((CIDR, CIDRS)), "The interface's IPv4 address with its prefix length.",
                        nullable=True),
                    Key("addresses", Either((CIDRS, CIDR)), "The interface's IPv4 addresses, each with its prefix "
                        "length (as well as or instead of 'address').", nullable=True),
                    Key("mac", Text(pattern=UNICAST_MAC_TEXT, forbid=("00:00:00:00:00:00",)),
                        "The interface's MAC address (unicast), e.g. 02:00:00:00:00:01; default: the kernel's."),
                    Key("impair", Ref("impair"), "Delay, jitter, loss and a rate limit on what this interface sends, "
                        "e.g. {delay: 50ms, jitter: 5ms, loss: 1%, rate: 10mbit}."),
                    Key("vlan", Either((Int(1, 4094), List(Int(1, 4094), unique=True, min_items=1))),
                        "On a switch: a number makes its port an access port of that VLAN (frames untagged); a "
                        "list makes it a trunk carrying those VLANs tagged. Without a switch, on an interface named "
                        "PARENT.VID: an 802.1Q sub-interface of the trunk PARENT for VLAN VID."),
                ), not_both=("switch", "peer"))
ROUTE = Obj("route", "A static route in the node's main table.", (
    Key("to", Text(pattern=NETWORK_TEXT), "'default' or a prefix with no host bits set, e.g. 10.1.0.0/24.",
        required=True),
    Key("via", Text(pattern=IPV4_TEXT), "The next hop's address, e.g. 10.0.0.1."),
    Key("dev", Text(min_length=1), "The interface to send out of.", nullable=True),
), any_of=("via", "dev"))
NAT = Obj("nat", "Masquerade (SNAT to the interface's own address) traffic leaving an interface, or forward a "
          "port of the node to another address (DNAT).", (
    Key("masquerade", Text(), "The interface whose address replaces the source."),
    Key("source", Text(pattern=NETWORK_TEXT), "Masquerade only traffic from this prefix, e.g. 10.0.0.0/24; "
        "default: all."),
    Key("dnat", PORT, "A port forward: packets for this port of the node's own addresses get `to` as their "
        "destination."),
    Key("to", Text(pattern=VIP_TEXT), "DNAT: the new destination IP:PORT, e.g. 192.168.0.10:80."),
    Key("in", Text(min_length=1), "DNAT: only packets arriving on this interface; default: any."),
    Key("protocol", Text(enum=PROTOCOLS), "DNAT: tcp or udp.", default="tcp"),
), any_of=("masquerade", "dnat"), not_both=("masquerade", "dnat"))
APP = Obj("app", "A built-in server in the node.", (
    Key("type", Text(enum=APPS), "http answers every request with the node's name; echo sends back what it "
        "gets.", required=True),
    Key("port", PORT, "The port it listens on; default: the port of the service it serves, else 80 (http) or "
        "7 (echo)."),
    Key("protocol", Text(enum=PROTOCOLS + ("both",)), "tcp, udp or both.", default="tcp"),
    Key("reply_size", Int(1, MAX_REPLY), "http: the bytes of every reply's body (the node's name, then "
        "filler), e.g. 100000 to see large replies cross, or bypass, a director; default: just the name."),
))
PROXY = Obj("proxy", "An HTTP reverse proxy in the node: Debian's haproxy, started by nslab. It ends each client's "
             "TCP connection and opens its own to a server (layer 7), and can choose the server by the request's "
             "path, which IPVS (layer 4) never sees.", (
                 Key("port", PORT, "The port it listens on, on every address of the node.", default=80),
                 Key("servers", List(NODE_REF, unique=True, min_items=1), "Nodes with an http app: each new "
                     "connection goes to the next (round robin).", required=True),
                 Key("paths", Map(Text(pattern=PATH_PREFIX_TEXT), NODE_REF, min_items=1),
                     "A path prefix to the one server that answers it, e.g. {/api: rs2}.", nullable=True),
             ))
COMMAND = Either((Text(pattern=COMMAND_TEXT, doc="a command line, split into words like a shell would"),
                  List(Either((Text(pattern=NO_NUL_TEXT), Int())), min_items=1, doc="the command's words")))
NODE = Obj("node", "A host or router: one network namespace.", (
    Key("interfaces", Map(_name(IFNAME, MAX_IFNAME, (d for d in RESERVED_DEVICES if d != "lo")),
                          Ref("interface", nullable=True)),
        "Interface name to its settings.", nullable=True),
    Key("gateway", Text(pattern=IPV4_TEXT), "The default route's next hop: short for routes: [{to: default, "
        "via: ...}]."),
    Key("routes", List(Ref("route")), "Static routes.", nullable=True),
    Key("forward", Bool(), "net.ipv4.ip_forward in this node; default: derived (a NAT director forwards)."),
    Key("sysctls", Map(Text(pattern=SYSCTL_KEY.pattern), Either((Int(), Text(pattern=SYSCTL_VALUE_TEXT))),
                       names=SYSCTL_NAMES),
        "net.* sysctl key to value, set in this node's namespace, e.g. net.ipv4.conf.all.rp_filter: 1 "
        "(per-interface keys name one of the node's interfaces, 'all' or 'default').", nullable=True),
    Key("nat", Either((Ref("nat", doc="one rule"), List(Ref("nat"), doc="several rules"))),
        "Source NAT (masquerade) out of an interface, and port forwards (DNAT).", nullable=True),
    Key("exec", List(COMMAND), "Commands run once when the lab is built (argv, never a shell).", nullable=True),
    Key("app", Either((Text(enum=APPS, doc="the app's type, with its defaults"), Ref("app"))),
        "A built-in server: http or echo, or {type, port, protocol}.", nullable=True),
    Key("proxy", Ref("proxy"), "An HTTP reverse proxy (haproxy) in front of other nodes' http apps."),
))
REAL_SERVER = Obj("real_server", "A real server of an LVS service: a node.", (
    Key("weight", Int(0, 65535), "Its IPVS weight; 0 sends it no new connections.", default=1),
    Key("address", Text(pattern=IPV4_TEXT), "The address the director sends to; default: found from the "
        "topology."),
    Key("port", PORT, "The port it serves on; default: the service's port."),
))
HEALTH = Obj("health", "keepalived checks each real server and takes a failed one out of IPVS until it answers "
              "again.", (
                  Key("check", Text(enum=HEALTH_CHECKS), "http: GET `path` must answer 200; tcp: a connection "
                      "must open.", default="http"),
                  Key("path", Text(pattern=URL_PATH_TEXT), "The URL path an http check asks for.", default="/"),
                  Key("interval", Int(1, 3600), "Seconds between two checks of a real server.", default=1),
                  Key("timeout", Int(1, 3600), "Seconds a check may take before it counts as failed.", default=1),
                  Key("retries", Int(0, 100), "Failed checks in a row, after the first, before the real server "
                      "counts as down.", default=1),
              ))
SERVICE = Obj("service", "An LVS virtual service on a director (the kernel's IPVS).", (
    Key("director", NODE_REF, "The node that holds the VIP and balances."),
    Key("directors", List(NODE_REF, unique=True, min_items=2),
        "Instead of director: a VRRP pair (or more), the first one master; keepalived moves the VIP to a backup "
        "when the master fails."),
    Key("vip", Text(pattern=VIP_TEXT), "The virtual IP and port, e.g. 10.0.0.100:80.", required=True),
    Key("protocol", Text(enum=PROTOCOLS), "tcp or udp.", default="tcp"),
    Key("scheduler", Text(enum=SCHEDULERS), "The IPVS scheduler.", default="rr"),
    Key("forward", Text(enum=tuple(f.value for f in Forward)), "How the director hands a request to a real "
        "server: nat, dr (direct routing) or tun (IP-in-IP).", default="nat"),
    Key("persistence", Int(1, 86400 * 30), "Seconds a client sticks to its real server; default: none.",
        nullable=True),
    Key("real_servers", Map(NODE_REF, Ref("real_server", nullable=True)), "Node name to its settings.", required=True,
        nullable=True),
    Key("arp_tuning", Bool(), "DR/TUN: arp_ignore=1, arp_announce=2 on the real servers; false breaks the lab "
        "on purpose.", default=True),
    Key("rp_filter_relax", Bool(), "TUN: rp_filter 0 on the real servers so decapsulated packets pass.",
        default=True),
    Key("vip_interface", Text(min_length=1), "The director interface that holds the VIP; default: derived.",
        nullable=True),
    Key("return_path_check", Bool(), "NAT: refuse real servers whose replies bypass the director.", default=True),
    Key("health", Ref("health", nullable=True), "Health-check the real servers (keepalived then owns this "
        "service's IPVS table); null: the defaults."),
    Key("on_failure", Text(enum=ON_FAILURE), "What a failed health check does to a real server: remove takes "
        "it out of IPVS, weight0 keeps it with weight 0 (keepalived's inhibit_on_failure).", default="remove"),
    Key("sorry_server", NODE_REF, "A node that gets the requests while every real server is down."),
), any_of=("director", "directors"), not_both=("director", "directors"))
SWITCH = Obj("switch", "A switch (one Linux bridge) with settings.", (
    Key("name", _name(SWITCH_NAME, MAX_IFNAME, RESERVED_DEVICES), "The switch's name.", required=True),
    Key("ageing", Int(0, 1000000), "Seconds the switch remembers the port a MAC was seen on (the bridge's "
        "ageing_time); 0 forgets at once, so it floods every frame like a hub. Default: the kernel's 300."),
))
TOPOLOGY = Obj("topology", "An nslab lab: switches, nodes, LVS services and expectations.", (
    Key("name", _name(LAB_NAME, MAX_LAB), "The lab's name.", required=True),
    Key("description", Text(), "One line on what the lab is.", nullable=True),
    Key("switches", List(Either((Text(pattern=SWITCH_NAME.pattern, max_length=MAX_IFNAME,
                                      forbid=tuple(RESERVED_DEVICES), doc="a switch's name, kernel defaults"),
                                 Ref("switch", doc="a switch with settings"))), unique=True),
        "L2 segments: one Linux bridge each.", nullable=True),
    Key("nodes", Map(_name(NODE_NAME, MAX_NODE, RESERVED_NODES), Ref("node", nullable=True),
                     min_items=1), "Node name to its settings.", required=True),
    Key("services", Map(_name(NODE_NAME, MAX_NODE), Ref("service")), "Service name to an LVS service.",
        nullable=True),
    Key("expect", List(Ref("expect")), "Claims `verify` checks.", nullable=True),
))
OBJECTS = {o.name: o for o in (TOPOLOGY, SWITCH, NODE, INTERFACE, IMPAIR, ROUTE, NAT, APP, PROXY, SERVICE, HEALTH,
                               REAL_SERVER, EXPECT)}
