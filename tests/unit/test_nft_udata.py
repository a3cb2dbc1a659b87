"""The masquerade rule nslab writes carries the comment bytes `nft ... comment "..."` writes, and plan prints it."""

import struct

from nslab.plan.actions import Masquerade

NFTA_RULE_USERDATA = 7


def nft_cli_udata(text: str) -> bytes:
    # libnftnl's udata TLV, as nft writes it for `comment "TEXT"`: type 0 (NFTNL_UDATA_RULE_COMMENT),
    # one length byte, the NUL-terminated text.
    data = text.encode() + b"\0"
    return bytes((0, len(data))) + data


def userdata_attr(raw: bytes) -> bytes:
    """The payload of NFTA_RULE_USERDATA in an encoded nft rule message."""
    offset = 16 + 4  # nlmsghdr + nfgenmsg
    while offset < len(raw):
        length, kind = struct.unpack_from("HH", raw, offset)
        if kind & 0x3fff == NFTA_RULE_USERDATA:
            return bytes(raw[offset + 4:offset + length])
        offset += (length + 3) & ~3
    raise AssertionError("no NFTA_RULE_USERDATA")


def test_rule_userdata_is_the_nft_comment_tlv():
    from pyroute2.netlink.nfnetlink.nftsocket import nft_rule_msg
    for a in (Masquerade("r", out="eth0"), Masquerade("r", out="wan-uplink0", source="192.168.100.0/22")):
        msg = nft_rule_msg()
        msg["attrs"] = [("NFTA_RULE_TABLE", "nslab"), ("NFTA_RULE_USERDATA", a.comment)]
        msg.encode()
        assert userdata_attr(msg.data) == nft_cli_udata(a.comment)
        back = nft_rule_msg(bytes(msg.data))
        back.decode()
        assert back.get_attr("NFTA_RULE_USERDATA") == a.comment


def test_plan_lines_carry_the_same_comment_and_owner_marks():
    a = Masquerade("lab-router", out="eth1", source="192.168.0.0/24")
    table, chain, rule = a.commands()
    assert table.endswith("""nft add table ip nslab '{ comment "nslab" ; }'""")
    assert "priority srcnat" in chain and 'comment "nslab"' in chain
    assert rule.endswith("""ip saddr 192.168.0.0/24 oifname eth1 masquerade comment '"nslab masquerade eth1 192.168.0.0/24"'""")
