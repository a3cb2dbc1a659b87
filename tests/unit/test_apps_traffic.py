"""The built-in apps (http, echo) and the traffic generator, end to end on loopback only."""

import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nslab.verify import traffic

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"   # tests never send traffic anywhere else
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_tcp_udp_port():
    """A port free for both TCP and UDP (the echo app binds both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def start(module, *args, timeout=20.0):
    """Start `python -m module args --ready-fd W` and wait on the pipe (no sleeps) until it listens."""
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", module, *args, "--ready-fd", str(w)],
                            pass_fds=(w,), env=ENV, cwd=ROOT, stderr=subprocess.PIPE)
    os.close(w)   # only the child holds the write end now: EOF means it died before ready
    try:
        readable, _, _ = select.select([r], [], [], timeout)
        line = os.read(r, 64) if readable else b""
    finally:
        os.close(r)
    if line != b"ready\n":
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"{module} never became ready: {line!r} {err.decode(errors='replace')}")
    return proc


def stop(proc):
    """SIGTERM the pid we started; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.fixture
def app():
    """Factory: app(module, name, *extra) -> (proc, port); stops each one, asserting a clean exit."""
    started = []

    def launch(module, name, *extra, port=None):
        port = port or (free_tcp_udp_port() if module.endswith("echo") else free_port())
        proc = start(module, "--name", name, "--port", str(port), "--bind", LOOPBACK, *extra)
        started.append(proc)
        return proc, port

    yield launch
    codes = [stop(proc) for proc in started]
    assert codes == [0] * len(codes)


def cli(*args):
    done = subprocess.run([sys.executable, "-m", "nslab.verify.traffic", *args],
                          env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=60)
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else None), done.stderr


def test_http_200_requests_at_concurrency_50_all_served_by_name(app):
    _, port = app("nslab.apps.http", "rs1")
    result = traffic.run_http(LOOPBACK, port, count=200, concurrency=50)
    assert (result["ok"], result["failed"], result["errors"]) == (200, 0, {})
    assert result["by_server"] == {"rs1": 200}
    # One fresh connection per request: 200 distinct client ports (a connection is its 4-tuple).
    assert len(set(result["client_ports"])) == 200
    assert result["latency_ms"]["min"] <= result["latency_ms"]["p50"] <= result["latency_ms"]["max"]


def test_two_http_apps_each_answer_with_their_own_name(app):
    _, port1 = app("nslab.apps.http", "rs1")
    _, port2 = app("nslab.apps.http", "rs2")
    assert traffic.run_http(LOOPBACK, port1, count=5)["by_server"] == {"rs1": 5}
    assert traffic.run_http(LOOPBACK, port2, count=5)["by_server"] == {"rs2": 5}


def test_http_keepalive_reuses_connections(app):
    _, port = app("nslab.apps.http", "rs1")
    result = traffic.run_http(LOOPBACK, port, count=100, concurrency=4, keepalive=True)
    assert result["by_server"] == {"rs1": 100}
    assert len(set(result["client_ports"])) == 4


