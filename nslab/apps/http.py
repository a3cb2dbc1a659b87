"""The built-in HTTP/1.1 server a lab node runs: every request is answered with the node's name.

    python3 -m nslab.apps.http --name NAME --port PORT [--bind ADDR] [--ready-fd FD] [--reply-size N]

Every request (any method, any path) gets ``200`` with body ``NAME\\n`` (with
--reply-size N: N bytes, the name's line first, then filler) and the
headers ``Content-Type: text/plain``, ``Content-Length``, ``X-Served-By: NAME``,
``X-Client: IP:PORT`` (the peer as this server sees it: the client's own address
under DR/TUN, the director's view under NAT) and ``X-Local: IP:PORT`` (the address
the request arrived at: the VIP under DR/TUN, the RIP under NAT).

Persistence follows HTTP/1.1: an HTTP/1.1 request keeps the connection open
unless it says ``Connection: close``; an HTTP/1.0 request only with
``Connection: keep-alive``. Every reply says which (``Connection: close`` or
``keep-alive``). Idle connections are closed after --idle-timeout seconds.

Readiness: once the socket listens, ``ready\\n`` is written to --ready-fd and the
fd is closed, so a launcher waits on a pipe instead of sleeping. SIGTERM or
SIGINT closes the listener and every connection and exits 0.

The stdlib only: this starts inside slow emulated VMs where heavy imports cost
seconds. The small serving helpers here (signal_ready, serve_until_signalled)
are shared with nslab.apps.echo.
"""

import argparse
import asyncio
import os
import signal
import socket
import sys

MAX_HEAD = 64 * 1024      # a request head larger than this is refused (431)
MAX_BODY = 16 * 1024 * 1024
BACKLOG = 1024            # hundreds of clients may connect at once under load


def signal_ready(fd):
    """Tell the launcher we listen: write 'ready\\n' to fd and close it (no-op for None)."""
    if fd is None:
        return
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)


async def serve_until_signalled(servers, connections, ready_fd):
    """Signal readiness, wait for SIGTERM/SIGINT, then close listeners and live connections."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    signal_ready(ready_fd)
    await stop.wait()
    for server in servers:
        server.close()
    # Python 3.11's Server.close() leaves accepted connections open; end them ourselves
    # so that no client hangs and the process exits promptly.
    for transport in list(connections):
        transport.abort()
    for server in servers:
        try:
            await asyncio.wait_for(server.wait_closed(), 1.0)
        except asyncio.TimeoutError:
            pass


def _addr(pair):
    return f"{pair[0]}:{pair[1]}" if pair else "?"


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse request heads from a buffer, answer each, honour keep-alive."""

    def __init__(self, name, connections, idle_timeout, body):
        self.body = body
        self.name = name
        self.connections = connections
        self.idle_timeout = idle_timeout
        self.buf = bytearray()
        self.need_body = 0       # bytes of a request body still to discard
        self.transport = None
        self.idle = None

    def connection_made(self, transport):
        self.transport = transport
        self.connections.add(transport)
        self.peer = _addr(transport.get_extra_info("peername"))
        self.local = _addr(transport.get_extra_info("sockname"))
        self._arm_idle()

    def connection_lost(self, exc):
        self.connections.discard(self.transport)
        if self.idle:
            self.idle.cancel()

    def _arm_idle(self):
        if self.idle:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.idle_timeout, self.transport.close)

    def data_received(self, data):
        self._arm_idle()
        self.buf += data
        while not self.transport.is_closing():
            if self.need_body:
                # Discard a request body (POST) before reading the next request head.
                take = min(self.need_body, len(self.buf))
                del self.buf[:take]
                self.need_body -= take
                if self.need_body:
                    return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._fail(431, "Request Header Fields Too Large")
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[:end + 4]
            self._handle(head)

    def _handle(self, head):
        lines = head.split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)          # tolerate stray CRLFs between requests (RFC 9112 2.2)
        parts = lines[0].split() if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400, "Bad Request")
            return
        method, version = parts[0].upper(), parts[2]
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if not sep:
                self._fail(400, "Bad Request")
                return
            headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            # Our own clients never stream bodies; refuse rather than mis-frame the stream.
            self._fail(501, "Not Implemented")
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._fail(400, "Bad Request")
            return
        self.need_body = length
        if length and headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits 1 s for it otherwise
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        if version == "HTTP/1.0":
            keep = "keep-alive" in tokens
        else:
            keep = "close" not in tokens
        self._respond(200, "OK", keep, send_body=(method != "HEAD"))
        if not keep:
            self.transport.close()   # flushes the reply, then FIN

    def _respond(self, code, reason, keep, send_body=True):
        body = self.body if code == 200 else f"{code} {reason}\n".encode()
        head = (
            f"HTTP/1.1 {code} {reason}\r\n"
            f"Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Served-By: {self.name}\r\n"
            f"X-Client: {self.peer}\r\n"
            f"X-Local: {self.local}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode("latin-1")
        self.transport.write(head + body if send_body else head)

    def _fail(self, code, reason):
        self._respond(code, reason, keep=False)
        self.transport.close()


def listen_socket(bind, port, kind=socket.SOCK_STREAM):
    """A bound socket with SO_REUSEADDR, so a restarted app never waits out TIME_WAIT."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.setblocking(False)
    return sock


def reply_body(name, size=None):
    """NAME\\n, or exactly `size` bytes starting with it (cut short below its length): a large reply."""
    line = (name + "\n").encode()
    if size is None:
        return line
    return (line + b"." * max(0, size - len(line) - 1) + b"\n")[:size]


async def serve(name, bind, port, ready_fd=None, idle_timeout=15.0, reply_size=None):
    """Serve HTTP until SIGTERM/SIGINT; raises OSError if the address can't be bound."""
    loop = asyncio.get_running_loop()
    connections = set()
    body = reply_body(name, reply_size)
    # create_server() calls listen() itself, with 100 unless told: under a burst of
    # hundreds of connects that overflows the accept queue and costs 1 s SYN retries.
    server = await loop.create_server(
        lambda: HttpProtocol(name, connections, idle_timeout, body), sock=listen_socket(bind, port), backlog=BACKLOG)
    await serve_until_signalled([server], connections, ready_fd)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m nslab.apps.http", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="node name; the body and X-Served-By of every reply")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--bind", default="0.0.0.0",
                        help="default 0.0.0.0: under DR/TUN requests arrive for a VIP held on lo")
    parser.add_argument("--ready-fd", type=int, help="write 'ready\\n' here once listening, then close it")
    parser.add_argument("--idle-timeout", type=float, default=15.0, help="close idle keep-alive connections")
    parser.add_argument("--reply-size", type=int, help="bytes of every reply body (default: the name's line)")
    args = parser.parse_args(argv)
    if args.reply_size is not None and args.reply_size < 1:
        parser.error("--reply-size must be at least 1")
    try:
        asyncio.run(serve(args.name, args.bind, args.port, args.ready_fd, args.idle_timeout, args.reply_size))
    except OSError as exc:
        print(f"nslab.apps.http: cannot listen on {args.bind}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
