"""The traffic generator nslab runs inside a lab node: HTTP, TCP echo, UDP echo and ping, one JSON result.

    python3 -m nslab.verify.traffic http     --target IP:PORT [--count N] [--concurrency C]
                                             [--timeout S] [--keepalive yes|no]
    python3 -m nslab.verify.traffic tcp-echo --target IP:PORT [--count N] [--concurrency C]
                                             [--timeout S] [--payload TEXT]
    python3 -m nslab.verify.traffic udp      --target IP:PORT [--count N] [--concurrency C]
                                             [--timeout S] [--payload TEXT]
    python3 -m nslab.verify.traffic ping     --target IP [--count N] [--timeout S] [--interval S] [--ttl T]

Prints one JSON object (the dict the matching run_* function returns) and exits
0 when every request succeeded, 1 when any failed, 2 on bad arguments, 3 when the
machine can't do it (ping without root or ping sockets).

Each HTTP/TCP request is a fresh connection and each UDP datagram leaves from a
fresh socket (a new client port), because IPVS schedules per connection (per
client addr:port for UDP): reusing one would pin every request to one real
server. Every request has its own timeout, so a run lasts at most about
ceil(count / concurrency) * timeout. Targets are IPv4 literals: a lab node has no
resolver to ask.
"""

import argparse
import errno
import json
import os
import socket
import struct
import sys
import time

from nslab.errors import EnvironmentMissing, UsageError


class BadReply(Exception):
    """The server answered, but not with what the protocol promises; `name` is its key in errors."""

    def __init__(self, detail, name="BadReply"):
        super().__init__(detail)
        self.name = name


class _Tally:
    """Collects per-request outcomes into the result dict every run_* returns."""

    def __init__(self, kind, target, count):
        self.result = {"kind": kind, "target": target, "sent": count, "ok": 0, "failed": 0,
                       "errors": {}, "by_server": {}}
        self.latencies, self.client_ports = [], []
        self.start = time.perf_counter()

    def ok(self, server, started):
        self.result["ok"] += 1
        self.latencies.append(time.perf_counter() - started)
        self.result["by_server"][server] = self.result["by_server"].get(server, 0) + 1

    def fail(self, exc):
        name = exc if isinstance(exc, str) else _error_name(exc)
        self.result["failed"] += 1
        self.result["errors"][name] = self.result["errors"].get(name, 0) + 1

    def finish(self):
        elapsed = time.perf_counter() - self.start
        ms = sorted(x * 1000 for x in self.latencies)

        def pick(q):  # nearest-rank percentile
            return round(ms[min(len(ms) - 1, max(0, int(q * len(ms) + 0.5) - 1))], 3) if ms else None
        self.result.update(
            elapsed_s=round(elapsed, 4),
            rate_per_s=round(self.result["ok"] / elapsed, 1) if elapsed > 0 else None,
            latency_ms={"min": pick(0), "p50": pick(0.5), "p99": pick(0.99), "max": pick(1)},
            client_ports=self.client_ports)
        return self.result


def _error_name(exc):
    """The key an error is counted under: its class, or the errno name for a bare OSError."""
    if isinstance(exc, BadReply):
        return exc.name
    if type(exc) is OSError and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]  # e.g. EHOSTUNREACH, ENETUNREACH: the lab's routing at fault
    return type(exc).__name__


def parse_target(text, port=True):
    """'IP:PORT' (or 'IP' when port=False) -> (ip, port|None); raises UsageError."""
    ip, sep, port_text = text.rpartition(":") if port else (text, "", "")
    if port and not sep:
        raise UsageError(f"target {text!r} is not IP:PORT")
    try:
        socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        raise UsageError(f"target {text!r}: {ip!r} is not an IPv4 address") from None
    if not port:
        return ip, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"target {text!r}: {port_text!r} is not a port (1-65535)")
    return ip, int(port_text)


def _check(count, concurrency, timeout):
    if count < 1 or concurrency < 1 or not timeout > 0:
        raise UsageError("count and concurrency must be at least 1 and timeout positive")


def _server_of(headers, body):
    """Who answered: X-Served-By, else the body's first line (our apps' body is just the name)."""
    name = headers.get("x-served-by")
    if name:
        return name
    lines = body.decode("utf-8", "replace").strip().splitlines()
    return lines[0][:64] if lines else "?"