def raw_exchange(port, request, half_close=False):
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_http_head_post_and_headers(app):
    _, port = app("nslab.apps.http", "web-1")
    reply = raw_exchange(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"web-1\n"
    for header in (b"Content-Length: 6", b"Content-Type: text/plain", b"X-Served-By: web-1",
                   b"Connection: close", b"X-Local: 127.0.0.1:%d" % port):
        assert header in head.split(b"\r\n")
    head_only = raw_exchange(port, b"HEAD / HTTP/1.0\r\n\r\n")
    assert head_only.endswith(b"Connection: close\r\n\r\n")
    # Two pipelined requests on one connection: both answered, the second closes it.
    two = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK") == 2 and b"Connection: keep-alive" in two
    assert raw_exchange(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_echo_tcp_and_udp_round_trip(app):
    _, port = app("nslab.apps.echo", "rs3", "--protocol", "both")
    tcp = traffic.run_tcp_echo(LOOPBACK, port, count=20, concurrency=5, payload=b"ping\nmore\n")
    assert (tcp["ok"], tcp["by_server"]) == (20, {"rs3": 20})
    udp = traffic.run_udp(LOOPBACK, port, count=20, concurrency=5)
    assert (udp["ok"], udp["by_server"]) == (20, {"rs3": 20})
    assert len(set(udp["client_ports"])) == 20    # a fresh client port per datagram
    assert raw_exchange(port, b"hello\n", half_close=True) == b"rs3 hello\n"


def test_echo_udp_on_wildcard_replies_from_the_address_asked(app):
    # Bound to 0.0.0.0 like in a DR lab; the reply must come from the request's destination.
    port = free_tcp_udp_port()
    app("nslab.apps.echo", "rs4", "--protocol", "udp", "--bind", "0.0.0.0", port=port)
    result = traffic.run_udp(LOOPBACK, port, count=3)
    assert (result["ok"], result["errors"]) == (3, {})


def test_closed_port_counts_refused_and_cli_exits_1():
    port = free_port()
    code, result, _ = cli("http", "--target", f"{LOOPBACK}:{port}", "--count", "3", "--concurrency", "2")
    assert code == 1
    assert (result["ok"], result["failed"], result["errors"]) == (0, 3, {"ConnectionRefusedError": 3})
    udp = traffic.run_udp(LOOPBACK, free_port(socket.SOCK_DGRAM), count=2, timeout=2)
    assert udp["errors"] == {"ConnectionRefusedError": 2}


def test_cli_success_prints_json_and_exits_0(app):
    _, port = app("nslab.apps.http", "rs1")
    code, result, _ = cli("http", "--target", f"{LOOPBACK}:{port}", "--count", "10", "--concurrency", "3")
    assert code == 0 and result["kind"] == "http" and result["by_server"] == {"rs1": 10}
    assert set(result) >= {"sent", "ok", "failed", "errors", "elapsed_s", "rate_per_s", "latency_ms", "client_ports"}


@pytest.mark.parametrize("args", [
    ["http", "--target", "127.0.0.1"],
    ["http", "--target", "localhost:80"],
    ["http", "--target", "127.0.0.1:0"],
    ["http", "--target", "127.0.0.1:80", "--count", "0"],
    ["bogus"],
])
def test_cli_bad_arguments_exit_2(args):
    code, result, err = cli(*args)
    assert code == 2 and result is None and err


@pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP sockets need root")
def test_ping_loopback():
    result = traffic.run_ping(LOOPBACK, count=3, interval=0.05)
    assert (result["sent"], result["received"], result["failed"]) == (3, 3, 0)
    assert [r["seq"] for r in result["replies"]] == [1, 2, 3]
    assert result["rtt_ms"]["max"] is not None


def test_sigterm_exits_0_with_a_client_connected(app):
    proc, port = app("nslab.apps.http", "rs1")
    with socket.create_connection((LOOPBACK, port), timeout=5) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")   # kept alive, then left open
        idle.recv(4096)
        assert stop(proc) == 0


def test_restart_on_same_port_after_traffic(app):
    proc, port = app("nslab.apps.http", "rs1")
    assert traffic.run_http(LOOPBACK, port, count=20, concurrency=5)["ok"] == 20
    assert stop(proc) == 0
    # SO_REUSEADDR: rebinding right away works despite connections in TIME_WAIT.
    _, again = app("nslab.apps.http", "rs1-again", port=port)
    assert traffic.run_http(LOOPBACK, again, count=2)["by_server"] == {"rs1-again": 2}


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2)")
def test_listen_backlog_survives_create_server(app):
    # asyncio's create_server() re-listens with backlog 100 unless told; a burst of
    # hundreds of connects then overflows the accept queue and costs 1 s SYN retries.
    _, port = app("nslab.apps.http", "rs1")
    row = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout.split()
    assert row[0] == "LISTEN" and int(row[2]) >= 1024


def test_error_names():
    assert traffic._error_name(OSError(errno.EHOSTUNREACH, "x")) == "EHOSTUNREACH"
    assert traffic._error_name(ConnectionRefusedError(errno.ECONNREFUSED, "x")) == "ConnectionRefusedError"
    assert traffic._error_name(traffic.BadReply("HTTP/1.1 503 x", name="HTTP503")) == "HTTP503"
    assert traffic._error_name(TimeoutError()) == "TimeoutError"


def test_port_in_use_exits_1_without_ready(app):
    _, port = app("nslab.apps.http", "rs1")
    with pytest.raises(AssertionError, match="never became ready"):
        start("nslab.apps.http", "--name", "rs2", "--port", str(port), "--bind", LOOPBACK)


def test_http_expect_100_continue(app):
    _, port = app("nslab.apps.http", "rs1")
    reply = raw_exchange(port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
                               b"Connection: close\r\n\r\nabc")
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nrs1\n")
