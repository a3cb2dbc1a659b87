"""Raw YAML data -> Topology records, checking each field's own shape (the keys, names and limits
come from spec.py)."""

import re
import shlex
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from .diag import Diagnostics
from .names import bridge_port
from .schema import (HEALTH_CHECKS, ON_FAILURE, App, Expect, Forward, Health, Impair, Interface, Nat, Node,
                     PortForward, Proxy, RealServer, Route, Service, Switch, Topology)
from .spec import (APP, APPS, CHARSET, EXPECT, HEALTH, IFNAME, IMPAIR, INTERFACE, LAB_NAME, MAC, MAX_IFNAME, MAX_LAB,
                   MAX_NODE, NAT, NODE, NODE_NAME, PATH_PREFIX_TEXT, PROTOCOLS, PROXY, REAL_SERVER, RESERVED_DEVICES,
                   RESERVED_NODES, ROUTE,
                   SCHEDULERS, SERVICE, SWITCH, SWITCH_NAME, SYSCTL_KEY, TOPOLOGY, URL_PATH_TEXT)
from .sysctls import netns_sysctl, split_interface_sysctl, sysctl_hint, sysctl_value_problem

# The keys each mapping may hold (and the did-you-mean candidates): the spec's.
TOP_KEYS, NODE_KEYS, IF_KEYS, ROUTE_KEYS = TOPOLOGY.names, NODE.names, INTERFACE.names, ROUTE.names
NAT_KEYS, APP_KEYS, SERVICE_KEYS, RS_KEYS = NAT.names, APP.names, SERVICE.names, REAL_SERVER.names
EXPECT_KEYS, SWITCH_KEYS, HEALTH_KEYS = EXPECT.names, SWITCH.names, HEALTH.names
IMPAIR_KEYS, PROXY_KEYS = IMPAIR.names, PROXY.names
PATH_PREFIX = re.compile(PATH_PREFIX_TEXT)
URL_PATH = re.compile(URL_PATH_TEXT)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
        if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > limit:
            self.d.error(path, f"{value!r} is not a valid {what}",
                         f"use up to {limit} characters: {CHARSET[pattern.pattern]}")
            return None
        return value


    def address_with_prefix(self, path, value):
        try:
            if not isinstance(value, str) or "/" not in value:
                raise ValueError
            found = IPv4Interface(value)
        except ValueError:
            self.d.error(path, f"{value!r} is not an IPv4 address with a prefix length", "e.g. 10.0.0.1/24")
            return None
        ip = found.ip
        if ip.is_unspecified or ip.is_multicast or ip == IPv4Address("255.255.255.255"):
            # the kernel takes these without a word, and then has no subnet route for them (0.0.0.0)
            self.d.error(path, f"{ip} is not an address a host can have (unspecified, multicast or broadcast)",
                         "e.g. 10.0.0.1/24")
            return None
        return found

    def address(self, path, value):
        # Only text: IPv4Address(True) is 0.0.0.1, an int is an address too, and 4 bytes (!!binary) are one.
        try:
            if not isinstance(value, str):
                raise ValueError
            return IPv4Address(value)
        except ValueError:
            self.d.error(path, f"{value!r} is not an IPv4 address", "e.g. 10.0.0.1")
            return None

    def network(self, path, value):
        if value == "default":
            return IPv4Network("0.0.0.0/0")
        try:
            if not isinstance(value, str):
                raise ValueError
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
        for key in TOPOLOGY.required:
            if key not in raw:
                self.d.error((), f"missing required key '{key}'")
        name = self.name(("name",), raw.get("name"), LAB_NAME, MAX_LAB, "lab name") if "name" in raw else None
        description = raw.get("description") or ""
        if not isinstance(description, str):
            self.d.error(("description",), "must be text")
        elif _CONTROL.search(description):
            # status prints it and graph writes it into SVG, where a control character is not allowed
            self.d.error(("description",), f"{description[:60]!r} holds a control character",
                         "write one line of plain text")
        switches, switch_settings = self.switches(raw.get("switches"))
        nodes_raw = self.mapping(("nodes",), raw.get("nodes"), "node name to node")
        nodes = tuple(n for n in (self.node(("nodes", k), k, v) for k, v in nodes_raw.items()) if n)
        if "nodes" in raw and not nodes_raw and isinstance(raw["nodes"], (dict, type(None))):
            self.d.error(("nodes",), "a lab needs at least one node",
                         "e.g. nodes: {host1: {interfaces: {eth0: {switch: lan, address: 10.0.0.1/24}}}}")
        services_raw = self.mapping(("services",), raw.get("services"), "service name to service")
        services = tuple(s for s in (self.service(("services", k), k, v) for k, v in services_raw.items()) if s)
        expect = self.expectations(raw.get("expect"))
        if not self.d.problems:  # like the cross-field rules, these assume each field has its own shape
            self.document(nodes, switches, services)
        return Topology(name=name or "", nodes=nodes, switches=switches, switch_settings=switch_settings,
                        services=services, expect=expect,
                        description=description if isinstance(description, str) else "",
                        source=self.src.filename)

    def document(self, nodes, switches, services):
        """Whole-document checks for names that would clash in the kernel during `up`."""
        fabric = {sw: (("switches", i), f"the switch '{sw}'") for i, sw in enumerate(switches)}
        tun_servers = {rs.node for s in services if s.forward is Forward.TUN for rs in s.real_servers}
        for node in nodes:
            npath = ("nodes", node.name)
            for iface in node.interfaces:
                if iface.switch:
                    self._fabric_port(fabric, npath + ("interfaces", iface.name), node.name, iface.name)
            scopes = {i.name for i in node.interfaces} | {"lo"} | ({"tunl0"} if node.name in tun_servers else set())
            for key, _ in node.sysctls:
                prefix, scope, _ = split_interface_sysctl(key) or (None, None, None)
                extra = ("all", "default") if prefix and prefix.endswith(".conf.") else ()
                if prefix and scope not in scopes | set(extra):
                    self.d.error(npath + ("sysctls", key), f"{node.name} has no interface '{scope}'",
                                 "one of: " + ", ".join(sorted(scopes) + list(extra)))
                elif scope and "." in scope:
                    self.d.error(npath + ("sysctls", key), f"the interface name '{scope}' has a '.', which a sysctl "
                                 "key can't hold", "rename the interface")

    def _fabric_port(self, fabric, path, node, ifname):
        """The switch side of each cable is a veth in the lab's fabric namespace, beside the bridges:
        two names there must never be the same."""
        port = bridge_port(node, ifname)
        this = f"the switch port of {node}:{ifname}"
        if port not in fabric:
            fabric[port] = (path, this)
            return
        other_path, other = fabric[port]
        if other_path[0] == "switches":
            self.d.error(other_path, f"a switch can't be named '{port}': it is the name of {this} in the lab's "
                         f"fabric namespace (ports are named NODE-INTERFACE)", "rename the switch")
        else:
            self.d.error(path, f"{this} would be named '{port}' in the lab's fabric namespace, like {other}",
                         "rename one of the two interfaces")

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
            e = self.mapping(p, e, "from/to/reaches/path/reply_path/share")
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
            flags = {k: self.boolean(p + (k,), e[k]) is True for k in ("same_ip", "traceroute", "switch_learning")
                     if k in e}
            if "connections" in e:
                flags["connections"] = self.integer(p + ("connections",), e["connections"],
                                                    *_limits(EXPECT, "connections"))
            share = self.share(p + ("share",), e["share"]) if "share" in e else ()
            out.append(Expect(sender=e["from"], to=e["to"], reaches=reaches is not False, share=share, **flags,
                              **paths))
        return tuple(out)

    def share(self, path, raw):
        if not isinstance(raw, dict) or not raw:
            self.d.error(path, "must map real servers to weights", "e.g. share: {rs1: 3, rs2: 1}")
            return ()
        out = []
        for node, weight in raw.items():
            if self.name(path + (node,), node, NODE_NAME, MAX_NODE, "node name"):
                w = self.integer(path + (node,), weight, *_limits(EXPECT, "share", item=True))
                if w is not None:
                    out.append((node, w))
        return tuple(out)

    def switches(self, raw):
        """(names, settings): every switch's name, and a Switch for each one given as a mapping."""
        if raw is None:
            return (), ()
        if not isinstance(raw, list):
            self.d.error(("switches",), "must be a list of switch names", "e.g. switches: [lan, wan]")
            return (), ()
        out, settings = [], []
        for i, s in enumerate(raw):
            path = ("switches", i)
            if isinstance(s, dict):
                s, setting = self.switch(path, s)
                if s is None:
                    continue
                if setting:
                    settings.append(setting)
                path += ("name",)
            if self.name(path, s, SWITCH_NAME, MAX_IFNAME, "switch name"):
                if s in RESERVED_DEVICES:
                    self.d.error(path, f"a switch can't be named '{s}': its bridge would clash in the "
                                 f"lab's fabric namespace ({RESERVED_DEVICES[s]})", "rename the switch")
                elif s in out:
                    self.d.error(path, f"switch '{s}' is listed twice")
                out.append(s)
        return tuple(out), tuple(settings)

    def switch(self, path, raw):
        """(name, Switch or None) of a switch given as {name: ..., ageing: ...}."""
        self.d.unknown_keys(path, raw, SWITCH_KEYS)
        if "name" not in raw:
            self.d.error(path, "missing required key 'name'", "e.g. {name: lan, ageing: 0}")
            return None, None
        ageing = self.integer(path + ("ageing",), raw["ageing"], *_limits(SWITCH, "ageing")) if "ageing" in raw else None
        name = raw["name"]
        return name, Switch(name, ageing) if isinstance(name, str) else None

    def node(self, path, name, raw):
        self.name(path, name, NODE_NAME, MAX_NODE, "node name")
        if name in RESERVED_NODES:
            self.d.error(path, f"'{name}' is reserved (the lab's '{name}' namespace holds its switches)",
                         "rename the node")
        raw = self.mapping(path, raw, "node settings")
        self.d.unknown_keys(path, raw, NODE_KEYS)
        ifs_raw = self.mapping(path + ("interfaces",), raw.get("interfaces"), "interface name to settings")
        interfaces = tuple(i for i in (self.interface(path + ("interfaces", k), name, k, v)
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
        nats, forwards = self.nats(path + ("nat",), raw.get("nat"))
        return Node(name=name, interfaces=interfaces, routes=tuple(routes), forward=forward,
                    sysctls=self.sysctls(path + ("sysctls",), raw.get("sysctls")),
                    nat=nats, dnat=forwards,
                    exec=self.execs(path + ("exec",), raw.get("exec")),
                    app=self.app(path + ("app",), raw.get("app")),
                    proxy=self.proxy(path + ("proxy",), raw["proxy"]) if "proxy" in raw else None)

    def interface(self, path, node, name, raw):
        if self.name(path, name, IFNAME, MAX_IFNAME, "interface name") and name in RESERVED_DEVICES and name != "lo":
            self.d.error(path, f"an interface can't be named '{name}' ({RESERVED_DEVICES[name]})",
                         "rename the interface")
        raw = self.mapping(path, raw, "interface settings")
        self.d.unknown_keys(path, raw, IF_KEYS)
        addrs_raw = []
        for key in ("address", "addresses"):
            value = raw.get(key)
            items = value if isinstance(value, list) else ([] if value is None else [value])
            addrs_raw += [((key, i) if isinstance(value, list) else (key,), a) for i, a in enumerate(items)]
        addrs = tuple(a for a in (self.address_with_prefix(path + p, v) for p, v in addrs_raw) if a)
        switch = raw.get("switch")
        if switch is not None and (not isinstance(switch, str) or not switch):
            self.d.error(path + ("switch",), "must be a switch name", "e.g. switch: lan")
            switch = None
        peer = None
        if "peer" in raw:
            value = raw["peer"]
            if isinstance(value, str) and value.count(":") == 1 and all(value.split(":")):
                peer = tuple(value.split(":"))
                if peer == (node, name):
                    self.d.error(path + ("peer",), f"{value!r} is this interface itself",
                                 "a direct link joins two different interfaces: name the other end")
                    peer = None
            else:
                self.d.error(path + ("peer",), f"{value!r} is not NODE:INTERFACE", "e.g. peer: router:eth2")
        if switch and peer:
            self.d.error(path, "has both 'switch' and 'peer'", "an interface is on a switch or on a direct link")
        if name == "lo" and (switch or peer):
            self.d.error(path, "'lo' is the loopback interface: it takes addresses only")
        elif name != "lo" and not switch and not peer and "peer" not in raw and raw.get("switch") is None \
                and "vlan" not in raw:
            self.d.error(path, "needs 'switch' or 'peer'", "e.g. switch: lan, or peer: router:eth2")
        mac = self.mac(path + ("mac",), raw["mac"]) if "mac" in raw else None
        vlans, trunk = self.vlans(path + ("vlan",), raw["vlan"]) if "vlan" in raw else ((), False)
        if vlans and peer:
            self.d.error(path + ("vlan",), "VLANs are a switch's: a direct link carries no VLAN",
                         "put the interface on a switch, or remove vlan")
        elif vlans and not switch and (trunk or str(name).rpartition(".")[2] != str(vlans[0])):  # a bad name is told already
            self.d.error(path + ("vlan",), f"an interface with a VLAN and no switch is an 802.1Q sub-interface, "
                         f"named PARENT.VID", f"e.g. eth0.{vlans[0]}: {{vlan: {vlans[0]}, address: ...}} beside a "
                         f"trunk eth0: {{switch: lan, vlan: [{vlans[0]}]}}")
        impair = self.impair(path + ("impair",), raw["impair"]) if "impair" in raw else None
        if impair and name == "lo":
            self.d.error(path + ("impair",), "'lo' never leaves the node: impair an interface on a link")
        return Interface(name=name, addresses=addrs, switch=switch, peer=peer, mac=mac, impair=impair,
                         vlans=vlans, trunk=trunk)

    def vlans(self, path, raw):
        """(vids, trunk) of a `vlan:` value: one VID (access port), or a list (trunk)."""
        items = raw if isinstance(raw, list) else [raw]
        vids = [self.integer(path + ((i,) if isinstance(raw, list) else ()), v, 1, 4094) for i, v in enumerate(items)]
        if not items:
            self.d.error(path, "an empty list of VLANs", "e.g. vlan: [10, 20]")
        if len(set(vids)) != len(vids):
            self.d.error(path, "names a VLAN twice", "list each VLAN once")
        return tuple(v for v in vids if v is not None), isinstance(raw, list)

    def impair(self, path, raw):
        raw = self.mapping(path, raw, "delay/jitter/loss/rate")
        self.d.unknown_keys(path, raw, IMPAIR_KEYS)
        if not raw or not any(k in raw for k in IMPAIR.any_of):
            self.d.error(path, "needs a delay, a loss or a rate", "e.g. impair: {delay: 50ms, loss: 1%}")
            return None
        got = {k: _quantity(raw[k], unit) for k, unit in (("delay", _DURATION), ("jitter", _DURATION),
                                                           ("loss", {"%": 1}), ("rate", _RATE)) if k in raw}
        hints = {"delay": "e.g. 50ms (us, ms or s), at most 60s", "jitter": "e.g. 5ms (us, ms or s), at most 60s",
                 "loss": "a percentage from 0% to 100%, e.g. 1%",
                 "rate": "a number and bit, kbit, mbit or gbit, from 1kbit to 32gbit, e.g. 10mbit"}
        bad = False
        for key, value in got.items():
            lo, hi = _IMPAIR_RANGE[key]
            if value is None or not lo <= value <= hi:
                self.d.error(path + (key,), f"{raw[key]!r} is not a {key}", hints[key])
                bad = True
        if "jitter" in raw and "delay" not in raw:
            self.d.error(path + ("jitter",), "jitter varies a delay, and there is none", "add a delay, e.g. 50ms")
            bad = True
        elif not bad and got.get("jitter", 0) > got.get("delay", 0):
            self.d.error(path + ("jitter",), f"a jitter of {raw['jitter']} is more than the delay {raw['delay']}",
                         "keep jitter at or below the delay")
            bad = True
        if bad:
            return None
        return Impair(delay_us=round(got.get("delay", 0)), jitter_us=round(got.get("jitter", 0)),
                      loss_pct=float(got.get("loss", 0)), rate_bit=round(got.get("rate", 0)))

    def mac(self, path, value):
        if not isinstance(value, str) or not MAC.fullmatch(value.lower()):
            self.d.error(path, f"{value!r} is not a MAC address", "e.g. 02:00:00:00:00:01")
            return None
        mac = value.lower()
        # The kernel refuses both for an interface's own address (EADDRNOTAVAIL): the low bit of the
        # first octet marks a group (multicast/broadcast) address, and all-zero is no address at all.
        if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
            what = "all zeros" if mac == "00:00:00:00:00:00" else "a multicast address (first octet is odd)"
            self.d.error(path, f"{value!r} is {what}, not an interface's own address",
                         "use a locally administered unicast address, e.g. 02:00:00:00:00:01")
            return None
        return mac

    def routes(self, path, raw):
        if raw is None:
            return
        if not isinstance(raw, list):
            self.d.error(path, "must be a list of {to, via, dev}", "e.g. routes: [{to: 10.1.0.0/24, via: 10.0.0.1}]")
            return
        seen = {}
        for i, r in enumerate(raw):
            p = path + (i,)
            r = self.mapping(p, r, "to/via/dev")
            self.d.unknown_keys(p, r, ROUTE_KEYS)
            if "to" not in r:
                self.d.error(p, "missing required key 'to'", "use 'default' or a prefix")
                continue
            if r.get("via") is None and r.get("dev") is None:  # dev: null is no dev: the route was dropped
                self.d.error(p, "needs 'via' or 'dev'")
                continue
            to = self.network(p + ("to",), r["to"])
            via = self.address(p + ("via",), r["via"]) if "via" in r else None
            dev = r.get("dev")
            if dev is not None and (not isinstance(dev, str) or not dev):
                self.d.error(p + ("dev",), "must be an interface name")
                dev = None
            if to is not None and to in seen:
                # The kernel keeps one route per prefix: `up` would silently let the later one win.
                self.d.error(p + ("to",), f"{to} already has a route ({'.'.join(map(str, path[2:]))}[{seen[to]}])",
                             "keep one route per destination")
            elif to is not None and (via or dev):
                seen[to] = i
                yield Route(to=to, via=via, dev=dev, origin=p)

    def sysctls(self, path, raw):
        raw = self.mapping(path, raw, "sysctl key to value")
        out = []
        for k, v in raw.items():
            if not isinstance(k, str) or not SYSCTL_KEY.fullmatch(k) or ".." in k:
                self.d.error(path + (k,), f"{k!r} is not a network sysctl",
                             "only net.* keys live in a node's namespace, e.g. net.ipv4.conf.all.rp_filter")
            elif not netns_sysctl(k):
                close = sysctl_hint(k)
                self.d.error(path + (k,), f"'{k}' is not a sysctl a node can set: it is unknown, global to "
                             "the host (like net.core.rmem_max) or read-only in a namespace",
                             f"did you mean '{close}'?" if close else "a node can set e.g. net.ipv4.ip_forward, "
                             "net.ipv4.conf.IFACE.rp_filter, net.ipv4.tcp_keepalive_time")
            elif isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).strip() or not str(v).isprintable():
                self.d.error(path + (k,), f"{v!r} is not a sysctl value", "use a whole number or one line of text")
            elif sysctl_value_problem(k, str(v)):
                self.d.error(path + (k,), f"{v!r} is not a value '{k}' takes: {sysctl_value_problem(k, str(v))}",
                             "e.g. 0 or 1; a few numbers separated by spaces for keys such as net.ipv4.tcp_rmem")
            else:
                out.append((k, str(v)))
        return tuple(out)

    def nats(self, path, raw):
        """(masquerades, port forwards) of a node's `nat:` entries."""
        if raw is None:
            return (), ()
        items = raw if isinstance(raw, list) else [raw]
        out, forwards = [], []
        for i, item in enumerate(items):
            p = path + (i,) if isinstance(raw, list) else path
            item = self.mapping(p, item, "masquerade/source or dnat/to/in/protocol")
            self.d.unknown_keys(p, item, NAT_KEYS)
            if "dnat" in item:
                forward = self.port_forward(p, item)
                if forward:
                    forwards.append(forward)
                continue
            out_if = item.get("masquerade")
            if not isinstance(out_if, str):
                self.d.error(p, "needs 'masquerade: INTERFACE' or 'dnat: PORT'",
                             "the interface whose address replaces the source, or a port to forward")
                continue
            source = self.network(p + ("source",), item["source"]) if "source" in item else None
            out.append(Nat(out=out_if, source=source))
        return tuple(out), tuple(forwards)

    def port_forward(self, p, item):
        """A `{dnat: PORT, to: IP:PORT, in: IFACE, protocol: tcp}` entry, or None after reporting."""
        for key in ("masquerade", "source"):
            if key in item:
                self.d.error(p + (key,), f"{key!r} belongs to a masquerade entry, not a port forward (dnat)",
                             "give it an entry of its own")
        port = self.integer(p + ("dnat",), item["dnat"], *_limits(NAT, "dnat"))
        if "to" not in item:
            self.d.error(p, "a port forward needs 'to: IP:PORT'", "e.g. {dnat: 8080, to: 192.168.0.10:80}")
            return None
        to_ip, to_port = self.vip(p + ("to",), item["to"], "to: 192.168.0.10:80")
        iface = item.get("in")
        if iface is not None and (not isinstance(iface, str) or not iface):
            self.d.error(p + ("in",), "must be an interface name of the node", "e.g. in: eth1")
            iface = None
        proto = self.choice(p + ("protocol",), item.get("protocol", NAT.default("protocol")), PROTOCOLS, "protocol")
        if port is None or to_ip is None or proto is None:
            return None
        return PortForward(port=port, to_ip=to_ip, to_port=to_port, iface=iface, protocol=proto)

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
                words = isinstance(cmd, list) and all(isinstance(c, (str, int)) and c is not True and c is not False
                                                      for c in cmd)
                argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd] if words else []
            except ValueError:
                argv = []
            if any("\x00" in word for word in argv):  # exec() refuses it: `up` would fail
                self.d.error(path + (i,), f"{cmd!r} contains a NUL character", "remove it")
            elif any(len(word.encode()) >= MAX_ARG_STRLEN for word in argv):  # exec() fails with E2BIG
                self.d.error(path + (i,), f"{repr(cmd)[:60]}… has a word longer than the kernel takes for one "
                             f"argument ({MAX_ARG_STRLEN - 1} bytes)", "shorten it, or read it from a file")
            elif not argv:
                self.d.error(path + (i,), f"{cmd!r} is not a command", "a string or a list of words")
            else:
                out.append(tuple(argv))
        return tuple(out)

    def proxy(self, path, raw):
        raw = self.mapping(path, raw, "port/servers/paths")
        self.d.unknown_keys(path, raw, PROXY_KEYS)
        port = self.integer(path + ("port",), raw["port"], *_limits(PROXY, "port")) if "port" in raw else None
        servers = raw.get("servers")
        if not isinstance(servers, list) or not servers or not all(isinstance(x, str) for x in servers):
            self.d.error(path + ("servers",), "needs a list of the nodes it sends to", "e.g. servers: [rs1, rs2]")
            servers = []
        elif len(set(servers)) != len(servers):
            self.d.error(path + ("servers",), "names a node twice", "list each server once")
        paths = []
        for prefix, node in self.mapping(path + ("paths",), raw.get("paths"), "path prefix to node").items():
            if not isinstance(prefix, str) or not PATH_PREFIX.fullmatch(prefix):
                self.d.error(path + ("paths", prefix), f"{prefix!r} is not a path prefix", "e.g. /api")
            elif not isinstance(node, str):
                self.d.error(path + ("paths", prefix), f"{node!r} is not a node name", "e.g. /api: rs2")
            else:
                paths.append((prefix, node))
        return Proxy(servers=tuple(servers), port=port or PROXY.default("port"), paths=tuple(paths))

    def app(self, path, raw):
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {"type": raw}
        raw = self.mapping(path, raw, "type/port/protocol/reply_size")
        self.d.unknown_keys(path, raw, APP_KEYS)
        kind = self.choice(path + ("type",) if "port" in raw or "protocol" in raw else path,
                           raw.get("type"), APPS, "app")
        port = self.integer(path + ("port",), raw["port"], *_limits(APP, "port")) if "port" in raw else None
        proto = self.choice(path + ("protocol",), raw.get("protocol", APP.default("protocol")),
                            APP.fields["protocol"].type.enum, "protocol")
        size = self.reply_size(path + ("reply_size",), kind, raw["reply_size"]) if "reply_size" in raw else None
        return App(kind=kind, port=port, protocol=proto or "tcp", reply_size=size) if kind else None

    def reply_size(self, path, kind, value):
        size = self.integer(path, value, *_limits(APP, "reply_size"))
        if size is not None and kind == "echo":
            self.d.error(path, "an echo app sends back what it gets: only an http app takes a reply size",
                         "use type: http, or remove reply_size")
            return None
        return size

    def service(self, path, name, raw):
        self.name(path, name, NODE_NAME, MAX_NODE, "service name")
        raw = self.mapping(path, raw, "service settings")
        self.d.unknown_keys(path, raw, SERVICE_KEYS)
        for key in SERVICE.required:
            if key not in raw:
                self.d.error(path, f"missing required key '{key}'")
        vip, port = self.vip(path + ("vip",), raw.get("vip"))
        director, directors = self.directors(path, raw)
        vip_interface = raw.get("vip_interface")
        if vip_interface is not None and (not isinstance(vip_interface, str) or not vip_interface):
            self.d.error(path + ("vip_interface",), "must be an interface name of the director", "e.g. eth0")
        default = SERVICE.default
        protocol = self.choice(path + ("protocol",), raw.get("protocol", default("protocol")), PROTOCOLS, "protocol")
        scheduler = self.choice(path + ("scheduler",), raw.get("scheduler", default("scheduler")), SCHEDULERS,
                                "IPVS scheduler")
        forward = self.choice(path + ("forward",), raw.get("forward", default("forward")), [f.value for f in Forward],
                              "forwarding method")
        persistence = (self.integer(path + ("persistence",), raw["persistence"], *_limits(SERVICE, "persistence"))
                       if raw.get("persistence") is not None else None)
        flags = {k: self.boolean(path + (k,), raw[k]) for k in ("arp_tuning", "rp_filter_relax", "return_path_check")
                 if k in raw}
        rs_raw = self.mapping(path + ("real_servers",), raw.get("real_servers"), "node name to weight/address/port")
        real_servers = []
        for node, settings in rs_raw.items():
            p = path + ("real_servers", node)
            settings = self.mapping(p, settings, "weight/address/port")
            self.d.unknown_keys(p, settings, RS_KEYS)
            real_servers.append(RealServer(
                node=node,
                weight=self.integer(p + ("weight",), settings.get("weight", REAL_SERVER.default("weight")),
                                    *_limits(REAL_SERVER, "weight")) or 0,
                address=self.address(p + ("address",), settings["address"]) if "address" in settings else None,
                port=self.integer(p + ("port",), settings["port"], *_limits(REAL_SERVER, "port")) if "port" in settings
                else None))
        health = self.health(path + ("health",), raw["health"]) if "health" in raw else None
        on_failure = self.choice(path + ("on_failure",), raw.get("on_failure", default("on_failure")), ON_FAILURE,
                                 "on_failure")
        sorry = raw.get("sorry_server")
        if sorry is not None and self.name(path + ("sorry_server",), sorry, NODE_NAME, MAX_NODE, "node name") is None:
            sorry = None
        if not all((vip, port, isinstance(director, str), protocol, scheduler, forward, on_failure)):
            return None
        return Service(name=name, director=director, vip=vip, port=port, protocol=protocol, scheduler=scheduler,
                       forward=Forward(forward), persistence=persistence, real_servers=tuple(real_servers),
                       vip_interface=vip_interface or None, directors=directors, health=health,
                       on_failure=on_failure, sorry_server=sorry,
                       **{k: v for k, v in flags.items() if v is not None})

    def directors(self, path, raw):
        """(director, directors): one director, or a VRRP pair (or more) whose first one is the master."""
        if "director" in raw and "directors" in raw:
            self.d.error(path + ("directors",), "has both 'director' and 'directors'",
                         "keep director: NODE for one director, or directors: [NODE1, NODE2] for a VRRP pair")
            return None, ()
        if "directors" not in raw:
            if "director" not in raw:
                self.d.error(path, "missing required key 'director'",
                             "director: NODE, or directors: [NODE1, NODE2] for a VRRP pair")
            return raw.get("director"), ()
        value = raw["directors"]
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            self.d.error(path + ("directors",), f"{value!r} is not a list of node names", "e.g. directors: [d1, d2]")
            return None, ()
        if len(value) < 2:
            self.d.error(path + ("directors",), "a VRRP pair needs two directors (or more)",
                         f"for one director write director: {value[0]}" if value else "e.g. directors: [d1, d2]")
            return None, ()
        if len(set(value)) != len(value):
            self.d.error(path + ("directors",), "names a director twice", "list each director once")
            return None, ()
        return value[0], tuple(value)

    def health(self, path, raw):
        if raw is None:
            return Health()
        raw = self.mapping(path, raw, "check/path/interval/timeout/retries")
        self.d.unknown_keys(path, raw, HEALTH_KEYS)
        check = self.choice(path + ("check",), raw.get("check", HEALTH.default("check")), HEALTH_CHECKS, "check")
        url = raw.get("path", HEALTH.default("path"))
        if not isinstance(url, str) or not URL_PATH.fullmatch(url):
            self.d.error(path + ("path",), f"{url!r} is not a URL path keepalived can be given",
                         "e.g. /health: ASCII letters, digits and ._~/?=&%+:@,;*()- only, any other character as %XX")
            url = None
        elif "path" in raw and check == "tcp":
            self.d.error(path + ("path",), "a tcp check opens a connection and asks for no path",
                         "use check: http, or remove path")
        numbers = {k: self.integer(path + (k,), raw.get(k, HEALTH.default(k)), *_limits(HEALTH, k))
                   for k in ("interval", "timeout", "retries")}
        if check is None or url is None or None in numbers.values():
            return None
        return Health(check=check, path=url, **numbers)

    def vip(self, path, raw, example="vip: 10.0.0.100:80"):
        if raw is None:
            return None, None
        found = ip_port(raw)
        if found is None:
            self.d.error(path, f"{str(raw)!r} is not IP:PORT", f"e.g. {example}")
            return None, None
        ip = found[0]
        if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip == IPv4Address("255.255.255.255"):
            # the kernel takes these as an address or a DNAT target, and no packet from another node reaches them
            self.d.error(path, f"{ip} is not an address a host can be reached at (unspecified, loopback, multicast "
                         "or broadcast)", f"e.g. {example}")
            return None, None
        return found