async def _read_http_reply(reader):
    """Read one response; returns (server, keep) or raises BadReply / IncompleteReadError."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = head[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        raise BadReply(head[0])
    headers = {}
    for line in head[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body, keep = await reader.read(), False
    if status[1] != "200":
        raise BadReply(head[0], name=f"HTTP{status[1]}")
    return _server_of(headers, body), keep


def _drive(kind, target_ip, port, count, concurrency, timeout, one):
    """Run `one(state, ports)` `count` times, `concurrency` at once, each bounded by `timeout`.

    `one` returns the name of the server that answered or raises; `state` is per
    worker (a kept-alive connection lives there, with a "close" callable)."""
    _check(count, concurrency, timeout)
    import asyncio  # lazily: ping does not need it, and the import costs time in slow VMs
    tally = _Tally(kind, f"{target_ip}:{port}", count)

    async def worker(todo):
        state = {}
        while todo:
            todo.pop()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    server = await one(state, tally.client_ports)
                tally.ok(server, started)
            except Exception as exc:  # every failure is data: counted by its kind
                tally.fail(exc)
        state.get("close", lambda: None)()

    async def everything():
        todo = list(range(count))  # shared: each worker takes the next request until none is left
        await asyncio.gather(*(worker(todo) for _ in range(min(count, concurrency))))

    asyncio.run(everything())
    return tally.finish()


def run_http(target_ip, port, count=1, concurrency=1, timeout=3.0, keepalive=False):
    """Send `count` GET / requests, at most `concurrency` at once; returns the result dict."""
    import asyncio
    conn = "keep-alive" if keepalive else "close"
    request = f"GET / HTTP/1.1\r\nHost: {target_ip}:{port}\r\nUser-Agent: nslab\r\nConnection: {conn}\r\n\r\n".encode()

    async def one(state, ports):
        if "writer" not in state:
            state["reader"], state["writer"] = await asyncio.open_connection(target_ip, port)
            state["close"] = state["writer"].close
        ports.append(state["writer"].get_extra_info("sockname")[1])
        keep = False
        try:
            state["writer"].write(request)
            server, keep = await _read_http_reply(state["reader"])
            return server
        finally:
            if not (keepalive and keep):  # also on any error or timeout: never reuse a broken stream
                state.pop("close")()
                del state["reader"], state["writer"]

    return _drive("http", target_ip, port, count, concurrency, timeout, one)


def run_tcp_echo(target_ip, port, count=1, concurrency=1, timeout=3.0, payload=b"hello\n"):
    """Open `count` connections, send payload, half-close, expect 'NAME ' + payload back."""
    import asyncio

    async def one(state, ports):
        reader, writer = await asyncio.open_connection(target_ip, port)
        try:
            ports.append(writer.get_extra_info("sockname")[1])
            writer.write(payload)
            writer.write_eof()
            reply = await reader.read()
        finally:
            writer.close()
        name, sep, echoed = reply.partition(b" ")
        if not sep or echoed != payload:
            raise BadReply(reply[:80])
        return name.decode("utf-8", "replace")

    return _drive("tcp-echo", target_ip, port, count, concurrency, timeout, one)


IP_RECVERR = 11  # <linux/in.h>: lets an unconnected UDP socket hear ICMP port-unreachable


def run_udp(target_ip, port, count=1, concurrency=1, timeout=3.0, payload=b"hello"):
    """Send `count` datagrams, each from a fresh socket; expect 'NAME ' + payload from the target."""
    import asyncio

    class One(asyncio.DatagramProtocol):
        def __init__(self, reply):
            self.reply = reply

        def datagram_received(self, data, addr):
            if not self.reply.done():
                self.reply.set_result((data, addr))

        def error_received(self, exc):
            if not self.reply.done():
                self.reply.set_exception(exc)

    async def one(state, ports):
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        # Unconnected, so a reply from the wrong source address (a DR real server
        # answering from its RIP instead of the VIP) is seen and named, not dropped.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.bind(("0.0.0.0", 0))
        transport, _ = await loop.create_datagram_endpoint(lambda: One(reply), sock=sock)
        try:
            ports.append(sock.getsockname()[1])
            transport.sendto(payload, (target_ip, port))
            data, addr = await reply
        finally:
            transport.close()
        name, sep, echoed = data.partition(b" ")
        if addr != (target_ip, port):
            raise BadReply(f"reply from {addr[0]}:{addr[1]}", name="WrongSourceAddress")
        if not sep or echoed != payload:
            raise BadReply(data[:80])
        return name.decode("utf-8", "replace")

    return _drive("udp", target_ip, port, count, concurrency, timeout, one)


def _checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))  # our echo requests have even length
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


ICMP_ERRORS = {3: "DestinationUnreachable", 11: "TimeExceeded"}


def _await_echo(sock, raw, ident, seq, started, timeout):
    """Wait for the reply to echo request `seq` -> (outcome, reply row); outcome 'ok' or an error name."""
    import select
    while (left := started + timeout - time.perf_counter()) > 0 and select.select([sock], [], [], left)[0]:
        packet, (src, _) = sock.recvfrom(65535)
        # A raw socket sees the IP header (and every ICMP packet, our own requests on lo
        # included); a ping socket sees only the ICMP message of its own echo id.
        icmp = packet[(packet[0] & 0x0F) * 4:] if raw else packet
        if len(icmp) < 8:
            continue
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
        if kind == 0 and rseq == seq and (rid == ident or not raw):
            return "ok", {"seq": seq, "from": src, "ttl": packet[8] if raw else None,
                          "rtt_ms": round((time.perf_counter() - started) * 1000, 3)}
        if kind in ICMP_ERRORS and raw and len(icmp) >= 36:
            inner = icmp[8 + (icmp[8] & 0x0F) * 4:]  # the error quotes our IP header + 8 bytes of ICMP
            if len(inner) >= 8 and struct.unpack("!HH", inner[4:8]) == (ident, seq):
                return ICMP_ERRORS[kind], {"seq": seq, "from": src, "error": ICMP_ERRORS[kind]}
    return "TimeoutError", None


def run_ping(target_ip, count=3, timeout=1.0, interval=0.2, ttl=None):
    """ICMP echo without an external binary; raises EnvironmentMissing without root or ping sockets."""
    _check(count, 1, timeout)
    try:
        sock, raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), True
    except PermissionError:
        try:  # unprivileged ICMP sockets (net.ipv4.ping_group_range); the kernel picks the id
            sock, raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), False
        except OSError as exc:
            raise EnvironmentMissing(f"ping needs root or ping sockets: {exc}") from None
    tally = _Tally("ping", target_ip, count)
    tally.result["replies"] = replies = []
    ident = os.getpid() & 0xFFFF
    with sock:
        if ttl:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        for seq in range(1, count + 1):
            body = struct.pack("!d", time.time()) + bytes(range(48))  # 56 bytes, like ping(8)
            csum = _checksum(struct.pack("!BBHHH", 8, 0, 0, ident, seq) + body)
            started = time.perf_counter()
            try:
                sock.sendto(struct.pack("!BBHHH", 8, 0, csum, ident, seq) + body, (target_ip, 0))
                outcome, row = _await_echo(sock, raw, ident, seq, started, timeout)
            except OSError as exc:  # e.g. no route to the target
                outcome, row = _error_name(exc), None
            if row:
                replies.append(row)
            if outcome == "ok":
                tally.ok(target_ip, started)
            else:
                tally.fail(outcome)
            if seq < count:
                time.sleep(max(0.0, started + interval - time.perf_counter()))
    result = tally.finish()
    for key in ("by_server", "client_ports", "rate_per_s"):
        del result[key]
    result["received"] = result["ok"]
    result["rtt_ms"] = result.pop("latency_ms")
    return result


def _parser():
    parser = argparse.ArgumentParser(prog="python3 -m nslab.verify.traffic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("http", "tcp-echo", "udp", "ping"):
        p = sub.add_parser(kind)
        p.add_argument("--target", required=True, help="IP" if kind == "ping" else "IP:PORT")
        p.add_argument("--count", type=int, default=3 if kind == "ping" else 1)
        p.add_argument("--timeout", type=float, default=1.0 if kind == "ping" else 3.0, help="seconds per request")
        if kind == "ping":
            p.add_argument("--interval", type=float, default=0.2)
            p.add_argument("--ttl", type=int)
        else:
            p.add_argument("--concurrency", type=int, default=1)
        if kind == "http":
            p.add_argument("--keepalive", choices=("yes", "no"), default="no")
        if kind in ("tcp-echo", "udp"):
            p.add_argument("--payload", default="hello\n" if kind == "tcp-echo" else "hello")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        ip, port = parse_target(args.target, port=args.kind != "ping")
        if args.kind == "http":
            result = run_http(ip, port, args.count, args.concurrency, args.timeout, args.keepalive == "yes")
        elif args.kind == "tcp-echo":
            result = run_tcp_echo(ip, port, args.count, args.concurrency, args.timeout, args.payload.encode())
        elif args.kind == "udp":
            result = run_udp(ip, port, args.count, args.concurrency, args.timeout, args.payload.encode())
        else:
            result = run_ping(ip, args.count, args.timeout, args.interval, args.ttl)
    except (UsageError, EnvironmentMissing) as exc:
        print(f"nslab.verify.traffic: {exc}", file=sys.stderr)
        return exc.exit_code
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
