"""Raw YAML data -> Topology dataclasses, checking each field's own shape."""

import difflib
import re
import shlex
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from .diag import Diagnostics
from .names import bridge_port
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

# The net.* sysctls a node's own namespace has and lets it write. Where this came from: on Linux 6.1
# (Debian 12's kernel, in `nslab vm`) and 6.18 (the development host), `ip netns add x; ip netns exec x
# find /proc/sys/net -type f` compared with the host's /proc/sys/net; kept: the keys found inside the
# namespace on both kernels, minus the read-only ones there. Left out on purpose, because `up` would fail:
# net.core.rmem_max & co. (global on 6.1, read-only in a namespace on 6.18), net.ipv4.route.gc_*,
# net.ipv4.tcp_mem, net.ipv{4,6}.neigh.default.* (the host's namespace only), nf_conntrack_max (read-only).
# net.ipv4.vs.* is there once ip_vs is loaded, as it is for any lab with services.
_NETNS_SYSCTLS = {
    "net.core.": "somaxconn txrehash xfrm_acq_expires xfrm_aevent_etime xfrm_aevent_rseqth xfrm_larval_drop",
    "net.ipv4.": (
        "fib_multipath_hash_fields fib_multipath_hash_policy fib_multipath_use_neigh fib_notify_on_flag_change "
        "fwmark_reflect icmp_echo_enable_probe icmp_echo_ignore_all icmp_echo_ignore_broadcasts "
        "icmp_errors_use_inbound_ifaddr icmp_ignore_bogus_error_responses icmp_msgs_burst icmp_msgs_per_sec "
        "icmp_ratelimit icmp_ratemask igmp_link_local_mcast_reports igmp_max_memberships igmp_max_msf igmp_qrv "
        "ip_autobind_reuse ip_default_ttl ip_dynaddr ip_early_demux ip_forward ip_forward_update_priority "
        "ip_forward_use_pmtu ip_local_port_range ip_local_reserved_ports ip_no_pmtu_disc ip_nonlocal_bind "
        "ip_unprivileged_port_start ipfrag_high_thresh ipfrag_low_thresh ipfrag_max_dist ipfrag_time "
        "nexthop_compat_mode ping_group_range raw_l3mdev_accept tcp_abort_on_overflow tcp_adv_win_scale "
        "tcp_app_win tcp_autocorking tcp_base_mss tcp_challenge_ack_limit tcp_child_ehash_entries "
        "tcp_comp_sack_delay_ns tcp_comp_sack_nr tcp_comp_sack_slack_ns tcp_congestion_control tcp_dsack "
        "tcp_early_demux tcp_early_retrans tcp_ecn tcp_ecn_fallback tcp_fack tcp_fastopen "
        "tcp_fastopen_blackhole_timeout_sec tcp_fastopen_key tcp_fin_timeout tcp_frto tcp_fwmark_accept "
        "tcp_invalid_ratelimit tcp_keepalive_intvl tcp_keepalive_probes tcp_keepalive_time tcp_l3mdev_accept "
        "tcp_limit_output_bytes tcp_max_reordering tcp_max_syn_backlog tcp_max_tw_buckets tcp_migrate_req "
        "tcp_min_rtt_wlen tcp_min_snd_mss tcp_min_tso_segs tcp_moderate_rcvbuf tcp_mtu_probe_floor "
        "tcp_mtu_probing tcp_no_metrics_save tcp_no_ssthresh_metrics_save tcp_notsent_lowat tcp_orphan_retries "
        "tcp_pacing_ca_ratio tcp_pacing_ss_ratio tcp_probe_interval tcp_probe_threshold tcp_recovery "
        "tcp_reflect_tos tcp_reordering tcp_retrans_collapse tcp_retries1 tcp_retries2 tcp_rfc1337 tcp_rmem "
        "tcp_sack tcp_shrink_window tcp_slow_start_after_idle tcp_stdurg tcp_syn_retries tcp_synack_retries "
        "tcp_syncookies tcp_thin_linear_timeouts tcp_timestamps tcp_tso_rtt_log tcp_tso_win_divisor tcp_tw_reuse "
        "tcp_window_scaling tcp_wmem tcp_workaround_signed_windows udp_early_demux udp_l3mdev_accept udp_rmem_min "
        "udp_wmem_min xfrm4_gc_thresh"
    ),
    "net.ipv4.route.": "flush min_adv_mss min_pmtu mtu_expires",
    "net.ipv6.": (
        "anycast_src_echo_reply auto_flowlabels bindv6only fib_multipath_hash_fields fib_multipath_hash_policy "
        "fib_notify_on_flag_change flowlabel_consistency flowlabel_reflect flowlabel_state_ranges fwmark_reflect "
        "idgen_delay idgen_retries ioam6_id ioam6_id_wide ip6frag_high_thresh ip6frag_low_thresh ip6frag_time "
        "ip_nonlocal_bind max_dst_opts_length max_dst_opts_number max_hbh_length max_hbh_opts_number "
        "seg6_flowlabel xfrm6_gc_thresh"
    ),
    "net.ipv6.icmp.": "echo_ignore_all echo_ignore_anycast echo_ignore_multicast ratelimit ratemask",
    "net.ipv6.route.": (
        "flush gc_elasticity gc_interval gc_min_interval gc_min_interval_ms gc_thresh gc_timeout max_size "
        "min_adv_mss mtu_expires skip_notify_on_dev_down"
    ),
    "net.mptcp.": "add_addr_timeout allow_join_initial_addr_port checksum_enabled enabled pm_type stale_loss_cnt",
    "net.netfilter.": (
        "nf_conntrack_acct nf_conntrack_checksum nf_conntrack_events nf_conntrack_frag6_high_thresh "
        "nf_conntrack_frag6_low_thresh nf_conntrack_frag6_timeout nf_conntrack_generic_timeout "
        "nf_conntrack_gre_timeout nf_conntrack_gre_timeout_stream nf_conntrack_icmp_timeout "
        "nf_conntrack_icmpv6_timeout nf_conntrack_log_invalid nf_conntrack_sctp_timeout_closed "
        "nf_conntrack_sctp_timeout_cookie_echoed nf_conntrack_sctp_timeout_cookie_wait "
        "nf_conntrack_sctp_timeout_established nf_conntrack_sctp_timeout_heartbeat_sent "
        "nf_conntrack_sctp_timeout_shutdown_ack_sent nf_conntrack_sctp_timeout_shutdown_recd "
        "nf_conntrack_sctp_timeout_shutdown_sent nf_conntrack_tcp_be_liberal nf_conntrack_tcp_ignore_invalid_rst "
        "nf_conntrack_tcp_loose nf_conntrack_tcp_max_retrans nf_conntrack_tcp_timeout_close "
        "nf_conntrack_tcp_timeout_close_wait nf_conntrack_tcp_timeout_established "
        "nf_conntrack_tcp_timeout_fin_wait nf_conntrack_tcp_timeout_last_ack nf_conntrack_tcp_timeout_max_retrans "
        "nf_conntrack_tcp_timeout_syn_recv nf_conntrack_tcp_timeout_syn_sent nf_conntrack_tcp_timeout_time_wait "
        "nf_conntrack_tcp_timeout_unacknowledged nf_conntrack_timestamp nf_conntrack_udp_timeout "
        "nf_conntrack_udp_timeout_stream nf_hooks_lwtunnel"
    ),
    "net.netfilter.nf_log.": "0 1 10 2 3 4 5 6 7 8 9",
    "net.unix.": "max_dgram_qlen",
    "net.ipv4.vs.": (
        "am_droprate amemthresh backup_only cache_bypass conn_reuse_mode conntrack drop_entry drop_packet "
        "expire_nodest_conn expire_quiescent_template ignore_tunneled nat_icmp_send pmtu_disc run_estimation "
        "schedule_icmp secure_tcp sloppy_sctp sloppy_tcp snat_reroute sync_persist_mode sync_ports sync_qlen_max "
        "sync_refresh_period sync_retries sync_sock_size sync_threshold sync_version"
    ),
}
NETNS_SYSCTLS = frozenset(prefix + leaf for prefix, leaves in _NETNS_SYSCTLS.items() for leaf in leaves.split())
# Per-interface keys: PREFIX + SCOPE + "." + LEAF, SCOPE being an interface of the node (or all/default for conf).
_INTERFACE_SYSCTLS = {
    "net.ipv4.conf.": (
        "accept_local accept_redirects accept_source_route arp_accept arp_announce arp_evict_nocarrier arp_filter "
        "arp_ignore arp_notify bc_forwarding bootp_relay disable_policy disable_xfrm drop_gratuitous_arp "
        "drop_unicast_in_l2_multicast force_igmp_version forwarding igmpv2_unsolicited_report_interval "
        "igmpv3_unsolicited_report_interval ignore_routes_with_linkdown log_martians medium_id "
        "promote_secondaries proxy_arp proxy_arp_pvlan route_localnet rp_filter secure_redirects send_redirects "
        "shared_media src_valid_mark tag"
    ),
    "net.ipv6.conf.": (
        "accept_dad accept_ra accept_ra_defrtr accept_ra_from_local accept_ra_min_hop_limit accept_ra_min_lft "
        "accept_ra_mtu accept_ra_pinfo accept_ra_rt_info_max_plen accept_ra_rt_info_min_plen accept_ra_rtr_pref "
        "accept_redirects accept_source_route accept_untracked_na addr_gen_mode autoconf dad_transmits "
        "disable_ipv6 disable_policy drop_unicast_in_l2_multicast drop_unsolicited_na enhanced_dad "
        "force_mld_version force_tllao forwarding hop_limit ignore_routes_with_linkdown ioam6_enabled ioam6_id "
        "ioam6_id_wide keep_addr_on_down max_addresses max_desync_factor mldv1_unsolicited_report_interval "
        "mldv2_unsolicited_report_interval mtu ndisc_evict_nocarrier ndisc_notify ndisc_tclass optimistic_dad "
        "proxy_ndp ra_defrtr_metric regen_max_retry router_probe_interval router_solicitation_delay "
        "router_solicitation_interval router_solicitation_max_interval router_solicitations rpl_seg_enabled "
        "seg6_enabled seg6_require_hmac stable_secret suppress_frag_ndisc temp_prefered_lft temp_valid_lft "
        "use_oif_addrs_only use_optimistic use_tempaddr"
    ),
    "net.ipv4.neigh.": (
        "anycast_delay app_solicit base_reachable_time base_reachable_time_ms delay_first_probe_time "
        "gc_stale_time interval_probe_time_ms locktime mcast_resolicit mcast_solicit proxy_delay proxy_qlen "
        "retrans_time retrans_time_ms ucast_solicit unres_qlen unres_qlen_bytes"
    ),
}
_INTERFACE_SYSCTLS["net.ipv6.neigh."] = _INTERFACE_SYSCTLS["net.ipv4.neigh."]
INTERFACE_SYSCTLS = {prefix: frozenset(leaves.split()) for prefix, leaves in _INTERFACE_SYSCTLS.items()}


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
        if "nodes" in raw and not nodes_raw and isinstance(raw["nodes"], (dict, type(None))):
            self.d.error(("nodes",), "a lab needs at least one node",
                         "e.g. nodes: {host1: {interfaces: {eth0: {switch: lan, address: 10.0.0.1/24}}}}")
        services_raw = self.mapping(("services",), raw.get("services"), "service name to service")
        services = tuple(s for s in (self.service(("services", k), k, v) for k, v in services_raw.items()) if s)
        expect = self.expectations(raw.get("expect"))
        if not self.d.problems:  # like the cross-field rules, these assume each field has its own shape
            self.document(nodes, switches, services)
        return Topology(name=name or "", nodes=nodes, switches=switches, services=services, expect=expect,
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
                prefix, scope, _ = _split_interface_sysctl(key) or (None, None, None)
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
                if s in RESERVED_DEVICES:
                    self.d.error(("switches", i), f"a switch can't be named '{s}': its bridge would clash in the "
                                 f"lab's fabric namespace ({RESERVED_DEVICES[s]})", "rename the switch")
                elif s in out:
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
        return Node(name=name, interfaces=interfaces, routes=tuple(routes), forward=forward,
                    sysctls=self.sysctls(path + ("sysctls",), raw.get("sysctls")),
                    nat=self.nats(path + ("nat",), raw.get("nat")),
                    exec=self.execs(path + ("exec",), raw.get("exec")),
                    app=self.app(path + ("app",), raw.get("app")))

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
                    self.d.error(path + ("peer",), f"'{value}' is this interface itself",
                                 "a direct link joins two different interfaces: name the other end")
                    peer = None
            else:
                self.d.error(path + ("peer",), f"{value!r} is not NODE:INTERFACE", "e.g. peer: router:eth2")
        if switch and peer:
            self.d.error(path, "has both 'switch' and 'peer'", "an interface is on a switch or on a direct link")
        if name == "lo" and (switch or peer):
            self.d.error(path, "'lo' is the loopback interface: it takes addresses only")
        elif name != "lo" and not switch and not peer and "peer" not in raw and "switch" not in raw:
            self.d.error(path, "needs 'switch' or 'peer'", "e.g. switch: lan, or peer: router:eth2")
        mac = self.mac(path + ("mac",), raw["mac"]) if "mac" in raw else None
        return Interface(name=name, addresses=addrs, switch=switch, peer=peer, mac=mac)

    def mac(self, path, value):
        if not isinstance(value, str) or not MAC.match(value.lower()):
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
            if "via" not in r and "dev" not in r:
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
            if not isinstance(k, str) or not SYSCTL_KEY.match(k) or ".." in k:
                self.d.error(path + (k,), f"{k!r} is not a network sysctl",
                             "only net.* keys live in a node's namespace, e.g. net.ipv4.conf.all.rp_filter")
            elif not _netns_sysctl(k):
                close = _sysctl_hint(k)
                self.d.error(path + (k,), f"'{k}' is not a sysctl a node can set: it is unknown, global to "
                             "the host (like net.core.rmem_max) or read-only in a namespace",
                             f"did you mean '{close}'?" if close else "a node can set e.g. net.ipv4.ip_forward, "
                             "net.ipv4.conf.IFACE.rp_filter, net.ipv4.tcp_keepalive_time")
            elif isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).strip() or not str(v).isprintable():
                self.d.error(path + (k,), f"{v!r} is not a sysctl value", "use a whole number or one line of text")
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
                words = isinstance(cmd, list) and all(isinstance(c, (str, int)) and c is not True and c is not False
                                                      for c in cmd)
                argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd] if words else []
            except ValueError:
                argv = []
            if any("\x00" in word for word in argv):  # exec() refuses it: `up` would fail
                self.d.error(path + (i,), f"{cmd!r} contains a NUL character", "remove it")
            elif not argv:
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
        vip_interface = raw.get("vip_interface")
        if vip_interface is not None and (not isinstance(vip_interface, str) or not vip_interface):
            self.d.error(path + ("vip_interface",), "must be an interface name of the director", "e.g. eth0")
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
                       vip_interface=vip_interface or None,
                       **{k: v for k, v in flags.items() if v is not None})

    def vip(self, path, raw):
        if raw is None:
            return None, None
        text = str(raw)
        host, sep, port = text.rpartition(":")
        try:
            if not isinstance(raw, str) or not sep or not (port.isascii() and port.isdigit()):
                raise ValueError
            vip, port = IPv4Address(host), int(port)
            if not 1 <= port <= 65535:
                raise ValueError
            return vip, port
        except ValueError:
            self.d.error(path, f"{text!r} is not IP:PORT", "e.g. vip: 10.0.0.100:80")
            return None, None


def _split_interface_sysctl(key: str):
    """(prefix, scope, leaf) of a per-interface key such as net.ipv4.conf.eth0.rp_filter, else None."""
    prefix = next((p for p in INTERFACE_SYSCTLS if key.startswith(p)), None)
    scope, _, leaf = key[len(prefix):].rpartition(".") if prefix else ("", "", "")
    return (prefix, scope, leaf) if scope else None


def _netns_sysctl(key: str) -> bool:
    parts = _split_interface_sysctl(key)
    return key in NETNS_SYSCTLS or bool(parts and parts[2] in INTERFACE_SYSCTLS[parts[0]])


def _sysctl_hint(key: str) -> str | None:
    """The per-interface key a typo most likely meant. None for other keys: there the nearest allowed
    key is as often a wrong hint (net.ipv4.tcp_mem, which is global, is one letter from tcp_wmem)."""
    parts = _split_interface_sysctl(key)
    if parts:
        prefix, scope, leaf = parts
        close = difflib.get_close_matches(leaf, INTERFACE_SYSCTLS[prefix], n=1)
        return f"{prefix}{scope}.{close[0]}" if close else None
    return None


def build(source) -> tuple[Topology, Diagnostics]:
    b = Builder(source)
    return b.topology(), b.d
