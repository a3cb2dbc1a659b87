"""The net.* sysctls a node may set in its own namespace, and the hint for a near miss."""

import re

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


def split_interface_sysctl(key: str):
    """(prefix, scope, leaf) of a per-interface key such as net.ipv4.conf.eth0.rp_filter, else None."""
    prefix = next((p for p in INTERFACE_SYSCTLS if key.startswith(p)), None)
    scope, _, leaf = key[len(prefix):].rpartition(".") if prefix else ("", "", "")
    return (prefix, scope, leaf) if scope else None


# The allowed keys the kernel reads as text; it reads every other one as whole numbers (one, or a few
# separated by spaces, as net.ipv4.tcp_rmem), each an int or unsigned int but for the LONG_VALUED ones.
TEXT_VALUED = {"net.ipv4.tcp_congestion_control", "net.ipv4.tcp_fastopen_key", "net.ipv4.ip_local_reserved_ports"}
TEXT_VALUED_LEAVES = {"stable_secret"}  # net.ipv6.conf.IFACE.stable_secret: an IPv6 address
LONG_VALUED = {"net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh", "net.ipv6.ip6frag_high_thresh",
               "net.ipv6.ip6frag_low_thresh", "net.netfilter.nf_conntrack_frag6_high_thresh",
               "net.netfilter.nf_conntrack_frag6_low_thresh", "net.ipv4.tcp_comp_sack_delay_ns",
               "net.ipv4.tcp_comp_sack_slack_ns"}
_NUMBERS = re.compile(r"-?[0-9]+(?:[ \t]+-?[0-9]+)*")


def sysctl_value_problem(key: str, value: str) -> str | None:
    """Why the kernel cannot take value for an allowed key (its kind and size), or None. A key's own range,
    such as 0-2 for rp_filter, is the kernel's to check: `up` reports the step it refuses."""
    parts = split_interface_sysctl(key)
    if key in TEXT_VALUED or (parts and parts[2] in TEXT_VALUED_LEAVES):
        return None
    low, high = (-2 ** 63, 2 ** 64 - 1) if key in LONG_VALUED else (-2 ** 31, 2 ** 32 - 1)
    if not _NUMBERS.fullmatch(value.strip()):
        return "the kernel reads whole numbers there"
    if not all(low <= int(n) <= high for n in value.split()):
        return f"the kernel reads numbers from {low} to {high} there"
    return None


def netns_sysctl(key: str) -> bool:
    parts = split_interface_sysctl(key)
    return key in NETNS_SYSCTLS or bool(parts and parts[2] in INTERFACE_SYSCTLS[parts[0]])


def sysctl_hint(key: str) -> str | None:
    """The per-interface key a typo most likely meant. None for other keys: there the nearest allowed
    key is as often a wrong hint (net.ipv4.tcp_mem, which is global, is one letter from tcp_wmem)."""
    parts = split_interface_sysctl(key)
    if parts:
        prefix, scope, leaf = parts
        import difflib  # here: only a near miss pays for it (2 ms of every validate)
        close = difflib.get_close_matches(leaf, INTERFACE_SYSCTLS[prefix], n=1)
        return f"{prefix}{scope}.{close[0]}" if close else None
    return None
