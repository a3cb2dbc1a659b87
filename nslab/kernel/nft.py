"""Masquerade (SNAT) through nftables' netlink API, in the router's namespace.

What `up` writes is what `nft` writes for the lines `nslab plan` prints: the same expressions and the same
userdata, nftables' udata TLV (type 0 = comment, one length byte, the NUL-terminated text), so `nft list ruleset`
shows each rule's comment and a rule added by replaying the plan is recognised as the same rule.
"""

from . import netns

TABLE = "nslab"
CHAIN = "postrouting"
SRCNAT = 100  # the chain priority nft calls srcnat
DNAT_CHAIN = "prerouting"
DSTNAT = -100  # the chain priority nft calls dstnat
IPPROTO = {"tcp": 6, "udp": 17}


def _nft(ns):
    from pyroute2.nftables.main import NFTables  # opened inside, so it programs that namespace
    with netns.entered(ns):
        return NFTables(nfgen_family=2)  # NFPROTO_IPV4


def _tables(nft):
    return [t for t in nft.get_tables() if t.get_attr("NFTA_TABLE_NAME") == TABLE]


def _chains(nft):
    return [c for c in nft.get_chains() if c.get_attr("NFTA_CHAIN_TABLE") == TABLE]


def _rules(nft, chain=CHAIN):
    if not _tables(nft):
        return []
    return [r for r in nft.get_rules()
            if r.get_attr("NFTA_RULE_TABLE") == TABLE and r.get_attr("NFTA_RULE_CHAIN") == chain]


def _tag(a):
    # The rule's comment (the action's, so plan and up agree) says which out-interface/source it masquerades.
    # pyroute2 writes userdata as a big-endian 16-bit length (text + NUL) then the NUL-terminated text: for a
    # comment under 256 bytes, exactly nft's TLV (type 0, length byte); tests/unit/test_nft_udata.py holds it to that.
    return a.comment


def _ensure_nat_chain(nft, owner, chain: str, hook: str, priority: int) -> None:
    """nslab's table and this nat chain, made (marked as nslab's) where they are missing."""
    if not _tables(nft):
        nft.table("add", name=TABLE, userdata=owner)
    if not any(c.get_attr("NFTA_CHAIN_NAME") == chain for c in _chains(nft)):
        nft.chain("add", table=TABLE, name=chain, type="nat", hook=hook, priority=priority, policy=1,
                  userdata=owner)


class MasqueradeExecutor:
    @staticmethod
    def done(s, a):
        nft = _nft(a.ns)
        try:
            return any(r.get_attr("NFTA_RULE_USERDATA") == _tag(a) for r in _rules(nft))
        finally:
            nft.close()

    @staticmethod
    def do(s, a):
        from pyroute2.nftables.expressions import masq
        nft = _nft(a.ns)
        try:
            _ensure_nat_chain(nft, a.OWNER, CHAIN, "postrouting", SRCNAT)
            exprs = [_saddr_match(a.source)] if a.source else []
            exprs += [_oifname_match(a.out), masq()]
            nft.rule("add", table=TABLE, chain=CHAIN, expressions=exprs, userdata=_tag(a))
        finally:
            nft.close()

    @staticmethod
    def undo(s, a, undo_data=None):
        """Delete this action's own rule by its handle; then the chain and the table, if nslab made them
        (their comment says so) and nothing is left in them."""
        if not netns.exists(a.ns):
            return
        nft = _nft(a.ns)
        try:
            for r in _rules(nft):
                if r.get_attr("NFTA_RULE_USERDATA") == _tag(a):
                    nft.rule("del", table=TABLE, chain=CHAIN, handle=r.get_attr("NFTA_RULE_HANDLE"))
            for c in _chains(nft):
                if (c.get_attr("NFTA_CHAIN_NAME") == CHAIN and c.get_attr("NFTA_CHAIN_USERDATA") == a.OWNER
                        and not _rules(nft)):
                    nft.chain("del", table=TABLE, name=CHAIN)
            if not _chains(nft) and any(t.get_attr("NFTA_TABLE_USERDATA") == a.OWNER for t in _tables(nft)):
                nft.table("del", name=TABLE)
        finally:
            nft.close()


def _oifname_match(ifname):
    from pyroute2.nftables.expressions import genex
    # meta oifname -> register 1; cmp eq against the NUL-padded name
    return (genex("meta", {"key": 7, "dreg": 1}),  # 7: NFT_META_OIFNAME
            genex("cmp", {"sreg": 1, "op": 0, "data": {"attrs": [("NFTA_DATA_VALUE", ifname.encode().ljust(16, b"\0"))]}}))


