"""Deliberately wrong harness clients, to show (and test) that verdicts and flags can fail.

``python -m tunnelws_testnet.harness.clients.misbehaving MODE`` where MODE is

- ``direct``: ignores the proxy; resolves the origin locally and connects straight to it;
- ``absolute``: sends ``GET ws://host:port/echo`` to the proxy instead of CONNECT;
- ``leak``: tunnels correctly but repeats ``Proxy-Authorization`` in the WebSocket
  handshake, so the proxy credentials reach the origin;
- ``loop``: retries CONNECT with the same credentials after every 407 (up to 5 times);
- ``proxy-name``: tunnels correctly, but checks a ``wss://`` origin's certificate
  against the proxy's host name instead of the origin's.

Apart from its one mistake each mode follows the client contract: a minimal
blocking WebSocket client (text messages under 126 bytes) that prints the echo
and exits 0, or exits 1 (``loop``: 6, the proxy-auth exit code) on failure.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import sys
from urllib.parse import unquote, urlsplit

TIMEOUT = 3.0
MAX_CONNECT_ATTEMPTS = 5
MODES = ("direct", "absolute", "leak", "loop", "proxy-name")


class Failed(Exception):
    pass


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise Failed(f"connection closed after {data[:200]!r}")
        data += chunk
    return data


def _status(head: bytes) -> int:
    parts = head.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Failed("connection closed inside a frame")
        data += chunk
    return data


def _websocket_echo(sock: socket.socket, host_header: str, message: str, extra: str = "") -> str:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /echo HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n".encode()
    )
    head = _read_head(sock)
    if _status(head) != 101:
        raise Failed(f"handshake answered {head.splitlines()[0]!r}")
    payload = message.encode()
    if len(payload) >= 126:
        raise Failed("this minimal client sends short messages only")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    header = _recv_exact(sock, 2)
    return _recv_exact(sock, header[1] & 0x7F).decode()


def _proxy() -> tuple[str, int, str | None]:
    url = urlsplit(
        os.environ.get("http_proxy")
        or os.environ.get("HTTP_PROXY")
        or os.environ.get("ALL_PROXY")
        or ""
    )
    if not url.hostname or url.port is None:
        raise Failed("no proxy configured")
    authorization = None
    if url.username is not None:
        pair = f"{unquote(url.username)}:{unquote(url.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return url.hostname, url.port, authorization


def run(mode: str) -> str:
    target = urlsplit(os.environ["TUNNELWS_URL"])
    message = os.environ["TUNNELWS_MESSAGE"]
    host, port = target.hostname or "", target.port or 80
    if mode == "direct":
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
        with socket.create_connection((str(address[0]), port), timeout=TIMEOUT) as sock:
            return _websocket_echo(sock, target.netloc, message)
    proxy_host, proxy_port, authorization = _proxy()
    if mode == "absolute":
        with socket.create_connection((proxy_host, proxy_port), timeout=TIMEOUT) as sock:
            sock.sendall(
                f"GET ws://{target.netloc}/echo HTTP/1.1\r\nHost: {target.netloc}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                "\r\n".encode()
            )
            raise Failed(f"proxy answered {_read_head(sock).splitlines()[0]!r}")
    attempts = MAX_CONNECT_ATTEMPTS if mode == "loop" else 1
    for _ in range(attempts):
        with socket.create_connection((proxy_host, proxy_port), timeout=TIMEOUT) as sock:
            credentials = f"Proxy-Authorization: {authorization}\r\n" if authorization else ""
            sock.sendall(
                f"CONNECT {target.netloc} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                f"{credentials}\r\n".encode()
            )
            status = _status(_read_head(sock))
            if status == 407:
                continue
            if status != 200:
                raise Failed(f"CONNECT answered {status}")
            leaked = credentials if mode == "leak" else ""
            if mode == "proxy-name":
                context = ssl.create_default_context()  # SSL_CERT_FILE: the harness CA
                with context.wrap_socket(sock, server_hostname=proxy_host) as tls:
                    return _websocket_echo(tls, target.netloc, message)
            return _websocket_echo(sock, target.netloc, message, leaked)
    print("misbehaving: proxy authentication failed", file=sys.stderr)
    sys.exit(6)


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(run(sys.argv[1]), flush=True)
    except (Failed, OSError) as exc:
        print(f"misbehaving: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
