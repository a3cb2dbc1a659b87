"""Masquerade (SNAT) through nftables' netlink API, in the router's namespace."""

import contextlib

from . import netns

TABLE = "nslab"
CHAIN = "postrouting"


def _nft(ns):
    from pyroute2.nftables.main import NFTables  # opened inside, so it programs that namespace
    with netns.entered(ns):
        return NFTables(nfgen_family=2)  # NFPROTO_IPV4


def _has_table(nft):
    return any(t.get_attr("NFTA_TABLE_NAME") == TABLE for t in nft.get_tables())


def _rules(nft):
    if not _has_table(nft):
        return []
    return [r for r in nft.get_rules() if r.get_attr("NFTA_RULE_TABLE") == TABLE]


def _tag(a):
    # A rule's userdata holds which out-interface/source it masquerades, so `up` can tell it exists.
    return f"nslab masquerade {a.out} {a.source or 'any'}"


class Masquerade:
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
            if not _has_table(nft):
                nft.table("add", name=TABLE)
                nft.chain("add", table=TABLE, name=CHAIN, type="nat", hook="postrouting", priority=100,
                          policy=1)
            exprs = []
            if a.source:
                exprs.append(_saddr_match(a.source))
            exprs.append(_oifname_match(a.out))
            exprs.append(masq())
            nft.rule("add", table=TABLE, chain=CHAIN, expressions=exprs, userdata=_tag(a))
        finally:
            nft.close()

    @staticmethod
    def undo(s, a):
        nft = _nft(a.ns)
        with contextlib.suppress(Exception):
            nft.table("del", name=TABLE)
        nft.close()


def _oifname_match(ifname):
    from pyroute2.nftables.expressions import genex
    # meta oifname -> register 1; cmp eq against the NUL-padded name
    return (genex("meta", {"key": 7, "dreg": 1}),  # 7: NFT_META_OIFNAME
            genex("cmp", {"sreg": 1, "op": 0, "data": {"attrs": [("NFTA_DATA_VALUE", ifname.encode().ljust(16, b"\0"))]}}))


def _saddr_match(prefix):
    from ipaddress import IPv4Network

    from pyroute2.nftables.expressions import genex
    net = IPv4Network(prefix)
    # ip saddr: payload network header offset 12, 4 bytes; & mask == network
    return (genex("payload", {"dreg": 1, "base": 1, "offset": 12, "len": 4}),
            genex("bitwise", {"sreg": 1, "dreg": 1, "len": 4,
                              "mask": {"attrs": [("NFTA_DATA_VALUE", net.netmask.packed)]},
                              "xor": {"attrs": [("NFTA_DATA_VALUE", b"\0" * 4)]}}),
            genex("cmp", {"sreg": 1, "op": 0, "data": {"attrs": [("NFTA_DATA_VALUE", net.network_address.packed)]}}))
