"""One HTTP request from inside a lab node, made by this process (the socket is opened in the node's
namespace): the reply's headers and the client's own address, for checks that compare both ends."""

import socket

from ..kernel import netns


def get(ns: str, ip: str, port: int, path: str = "/", source: str | None = None, keep: bool = False,
        timeout: float = 10.0):
    """(the socket, still open, if keep else None; the reply's headers, lower-cased; 'ip:port' of our end).
    Raises OSError."""
    with netns.entered(ns):  # the socket stays in the node's namespace after we leave it
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect((ip, port))
        local = "%s:%d" % sock.getsockname()
        conn = "keep-alive" if keep else "close"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: {conn}\r\n\r\n".encode())
        headers = _reply(sock)
    except BaseException:
        sock.close()
        raise
    if keep:
        return sock, headers, local
    sock.close()
    return None, headers, local


def _reply(sock) -> dict:
    """Read one reply (head and Content-Length body); its headers. Raises OSError."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the connection closed before a reply")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    pairs = (line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in pairs}
    need = int(headers.get("content-length", 0)) - len(body)
    while need > 0:
        chunk = sock.recv(min(need, 1 << 20))
        if not chunk:
            raise ConnectionError("the connection closed inside a reply")
        need -= len(chunk)
    return headers
