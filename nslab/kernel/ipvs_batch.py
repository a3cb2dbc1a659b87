"""Many IPVS real-server requests per netlink send, their acknowledgements read after.

pyroute2 takes about half a millisecond to build and encode one IPVS request, and waits for each answer
before the next: a thousand real servers took 5.4 s in the emulated kernel VM against 0.37 s for
`ipvsadm -R`. The real servers of one service differ only in address, port, forwarding method and
weight, so pyroute2 encodes one request per (command, service) and the others are copies of it with
those four fields rewritten in place. They go to the kernel BATCH per send on a plain generic-netlink
socket opened in the namespace (the kernel handles each message of a send in turn, and acknowledges
each), and the acknowledgements are matched to the requests by sequence number after.
"""

import itertools
import socket
import struct

from ..errors import KernelError

NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flag bits
HEADERS = 20  # nlmsghdr (16) + genlmsghdr (4): the attributes follow
IPVS_CMD_ATTR_DEST = 2
# IPVS_DEST_ATTR_* of the fields a real server's request rewrites (include/uapi/linux/ip_vs.h)
ADDR, PORT, FWD_METHOD, WEIGHT = 1, 2, 3, 4
BATCH = 256  # requests per send: their acks (36 bytes each) stay far below a socket's receive buffer
ACK_TIMEOUT_S = 120  # the emulated VM is slow; the kernel acknowledges every request it was sent

_seq = itertools.count(1)


def _socket(s, ns):
    def make():
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        sock.bind((0, 0))
        sock.settimeout(ACK_TIMEOUT_S)
        return sock
    return s.socket(ns, "genl-batch", make)


def _nlas(data, start: int, end: int):
    """(type, payload offset, payload length) of each netlink attribute in data[start:end]."""
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, start + 4, length - 4
        start += (length + 3) & ~3


class Template:
    """One real-server request as pyroute2 encoded it; fill() gives it for another real server."""

    def __init__(self, encoded: bytes):
        self.data = bytearray(encoded)
        dest = next(((o, n) for k, o, n in _nlas(self.data, HEADERS, len(self.data)) if k == IPVS_CMD_ATTR_DEST),
                    None)
        self.at = {} if dest is None else {k: o for k, o, n in _nlas(self.data, dest[0], dest[0] + dest[1])
                                           if k in (PORT, FWD_METHOD, WEIGHT) or (k == ADDR and n in (4, 16))}
        if len(self.at) != 4:
            raise ValueError("an IPVS real-server request without the address, port, method and weight "
                             "attributes this module rewrites")

    def fill(self, seq: int, rip: str, rport: int, method: int, weight: int) -> bytes:
        d = bytearray(self.data)
        struct.pack_into("=II", d, 8, seq, 0)  # nlmsg_seq, nlmsg_pid (0: the kernel's own)
        d[self.at[ADDR]:self.at[ADDR] + 4] = socket.inet_aton(rip)  # IPv4: the first 4 bytes of the address
        struct.pack_into(">H", d, self.at[PORT], rport)
        struct.pack_into("=I", d, self.at[FWD_METHOD], method)
        struct.pack_into("=I", d, self.at[WEIGHT], weight)
        return bytes(d)


def _acks(sock, seqs) -> dict:
    """{seq: errno} of the requests the kernel refused; returns once every seq is acknowledged."""
    pending, refused = set(seqs), {}
    while pending:
        try:
            data = sock.recv(1 << 16)
        except socket.timeout:
            raise KernelError(f"the kernel acknowledged no IPVS request for {ACK_TIMEOUT_S} s "
                              f"({len(pending)} of {len(seqs)} unanswered)") from None
        off = 0
        while off + 16 <= len(data):
            length, kind, _, seq, _ = struct.unpack_from("=IHHII", data, off)
            if kind == NLMSG_ERROR and seq in pending:
                pending.discard(seq)
                err = struct.unpack_from("=i", data, off + 16)[0]
                if err:
                    refused[seq] = -err
            if length < 16:
                break
            off += (length + 3) & ~3
    return refused


def send(s, ns: str, requests, encode, values) -> dict:
    """Send [(command, action)] for real servers in namespace ns, BATCH per send; return {index in requests:
    errno} of those the kernel refused (the others were applied). encode(s, command, action) gives the
    request pyroute2 encodes; values(action) its (address, port, method number, weight)."""
    sock = _socket(s, ns)
    templates, refused = {}, {}
    for start in range(0, len(requests), BATCH):
        parts, index = [], {}
        for i, (command, a) in enumerate(requests[start:start + BATCH], start):
            key = (command, a.protocol, a.vip, a.port)
            if key not in templates:
                templates[key] = Template(encode(s, command, a))
            seq = next(_seq)
            index[seq] = i
            parts.append(templates[key].fill(seq, *values(a)))
        sock.send(b"".join(parts))
        for seq, err in _acks(sock, index).items():
            refused[index[seq]] = err
    return refused
