"""The built-in TCP/UDP echo server a lab node runs: echoes what it gets, prefixed with the node's name.

    python3 -m nslab.apps.echo --name NAME --port PORT [--protocol tcp|udp|both]
                               [--bind ADDR] [--ready-fd FD]

Reply format (exact, so a client can tell which real server answered):

- TCP: the reply stream is ``NAME`` + one space + every byte received, in order,
  until the client closes its side (EOF); then the server closes too. So sending
  ``hello\\n`` reads back ``rs1 hello\\n``: the name begins the first response line.
  A connection that sends nothing gets nothing back.
- UDP: each datagram is answered by one datagram ``NAME`` + one space + payload,
  sent from the address the request was sent to. That matters under DR/TUN: the
  request arrives for a VIP held on lo, and a reply from a wildcard socket would
  otherwise leave with the RIP as its source and be dropped by the client.

NAME never contains a space, so ``reply.split(b" ", 1)`` gives (name, payload).
--protocol defaults to both (TCP and UDP on the same port number). Readiness and
SIGTERM behave as in nslab.apps.http: ``ready\\n`` on --ready-fd once every socket
is bound, clean exit 0 on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import socket
import struct
import sys

from nslab.apps.http import BACKLOG, listen_socket, serve_until_signalled

IP_PKTINFO = 8            # <linux/in.h>; Python's socket module does not export it
PKTINFO = struct.Struct("@i4s4s")   # struct in_pktinfo: ifindex, spec_dst, addr


class TcpEcho(asyncio.Protocol):
    """One TCP connection: the name and a space before the first byte, then a plain echo."""

    def __init__(self, name, connections):
        self.prefix = name.encode() + b" "
        self.connections = connections

    def connection_made(self, transport):
        self.transport = transport
        self.connections.add(transport)

    def connection_lost(self, exc):
        self.connections.discard(self.transport)

    def data_received(self, data):
        if self.prefix:
            data, self.prefix = self.prefix + data, b""
        self.transport.write(data)

    def eof_received(self):
        return False      # close our side once the echo is flushed


class UdpEcho:
    """A UDP socket answering each datagram from the address it was sent to (IP_PKTINFO)."""

    def __init__(self, name, sock):
        self.prefix = name.encode() + b" "
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

    def on_readable(self):
        # Drain everything queued: under load many datagrams arrive per wake-up.
        while True:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return        # e.g. an ICMP error queued by an earlier reply; the next wake-up goes on
            control = []
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= PKTINFO.size:
                    _ifindex, _spec_dst, dst = PKTINFO.unpack_from(value)
                    # Reply from the request's own destination address (a VIP under DR/TUN);
                    # ifindex 0 lets the routing table pick the way out.
                    control = [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, dst, bytes(4)))]
            try:
                self.sock.sendmsg([self.prefix + data], control, 0, addr)
            except OSError:
                pass          # UDP: a reply that cannot be sent is simply lost

    def close(self):
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()


class _UdpServer:
    """Adapter so serve_until_signalled can close the UDP socket like a TCP server."""

    def __init__(self, echo):
        self.echo = echo

    def close(self):
        self.echo.close()

    async def wait_closed(self):
        return None


async def serve(name, bind, port, protocol="both", ready_fd=None):
    """Serve echo until SIGTERM/SIGINT; raises OSError if an address can't be bound."""
    loop = asyncio.get_running_loop()
    connections, servers = set(), []
    if protocol in ("tcp", "both"):
        # backlog: create_server() re-listens with 100 otherwise (see nslab.apps.http.serve)
        servers.append(await loop.create_server(
            lambda: TcpEcho(name, connections), sock=listen_socket(bind, port), backlog=BACKLOG))
    if protocol in ("udp", "both"):
        echo = UdpEcho(name, listen_socket(bind, port, socket.SOCK_DGRAM))
        loop.add_reader(echo.sock, echo.on_readable)
        servers.append(_UdpServer(echo))
    await serve_until_signalled(servers, connections, ready_fd)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nslab.apps.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="node name; prefixes every reply")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--protocol", choices=("tcp", "udp", "both"), default="both")
    parser.add_argument("--bind", default="0.0.0.0",
                        help="default 0.0.0.0: under DR/TUN requests arrive for a VIP held on lo")
    parser.add_argument("--ready-fd", type=int, help="write 'ready\\n' here once listening, then close it")
    args = parser.parse_args(argv)
    if " " in args.name:
        parser.error("--name must not contain a space (clients split the reply on the first one)")
    try:
        asyncio.run(serve(args.name, args.bind, args.port, args.protocol, args.ready_fd))
    except OSError as exc:
        print(f"nslab.apps.echo: cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
