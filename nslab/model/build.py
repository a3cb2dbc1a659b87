"""Raw YAML data -> Topology dataclasses, checking each field's own shape."""

import re
import shlex
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from .diag import Diagnostics
from .schema import (APPS, PROTOCOLS, SCHEDULERS, App, Expect, Forward, Interface, Nat, Node, RealServer,
                     Route, Service, Topology)

LAB_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
NODE_NAME = LAB_NAME
IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
SWITCH_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
SYSCTL_KEY = re.compile(r"^net\.[A-Za-z0-9_.-]+$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MAX_LAB = 16
MAX_NODE = 24
MAX_IFNAME = 15  # IFNAMSIZ - 1
RESERVED_NODES = ("fabric",)  # <lab>-fabric holds the switches

TOP_KEYS = ("name", "description", "switches", "nodes", "services", "expect")
EXPECT_KEYS = ("from", "to", "reaches", "path", "reply_path")
NODE_KEYS = ("interfaces", "gateway", "routes", "forward", "sysctls", "nat", "exec", "app")
IF_KEYS = ("switch", "peer", "address", "addresses", "mac")
ROUTE_KEYS = ("to", "via", "dev")
NAT_KEYS = ("masquerade", "source")
APP_KEYS = ("type", "port", "protocol")
SERVICE_KEYS = ("director", "vip", "protocol", "scheduler", "forward", "persistence", "real_servers",
                "arp_tuning", "rp_filter_relax", "vip_interface", "return_path_check")
RS_KEYS = ("weight", "address", "port")


class Builder:
    def __init__(self, source):
        self.src = source
        self.d = Diagnostics(source)

    # -- small typed readers: each reports at its path and returns None on error --

    def mapping(self, path, value, what):
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.d.error(path, f"must be a mapping of {what}")
            return {}
        return value

    def name(self, path, value, pattern, limit, what):
        if not isinstance(value, str) or not pattern.match(value) or len(value) > limit:
            self.d.error(path, f"{value!r} is not a valid {what}",
                         f"use up to {limit} characters: {self._charset(pattern)}")
            return None
        return value

    @staticmethod
    def _charset(pattern):
        return {LAB_NAME.pattern: "lowercase letters and digits, '-' between them, starting with a letter",
                IFNAME.pattern: "letters, digits, '_', '.', '-', starting with a letter",
                SWITCH_NAME.pattern: "lowercase letters, digits, '_', '-', starting with a letter"}[pattern.pattern]

    def address_with_prefix(self, path, value):
        try:
            if not isinstance(value, str) or "/" not in value:
                raise ValueError
            return IPv4Interface(value)
        except ValueError:
            self.d.error(path, f"{value!r} is not an IPv4 address with a prefix length", "e.g. 10.0.0.1/24")
            return None

    def address(self, path, value):
        try:
            return IPv4Address(value)
        except ValueError:
            self.d.error(path, f"{value!r} is not an IPv4 address", "e.g. 10.0.0.1")
            return None

    def network(self, path, value):
        if value == "default":
            return IPv4Network("0.0.0.0/0")
        try:
            return IPv4Network(value)
        except (ValueError, TypeError):
            self.d.error(path, f"{value!r} is not a network", "use 'default' or a prefix like 10.1.0.0/24 "
                         "with no host bits set")
            return None

    def integer(self, path, value, lo, hi):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.d.error(path, f"{value!r} is not a whole number from {lo} to {hi}")
            return None
        return value

    def boolean(self, path, value):
        if not isinstance(value, bool):
            self.d.error(path, f"{value!r} is not true or false")
            return None
        return value

    def choice(self, path, value, allowed, what):
        if value not in allowed:
            self.d.error(path, f"{value!r} is not a known {what}", "one of: " + ", ".join(allowed))
            return None
        return value

    # -- the document --

    def topology(self) -> Topology:
        raw = self.src.data
        self.d.unknown_keys((), raw, TOP_KEYS)
        for key in ("name", "nodes"):
            if key not in raw:
                self.d.error((), f"missing required key '{key}'")
        name = self.name(("name",), raw.get("name"), LAB_NAME, MAX_LAB, "lab name") if "name" in raw else None
        description = raw.get("description") or ""
        if not isinstance(description, str):
            self.d.error(("description",), "must be text")
        switches = self.switches(raw.get("switches"))
        nodes_raw = self.mapping(("nodes",), raw.get("nodes"), "node name to node")
        nodes = tuple(n for n in (self.node(("nodes", k), k, v) for k, v in nodes_raw.items()) if n)
        services_raw = self.mapping(("services",), raw.get("services"), "service name to service")
        services = tuple(s for s in (self.service(("services", k), k, v) for k, v in services_raw.items()) if s)
        expect = self.expectations(raw.get("expect"))
        return Topology(name=name or "", nodes=nodes, switches=switches, services=services, expect=expect,
                        description=description if isinstance(description, str) else "",
                        source=self.src.filename)

    def expectations(self, raw):
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.d.error(("expect",), "must be a list", "e.g. expect: [{from: host1, to: host2, path: [host1, r1, "
                         "host2]}]")
            return ()
        out = []
        for i, e in enumerate(raw):
            p = ("expect", i)
            e = self.mapping(p, e, "from/to/reaches/path/reply_path")
            self.d.unknown_keys(p, e, EXPECT_KEYS)
            if not isinstance(e.get("from"), str) or not isinstance(e.get("to"), str):
                self.d.error(p, "needs 'from: NODE' and 'to: NODE|SERVICE|IP:PORT'")
                continue
            paths = {}
            for key in ("path", "reply_path"):
                value = e.get(key, [])
                if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                    self.d.error(p + (key,), "must be a list of node names", "e.g. [host1, r1, host2]")
                    value = []
                paths[key] = tuple(value)
            reaches = self.boolean(p + ("reaches",), e["reaches"]) if "reaches" in e else True
            out.append(Expect(sender=e["from"], to=e["to"], reaches=reaches is not False, **paths))
        return tuple(out)

    def switches(self, raw):
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.d.error(("switches",), "must be a list of switch names", "e.g. switches: [lan, wan]")
            return ()
        out = []
        for i, s in enumerate(raw):
            if self.name(("switches", i), s, SWITCH_NAME, MAX_IFNAME, "switch name"):
                if s in out:
                    self.d.error(("switches", i), f"switch '{s}' is listed twice")
                out.append(s)
        return tuple(out)

    def node(self, path, name, raw):
        self.name(path, name, NODE_NAME, MAX_NODE, "node name")
        if name in RESERVED_NODES:
            self.d.error(path, f"'{name}' is reserved (the lab's '{name}' namespace holds its switches)",
                         "rename the node")
        raw = self.mapping(path, raw, "node settings")
        self.d.unknown_keys(path, raw, NODE_KEYS)
        ifs_raw = self.mapping(path + ("interfaces",), raw.get("interfaces"), "interface name to settings")
        interfaces = tuple(i for i in (self.interface(path + ("interfaces", k), k, v)
                                       for k, v in ifs_raw.items()) if i)
        routes = list(self.routes(path + ("routes",), raw.get("routes")))
        if "gateway" in raw:
            via = self.address(path + ("gateway",), raw["gateway"])
            if any(r.is_default for r in routes):
                self.d.error(path + ("gateway",), "the node has both 'gateway' and a default route",
                             "keep one of them")
            elif via:
                routes.insert(0, Route(to=IPv4Network("0.0.0.0/0"), via=via, origin=path + ("gateway",)))
        forward = self.boolean(path + ("forward",), raw["forward"]) if "forward" in raw else None
        return Node(name=name, interfaces=interfaces, routes=tuple(routes), forward=forward,
                    sysctls=self.sysctls(path + ("sysctls",), raw.get("sysctls")),
                    nat=self.nats(path + ("nat",), raw.get("nat")),
                    exec=self.execs(path + ("exec",), raw.get("exec")),
                    app=self.app(path + ("app",), raw.get("app")))

    def interface(self, path, name, raw):
        self.name(path, name, IFNAME, MAX_IFNAME, "interface name")
        raw = self.mapping(path, raw, "interface settings")
        self.d.unknown_keys(path, raw, IF_KEYS)
        addrs_raw = []
        for key in ("address", "addresses"):
            value = raw.get(key)
            items = value if isinstance(value, list) else ([] if value is None else [value])
            addrs_raw += [((key, i) if isinstance(value, list) else (key,), a) for i, a in enumerate(items)]
        addrs = tuple(a for a in (self.address_with_prefix(path + p, v) for p, v in addrs_raw) if a)
        switch = raw.get("switch")
        if switch is not None and not isinstance(switch, str):
            self.d.error(path + ("switch",), "must be a switch name")
            switch = None
        peer = None
        if "peer" in raw:
            value = raw["peer"]
            if isinstance(value, str) and value.count(":") == 1 and all(value.split(":")):
                peer = tuple(value.split(":"))
            else:
                self.d.error(path + ("peer",), f"{value!r} is not NODE:INTERFACE", "e.g. peer: router:eth2")
        if switch and peer:
            self.d.error(path, "has both 'switch' and 'peer'", "an interface is on a switch or on a direct link")
        if name == "lo" and (switch or peer):
            self.d.error(path, "'lo' is the loopback interface: it takes addresses only")
        elif name != "lo" and not switch and not peer and "peer" not in raw and "switch" not in raw:
            self.d.error(path, "needs 'switch' or 'peer'", "e.g. switch: lan, or peer: router:eth2")
        mac = raw.get("mac")
        if mac is not None and (not isinstance(mac, str) or not MAC.match(mac.lower())):
            self.d.error(path + ("mac",), f"{mac!r} is not a MAC address", "e.g. 02:00:00:00:00:01")
            mac = None
        return Interface(name=name, addresses=addrs, switch=switch, peer=peer, mac=mac.lower() if mac else None)

    def routes(self, path, raw):
        if raw is None:
            return
        if not isinstance(raw, list):
            self.d.error(path, "must be a list of {to, via, dev}", "e.g. routes: [{to: 10.1.0.0/24, via: 10.0.0.1}]")
            return
        for i, r in enumerate(raw):
            p = path + (i,)
            r = self.mapping(p, r, "to/via/dev")
            self.d.unknown_keys(p, r, ROUTE_KEYS)
            if "to" not in r:
                self.d.error(p, "missing required key 'to'", "use 'default' or a prefix")
                continue
            if "via" not in r and "dev" not in r:
                self.d.error(p, "needs 'via' or 'dev'")
                continue
            to = self.network(p + ("to",), r["to"])
            via = self.address(p + ("via",), r["via"]) if "via" in r else None
            dev = r.get("dev")
            if dev is not None and not isinstance(dev, str):
                self.d.error(p + ("dev",), "must be an interface name")
                dev = None
            if to is not None and (via or dev):
                yield Route(to=to, via=via, dev=dev, origin=p)

    def sysctls(self, path, raw):
        raw = self.mapping(path, raw, "sysctl key to value")
        out = []
        for k, v in raw.items():
            if not isinstance(k, str) or not SYSCTL_KEY.match(k) or ".." in k:
                self.d.error(path + (k,), f"{k!r} is not a network sysctl",
                             "only net.* keys live in a node's namespace, e.g. net.ipv4.conf.all.rp_filter")
            elif isinstance(v, (bool, dict, list)) or v is None:
                self.d.error(path + (k,), f"{v!r} is not a sysctl value", "use a number or text")
            else:
                out.append((k, str(v)))
        return tuple(out)

    def nats(self, path, raw):
        if raw is None:
            return ()
        items = raw if isinstance(raw, list) else [raw]
        out = []
        for i, item in enumerate(items):
            p = path + (i,) if isinstance(raw, list) else path
            item = self.mapping(p, item, "masquerade/source")
            self.d.unknown_keys(p, item, NAT_KEYS)
            out_if = item.get("masquerade")
            if not isinstance(out_if, str):
                self.d.error(p, "needs 'masquerade: INTERFACE'", "the interface whose address replaces the source")
                continue
            source = self.network(p + ("source",), item["source"]) if "source" in item else None
            out.append(Nat(out=out_if, source=source))
        return tuple(out)

    def execs(self, path, raw):
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.d.error(path, "must be a list of commands")
            return ()
        out = []
        for i, cmd in enumerate(raw):
            try:
                # Split like a shell would, but never run a shell: the words become argv.
                argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
            except (ValueError, TypeError):
                argv = []
            if not argv:
                self.d.error(path + (i,), f"{cmd!r} is not a command", "a string or a list of words")
            else:
                out.append(tuple(argv))
        return tuple(out)

    def app(self, path, raw):
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {"type": raw}
        raw = self.mapping(path, raw, "type/port/protocol")
        self.d.unknown_keys(path, raw, APP_KEYS)
        kind = self.choice(path + ("type",) if "port" in raw or "protocol" in raw else path,
                           raw.get("type"), APPS, "app")
        port = self.integer(path + ("port",), raw["port"], 1, 65535) if "port" in raw else None
        proto = self.choice(path + ("protocol",), raw.get("protocol", "tcp"), PROTOCOLS + ("both",), "protocol")
        return App(kind=kind, port=port, protocol=proto or "tcp") if kind else None

    def service(self, path, name, raw):
        self.name(path, name, NODE_NAME, MAX_NODE, "service name")
        raw = self.mapping(path, raw, "service settings")
        self.d.unknown_keys(path, raw, SERVICE_KEYS)
        for key in ("director", "vip", "real_servers"):
            if key not in raw:
                self.d.error(path, f"missing required key '{key}'")
        vip, port = self.vip(path + ("vip",), raw.get("vip"))
        director = raw.get("director")
        protocol = self.choice(path + ("protocol",), raw.get("protocol", "tcp"), PROTOCOLS, "protocol")
        scheduler = self.choice(path + ("scheduler",), raw.get("scheduler", "rr"), SCHEDULERS, "IPVS scheduler")
        forward = self.choice(path + ("forward",), raw.get("forward", "nat"), [f.value for f in Forward],
                              "forwarding method")
        persistence = (self.integer(path + ("persistence",), raw["persistence"], 1, 86400 * 30)
                       if raw.get("persistence") is not None else None)
        flags = {k: self.boolean(path + (k,), raw[k]) for k in ("arp_tuning", "rp_filter_relax", "return_path_check") if k in raw}
        rs_raw = self.mapping(path + ("real_servers",), raw.get("real_servers"), "node name to weight/address/port")
        real_servers = []
        for node, settings in rs_raw.items():
            p = path + ("real_servers", node)
            settings = self.mapping(p, settings, "weight/address/port")
            self.d.unknown_keys(p, settings, RS_KEYS)
            real_servers.append(RealServer(
                node=node,
                weight=self.integer(p + ("weight",), settings.get("weight", 1), 0, 65535) or 0,
                address=self.address(p + ("address",), settings["address"]) if "address" in settings else None,
                port=self.integer(p + ("port",), settings["port"], 1, 65535) if "port" in settings else None))
        if not all((vip, port, isinstance(director, str), protocol, scheduler, forward)):
            return None
        return Service(name=name, director=director, vip=vip, port=port, protocol=protocol, scheduler=scheduler,
                       forward=Forward(forward), persistence=persistence, real_servers=tuple(real_servers),
                       vip_interface=raw.get("vip_interface"),
                       **{k: v for k, v in flags.items() if v is not None})

    def vip(self, path, raw):
        if raw is None:
            return None, None
        text = str(raw)
        host, sep, port = text.rpartition(":")
        try:
            if not sep:
                raise ValueError
            vip, port = IPv4Address(host), int(port)
            if not 1 <= port <= 65535:
                raise ValueError
            return vip, port
        except ValueError:
            self.d.error(path, f"{text!r} is not IP:PORT", "e.g. vip: 10.0.0.100:80")
            return None, None


def build(source) -> tuple[Topology, Diagnostics]:
    b = Builder(source)
    return b.topology(), b.d