def _saddr_match(prefix):
    """`ip saddr PREFIX` as nft compiles it: a whole-byte prefix loads and compares only its bytes; any other
    loads the 4-byte address, masks it and compares (so `nft list` shows both as `ip saddr PREFIX`)."""
    from ipaddress import IPv4Network

    from pyroute2.nftables.expressions import genex
    net = IPv4Network(prefix)
    if net.prefixlen == 0:
        return ()  # every source
    size = net.prefixlen // 8 if net.prefixlen % 8 == 0 else 4
    load = genex("payload", {"dreg": 1, "base": 1, "offset": 12, "len": size})  # network header + 12: saddr
    cmp = genex("cmp", {"sreg": 1, "op": 0, "data": {"attrs": [("NFTA_DATA_VALUE", net.network_address.packed[:size])]}})
    if size == net.prefixlen // 8:
        return (load, cmp)
    return (load, genex("bitwise", {"sreg": 1, "dreg": 1, "len": 4,
                                    "mask": {"attrs": [("NFTA_DATA_VALUE", net.netmask.packed)]},
                                    "xor": {"attrs": [("NFTA_DATA_VALUE", b"\0" * 4)]}}), cmp)


class DnatExecutor:
    """A port forward: one rule in the nslab table's prerouting chain (type nat, priority dstnat), found again
    by its comment; undo deletes it by handle, then the chain and table if nslab made them and they are empty."""

    @staticmethod
    def done(s, a):
        nft = _nft(a.ns)
        try:
            return any(r.get_attr("NFTA_RULE_USERDATA") == a.comment for r in _rules(nft, DNAT_CHAIN))
        finally:
            nft.close()

    @staticmethod
    def do(s, a):
        nft = _nft(a.ns)
        try:
            _ensure_nat_chain(nft, a.OWNER, DNAT_CHAIN, "prerouting", DSTNAT)
            exprs = [_iifname_match(a.iface)] if a.iface else []
            exprs += [_dport_match(a.protocol, a.port), _dnat_to(a.to_ip, a.to_port)]
            nft.rule("add", table=TABLE, chain=DNAT_CHAIN, expressions=exprs, userdata=a.comment)
        finally:
            nft.close()

    @staticmethod
    def undo(s, a, undo_data=None):
        if not netns.exists(a.ns):
            return
        nft = _nft(a.ns)
        try:
            for r in _rules(nft, DNAT_CHAIN):
                if r.get_attr("NFTA_RULE_USERDATA") == a.comment:
                    nft.rule("del", table=TABLE, chain=DNAT_CHAIN, handle=r.get_attr("NFTA_RULE_HANDLE"))
            for c in _chains(nft):
                if (c.get_attr("NFTA_CHAIN_NAME") == DNAT_CHAIN and c.get_attr("NFTA_CHAIN_USERDATA") == a.OWNER
                        and not _rules(nft, DNAT_CHAIN)):
                    nft.chain("del", table=TABLE, name=DNAT_CHAIN)
            if not _chains(nft) and any(t.get_attr("NFTA_TABLE_USERDATA") == a.OWNER for t in _tables(nft)):
                nft.table("del", name=TABLE)
        finally:
            nft.close()


def _data(value: bytes):
    return {"attrs": [("NFTA_DATA_VALUE", value)]}


def _iifname_match(ifname):
    from pyroute2.nftables.expressions import genex
    return (genex("meta", {"key": 6, "dreg": 1}),  # 6: NFT_META_IIFNAME
            genex("cmp", {"sreg": 1, "op": 0, "data": _data(ifname.encode().ljust(16, b"\0"))}))


def _dport_match(protocol, port):
    """`tcp dport PORT` as nft compiles it: the layer 4 protocol, then 2 bytes at transport header + 2."""
    from pyroute2.nftables.expressions import genex
    return (genex("meta", {"key": 16, "dreg": 1}),  # 16: NFT_META_L4PROTO
            genex("cmp", {"sreg": 1, "op": 0, "data": _data(bytes([IPPROTO[protocol]]))}),
            genex("payload", {"dreg": 1, "base": 2, "offset": 2, "len": 2}),  # base 2: transport header
            genex("cmp", {"sreg": 1, "op": 0, "data": _data(port.to_bytes(2, "big"))}))


def _dnat_to(ip, port):
    """`dnat to IP:PORT`: the address into register 1, the port into register 2, then the nat expression."""
    from ipaddress import IPv4Address

    from pyroute2.nftables.expressions import genex
    return (genex("immediate", {"dreg": 1, "data": _data(IPv4Address(ip).packed)}),
            genex("immediate", {"dreg": 2, "data": _data(port.to_bytes(2, "big"))}),
            genex("nat", {"type": 1, "family": 2, "reg_addr_min": 1, "reg_proto_min": 2}))  # 1: DNAT; 2: IPv4