def ip_port(text) -> tuple[IPv4Address, int] | None:
    """'10.0.0.100:80' -> (IPv4Address, 80); None unless text is an IPv4 address and a port 1-65535."""
    host, sep, port = text.rpartition(":") if isinstance(text, str) else ("", "", "")
    try:
        if not sep or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            return None
        return IPv4Address(host), int(port)
    except ValueError:
        return None


MAX_ARG_STRLEN = 32 * 4096  # the kernel's limit on one word of argv, its NUL included
_DURATION = {"us": 1, "ms": 1000, "s": 1000000}  # to microseconds
# What netem and tbf can hold (pyroute2 packs them into the kernel's 32-bit fields, and refuses more): a delay
# in 64 ns ticks (274 s at most), a rate in bytes per second (34 gbit), and tbf's bucket of 1600 bytes in ticks at
# that rate (below 64 bit/s it takes longer than 274 s to drain). Rounded in, so a limit reads as a plain figure.
_IMPAIR_RANGE = {"delay": (0, 60_000_000), "jitter": (0, 60_000_000), "loss": (0, 100),
                 "rate": (1000, 32_000_000_000)}
_RATE = {"bit": 1, "kbit": 1000, "mbit": 1000000, "gbit": 1000000000}  # to bits per second, as tc counts


def _quantity(text, units):
    """'50ms' -> 50000 with units {suffix: factor}; None when it isn't a number with one of them."""
    if not isinstance(text, str):
        return None
    for suffix in sorted(units, key=len, reverse=True):
        number = text[:-len(suffix)]
        # ASCII digits only: str.isdigit() also takes '²' (float() refuses it) and '٥' (which tc would never see)
        if text.endswith(suffix) and number.isascii() and number.replace(".", "", 1).isdigit() and number[0].isdigit():
            return float(number) * units[suffix]
    return None


def _limits(obj, key, item=False):
    kind = obj.fields[key].type.value if item else obj.fields[key].type  # item: a Map's values
    return kind.lo, kind.hi


def build(source) -> tuple[Topology, Diagnostics]:
    b = Builder(source)
    return b.topology(), b.d
