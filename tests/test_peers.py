"""The real proxies used as peers: the launchers work, and the proxies behave
the way the client's tolerance assumes.

Each test speaks raw bytes to the proxy (or runs curl) and pins down the exact
status lines and headers.  These are facts about squid 5.7, tinyproxy 1.11.1
and pproxy 2.7.9 as shipped; docs/testing.md summarises them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from conftest import require_binary, skip_or_fail
from peers import run_pproxy, run_squid, run_tinyproxy
from tunnelws_testnet.peers import (
    BASIC_REALM,
    DIGEST_REALM,
    STOCK_SAFE_PORTS,
    PeerStartError,
    ProxyProcess,
    _run,
    squid_config,
)

USER, PASSWORD = "alice", "s3cret-Pw"
IO_TIMEOUT = 5.0


# --------------------------------------------------------------------------
# origins


@contextlib.contextmanager
def echo_origin(listener: socket.socket) -> Iterator[int]:
    """Serve TCP echo on a bound listener from threads; yields its port."""
    listener.settimeout(0.1)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(IO_TIMEOUT)
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    conn.sendall(data)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=echo, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        acceptor.join(timeout=2)
        listener.close()
        for worker in workers:
            worker.join(timeout=IO_TIMEOUT)


@pytest.fixture
def echo_port() -> Iterator[int]:
    with echo_origin(socket.create_server(("127.0.0.1", 0))) as port:
        yield port


@pytest.fixture
def echo_port_443() -> Iterator[int]:
    """An echo origin on 127.0.0.1:443 (squid's default CONNECT policy)."""
    try:
        listener = socket.create_server(("127.0.0.1", 443))
    except OSError as exc:  # not root, or 443 busy
        skip_or_fail(f"cannot listen on 127.0.0.1:443: {exc}")
    with echo_origin(listener) as port:
        yield port


@pytest.fixture
def http_origin() -> Iterator[int]:
    """An HTTP origin answering every GET with the request headers it received (JSON)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=IO_TIMEOUT)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# raw HTTP over a socket


@dataclass
class Reply:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes
    after: bytes  # bytes read past the head that are not body (tunnel data)

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def recv_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_reply(sock: socket.socket, *, body_until_close: bool = False) -> Reply:
    """Read one response head, then the body (Content-Length, or until close)."""
    sock.settimeout(IO_TIMEOUT)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {buffer!r}")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(h.split(": ", 1)) for h in header_lines]
    reply = Reply(status_line, [(k, v) for k, v in headers], b"", rest)
    length = reply.header("Content-Length")
    if length is not None:
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        reply.body, reply.after = rest[: int(length)], rest[int(length) :]
    elif body_until_close:
        reply.body, reply.after = rest + recv_until_closed(sock), b""
    return reply


def connect_request(authority: str, *headers: str) -> bytes:
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def open_to(proxy: ProxyProcess) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=IO_TIMEOUT)
    sock.settimeout(IO_TIMEOUT)
    return sock


def ask(proxy: ProxyProcess, request: bytes, **kwargs: bool) -> tuple[Reply, socket.socket]:
    sock = open_to(proxy)
    sock.sendall(request)
    return read_reply(sock, **kwargs), sock


def closed_by_peer(sock: socket.socket, wait: float = 1.0) -> bool:
    """True when the peer closes within ``wait`` seconds without sending more."""
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    assert data == b"", f"unexpected bytes after the reply: {data[:200]!r}"
    return True


def assert_tunnel_echoes(sock: socket.socket, reply: Reply) -> None:
    payload = b"\x00binary\xffpayload" * 100
    sock.sendall(payload)
    received = reply.after
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "tunnel closed before the echo came back"
        received += chunk
    assert received == payload


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("curl")
    return subprocess.run(
        [binary, "-sS", "-m", "10", *args], capture_output=True, text=True, timeout=20
    )


# --------------------------------------------------------------------------
# pproxy


def test_pproxy_connect_reply_and_relay(tmp_path: Path, echo_port: int) -> None:
    with run_pproxy(tmp_path=tmp_path) as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}" and proxy.name == "pproxy"
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"))
        with sock:
            assert reply.status_line == "HTTP/1.1 200 Connection established"
            assert reply.headers == [("Connection", "close")]
            assert_tunnel_echoes(sock, reply)
        proxy.wait_for_access_log(f"-> 127.0.0.1:{echo_port}")
        # The kind's parser reads that log line as the tunnel it was.
        assert [(r.method, r.target) for r in proxy.requests()] == [
            ("CONNECT", f"127.0.0.1:{echo_port}")
        ]


def test_pproxy_unreachable_target_closes_without_reply(tmp_path: Path) -> None:
    with run_pproxy(tmp_path=tmp_path) as proxy, open_to(proxy) as sock:
        sock.sendall(connect_request(f"127.0.0.1:{closed_port()}"))
        # No 502/504: pproxy just closes the connection.
        assert recv_until_closed(sock) == b""


def test_pproxy_basic_auth_rechecked_per_connection(tmp_path: Path, echo_port: int) -> None:
    target = f"127.0.0.1:{echo_port}"
    with run_pproxy(auth=(USER, PASSWORD), tmp_path=tmp_path) as proxy:
        reply, sock = ask(proxy, connect_request(target))
        with sock:
            assert reply.status_line == "HTTP/1.1 407 Proxy Authentication Required"
            assert reply.headers == [
                ("Connection", "close"),
                ("Proxy-Authenticate", 'Basic realm="simple"'),
            ]
            assert closed_by_peer(sock)

        reply, sock = ask(
            proxy, connect_request(target, f"Proxy-Authorization: {basic(USER, PASSWORD)}")
        )
        with sock:
            assert reply.status == 200
            assert_tunnel_echoes(sock, reply)

        refusals = {
            # --auth 0: a good login does not whitelist the client IP.
            "none again": connect_request(target),
            "wrong password": connect_request(
                target, f"Proxy-Authorization: {basic(USER, 'wrong')}"
            ),
            # pproxy matches the header name case-sensitively.
            "lower-case header name": connect_request(
                target, f"proxy-authorization: {basic(USER, PASSWORD)}"
            ),
        }
        for label, request in refusals.items():
            reply, sock = ask(proxy, request)
            with sock:
                assert reply.status == 407, label
        assert PASSWORD not in proxy.access_log()


def test_pproxy_with_curl(tmp_path: Path, http_origin: int) -> None:
    with run_pproxy(auth=(USER, PASSWORD), tmp_path=tmp_path) as proxy:
        result = curl(
            "-p", "-x", proxy.url, "-U", f"{USER}:{PASSWORD}", f"http://127.0.0.1:{http_origin}/"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["host"] == f"127.0.0.1:{http_origin}"


# --------------------------------------------------------------------------
# squid


def test_squid_default_policy_refuses_non_443(tmp_path: Path, echo_port: int) -> None:
    with run_squid(tmp_path=tmp_path) as proxy:
        assert proxy.name == "squid"
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"))
        with sock:
            assert reply.status_line == "HTTP/1.1 403 Forbidden"
            assert reply.header("X-Squid-Error") == "ERR_ACCESS_DENIED 0"
            assert reply.header("Content-Type") == "text/html;charset=utf-8"
            assert int(reply.header("Content-Length") or -1) == len(reply.body) > 0
            assert b"<html" in reply.body
            assert reply.header("Connection") == "keep-alive"
            # It really is kept alive: a second request on the same connection works.
            sock.sendall(connect_request(f"127.0.0.1:{echo_port}"))
            assert read_reply(sock).status == 403
        log = proxy.wait_for_access_log("TCP_DENIED/403")
        assert f"CONNECT 127.0.0.1:{echo_port}" in log
        assert {(r.method, r.target, r.status) for r in proxy.requests()} == {
            ("CONNECT", f"127.0.0.1:{echo_port}", 403)
        }


def test_squid_default_policy_allows_443(tmp_path: Path, echo_port_443: int) -> None:
    with run_squid(tmp_path=tmp_path) as proxy:
        reply, sock = ask(proxy, connect_request("127.0.0.1:443"))
        with sock:
            assert reply.status_line == "HTTP/1.1 200 Connection established"
            assert reply.headers == []
            assert_tunnel_echoes(sock, reply)
        # The tunnel is logged once it has closed.
        log = proxy.wait_for_access_log("TCP_TUNNEL/200")
        assert "CONNECT 127.0.0.1:443" in log


def test_squid_unreachable_target_is_503(tmp_path: Path) -> None:
    port = closed_port()
    with run_squid(tmp_path=tmp_path, allow_ports=None) as proxy:
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{port}"))
        with sock:
            assert reply.status_line == "HTTP/1.1 503 Service Unavailable"
            assert reply.header("X-Squid-Error") == "ERR_CONNECT_FAIL 111"
            assert int(reply.header("Content-Length") or -1) == len(reply.body)


def test_squid_allow_ports_none_allows_any_port(tmp_path: Path, echo_port: int) -> None:
    with run_squid(tmp_path=tmp_path, allow_ports=None) as proxy:
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"))
        with sock:
            assert reply.status == 200
            assert_tunnel_echoes(sock, reply)


def test_squid_basic_auth_retry_on_same_connection(tmp_path: Path, echo_port: int) -> None:
    target = f"127.0.0.1:{echo_port}"
    with run_squid(tmp_path=tmp_path, allow_ports=None, basic_auth=(USER, PASSWORD)) as proxy:
        reply, sock = ask(proxy, connect_request(target))
        with sock:
            assert reply.status_line == "HTTP/1.1 407 Proxy Authentication Required"
            assert reply.all("Proxy-Authenticate") == [f'Basic realm="{BASIC_REALM}"']
            assert reply.header("X-Squid-Error") == "ERR_CACHE_ACCESS_DENIED 0"
            assert int(reply.header("Content-Length") or -1) == len(reply.body) > 0
            assert reply.header("Connection") == "keep-alive"
            sock.sendall(connect_request(target, f"Proxy-Authorization: {basic(USER, 'nope')}"))
            assert read_reply(sock).status == 407
            # The 407 kept the connection: the retry with credentials tunnels on it.
            sock.sendall(connect_request(target, f"Proxy-Authorization: {basic(USER, PASSWORD)}"))
            reply = read_reply(sock)
            assert reply.status_line == "HTTP/1.1 200 Connection established"
            assert_tunnel_echoes(sock, reply)
        log = proxy.wait_for_access_log("TCP_TUNNEL/200")
        assert re.search(rf"TCP_TUNNEL/200 \d+ CONNECT {re.escape(target)} {USER} ", log), log
        assert PASSWORD not in log


def _digest_params(challenge: str) -> dict[str, str]:
    scheme, _, params = challenge.partition(" ")
    assert scheme == "Digest"
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', params)}


def test_squid_digest_challenge_and_handshake(
    tmp_path: Path, echo_port: int, http_origin: int
) -> None:
    target = f"127.0.0.1:{echo_port}"
    with run_squid(tmp_path=tmp_path, allow_ports=None, digest_auth=(USER, PASSWORD)) as proxy:
        reply, sock = ask(proxy, connect_request(target))
        with sock:
            assert reply.status == 407
            assert reply.header("Connection") == "keep-alive"
            [challenge] = reply.all("Proxy-Authenticate")
            params = _digest_params(challenge)
            # No algorithm parameter (MD5 implied), qop auth only, 32-hex nonce.
            assert set(params) == {"realm", "nonce", "qop", "stale"}
            assert params["realm"] == DIGEST_REALM
            assert params["qop"] == "auth" and params["stale"] == "false"
            assert re.fullmatch(r"[0-9a-f]{32}", params["nonce"])

            # Answer the challenge by hand (RFC 7616, MD5, qop=auth) on the same connection.
            def md5(text: str) -> str:
                return hashlib.md5(text.encode()).hexdigest()

            cnonce, nc = "0a4f113b", "00000001"
            ha1 = md5(f"{USER}:{params['realm']}:{PASSWORD}")
            ha2 = md5(f"CONNECT:{target}")
            response = md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
            authorization = (
                f'Digest username="{USER}", realm="{params["realm"]}", '
                f'nonce="{params["nonce"]}", uri="{target}", qop=auth, nc={nc}, '
                f'cnonce="{cnonce}", response="{response}"'
            )
            sock.sendall(connect_request(target, f"Proxy-Authorization: {authorization}"))
            reply = read_reply(sock)
            assert reply.status_line == "HTTP/1.1 200 Connection established"
            assert_tunnel_echoes(sock, reply)

        result = curl(
            "-p",
            "-x",
            proxy.url,
            "--proxy-digest",
            "-U",
            f"{USER}:{PASSWORD}",
            f"http://127.0.0.1:{http_origin}/",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["host"] == f"127.0.0.1:{http_origin}"


def test_squid_offers_basic_then_digest(tmp_path: Path, echo_port: int) -> None:
    with run_squid(
        tmp_path=tmp_path,
        allow_ports=None,
        basic_auth=(USER, PASSWORD),
        digest_auth=(USER, PASSWORD),
    ) as proxy:
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"))
        with sock:
            challenges = reply.all("Proxy-Authenticate")
            # One header per scheme, in auth_param order.
            assert [c.split()[0] for c in challenges] == ["Basic", "Digest"]


def test_squid_forwarded_get_strips_upgrade(tmp_path: Path, http_origin: int) -> None:
    with run_squid(tmp_path=tmp_path) as proxy:
        request = (
            f"GET http://127.0.0.1:{http_origin}/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{http_origin}\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ).encode()
        reply, sock = ask(proxy, request)
        with sock:
            assert reply.status == 200
            seen = json.loads(reply.body)
        # A ws:// handshake cannot pass a squid forward proxy: hop-by-hop Upgrade is gone.
        assert "upgrade" not in seen
        assert "upgrade" not in seen.get("connection", "").lower()
        assert seen["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
        assert "squid" in seen["via"]


def test_squid_config_is_one_builder_with_options(tmp_path: Path) -> None:
    """The harness's squid and the tests' differ only by these options."""
    stock = squid_config(host="127.0.0.1", port=3128, run_dir=tmp_path).splitlines()
    for line in ("pid_filename none", "shutdown_lifetime 1 seconds", "pinger_enable off"):
        assert line in stock
    assert "acl SSL_ports port 443" in stock and "http_access deny CONNECT !SSL_ports" in stock
    assert "http_access allow localhost" in stock and stock[-1] == "http_access deny all"
    assert not any("Safe_ports" in line or "auth_param" in line for line in stock)
    harness = squid_config(
        host="10.77.1.1",
        port=3128,
        run_dir=tmp_path,
        clients="10.77.1.0/24",
        safe_ports=STOCK_SAFE_PORTS,
        basic_file=tmp_path / "basic.htpasswd",
    ).splitlines()
    assert harness[0] == "http_port 10.77.1.1:3128"
    assert "acl Safe_ports port 80 21 443 70 210 1025-65535 280 488 591 777" in harness
    # squid reads http_access in order: policy, then authentication, then clients.
    order = [
        "http_access deny !Safe_ports",
        "http_access deny CONNECT !SSL_ports",
        "http_access deny !authenticated",
        "http_access allow tunnelws_clients",
        "http_access deny all",
    ]
    assert [line for line in harness if line.startswith("http_access")] == order
    anywhere = squid_config(host="::1", port=8, run_dir=tmp_path, allow_ports=None)
    assert "http_port [::1]:8" in anywhere and "SSL_ports" not in anywhere
    nowhere = squid_config(host="127.0.0.1", port=8, run_dir=tmp_path, allow_ports=())
    assert "http_access deny CONNECT\n" in nowhere


def test_squid_safe_ports_refuse_other_ports(
    tmp_path: Path, echo_port: int, http_origin: int
) -> None:
    with run_squid(tmp_path=tmp_path, allow_ports=None, safe_ports=("443",)) as proxy:
        for request in (
            connect_request(f"127.0.0.1:{echo_port}"),
            f"GET http://127.0.0.1:{http_origin}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        ):
            reply, sock = ask(proxy, request)
            sock.close()
            assert reply.status == 403
            assert reply.header("X-Squid-Error") == "ERR_ACCESS_DENIED 0"


def test_squid_instances_run_side_by_side(tmp_path: Path, echo_port: int) -> None:
    with (
        run_squid(tmp_path=tmp_path / "a", allow_ports=None) as first,
        run_squid(tmp_path=tmp_path / "b", allow_ports=()) as second,
    ):
        assert first.port != second.port and first.pid != second.pid
        for proxy, status in ((first, 200), (second, 403)):
            reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"))
            sock.close()
            assert reply.status == status


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_squid_cleanup_after_error_kills_helpers(tmp_path: Path, echo_port: int) -> None:
    if not Path("/proc").is_dir():
        skip_or_fail("needs /proc")
    seen: dict[str, object] = {}
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        run_squid(tmp_path=tmp_path, allow_ports=None, basic_auth=(USER, PASSWORD)) as proxy,
    ):
        reply, sock = ask(
            proxy,
            connect_request(
                f"127.0.0.1:{echo_port}", f"Proxy-Authorization: {basic(USER, PASSWORD)}"
            ),
        )
        sock.close()
        assert reply.status == 200
        seen.update(pid=proxy.pid, helpers=_children(proxy.pid), proxy=proxy)
        raise RuntimeError("test body failed")
    helpers = seen["helpers"]
    assert isinstance(helpers, list) and helpers, "squid started no auth helper"
    assert all(_gone(pid) for pid in [seen["pid"], *helpers])
    shm = Path("/dev/shm")
    stopped = seen["proxy"]
    assert isinstance(stopped, ProxyProcess)
    # Logs survive in tmp_path after the private run directory is gone.
    assert stopped.log_path is not None and stopped.log_path.is_relative_to(tmp_path)
    assert "TCP_TUNNEL/200" in stopped.access_log()
    if shm.is_dir():
        # squid's shared-memory segments are named after its -n instance name.
        assert not list(shm.glob(f"twsquid{os.getpid()}n*"))


# --------------------------------------------------------------------------
# tinyproxy


def test_tinyproxy_connect_reply_and_relay(tmp_path: Path, echo_port: int) -> None:
    with run_tinyproxy(tmp_path=tmp_path) as proxy:
        assert proxy.name == "tinyproxy"
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"))
        with sock:
            assert reply.status_line == "HTTP/1.0 200 Connection established"
            [(name, agent)] = reply.headers
            assert name == "Proxy-agent" and agent.startswith("tinyproxy/")
            assert_tunnel_echoes(sock, reply)
        proxy.wait_for_access_log(f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1")
        assert [(r.method, r.target) for r in proxy.requests()] == [
            ("CONNECT", f"127.0.0.1:{echo_port}")
        ]


def test_tinyproxy_connect_port_allow_list(tmp_path: Path, echo_port: int) -> None:
    with run_tinyproxy(tmp_path=tmp_path, allow_ports=(443,)) as proxy:
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"), body_until_close=True)
        with sock:
            # HTTP/1.1 here (unlike its 200 and 407), no Content-Length: body ends at close.
            assert reply.status_line == "HTTP/1.1 403 Access violation"
            assert reply.header("Content-Length") is None
            assert reply.header("Connection") == "close"
            assert b"CONNECT method not allowed" in reply.body
        proxy.wait_for_access_log(f"Refused CONNECT method on port {echo_port}")


def test_tinyproxy_empty_allow_list_refuses_all(tmp_path: Path, echo_port: int) -> None:
    with run_tinyproxy(tmp_path=tmp_path, allow_ports=()) as proxy:
        reply, sock = ask(proxy, connect_request(f"127.0.0.1:{echo_port}"), body_until_close=True)
        sock.close()
        assert reply.status == 403


def test_tinyproxy_basic_auth(tmp_path: Path, echo_port: int) -> None:
    target = f"127.0.0.1:{echo_port}"
    with run_tinyproxy(tmp_path=tmp_path, basic_auth=(USER, PASSWORD)) as proxy:
        reply, sock = ask(proxy, connect_request(target), body_until_close=True)
        with sock:
            assert reply.status_line == "HTTP/1.0 407 Proxy Authentication Required"
            assert reply.all("Proxy-Authenticate") == ['Basic realm="Tinyproxy"']
            assert reply.header("Connection") == "close"
            assert reply.header("Content-Length") is None
        reply, sock = ask(
            proxy, connect_request(target, f"Proxy-Authorization: {basic(USER, PASSWORD)}")
        )
        with sock:
            assert reply.status == 200
            assert_tunnel_echoes(sock, reply)
        assert PASSWORD not in proxy.access_log()


# --------------------------------------------------------------------------
# launcher mechanics shared by all three


@pytest.mark.parametrize("launcher", [run_pproxy, run_tinyproxy])
def test_stopped_by_pid_even_when_body_raises(
    tmp_path: Path, launcher: Callable[..., AbstractContextManager[ProxyProcess]]
) -> None:
    pids = []
    with pytest.raises(KeyError), launcher(tmp_path=tmp_path) as proxy:
        pids.append(proxy.pid)
        raise KeyError("boom")
    assert _gone(pids[0])
    with pytest.raises(OSError), socket.create_connection((proxy.host, proxy.port), timeout=1):
        pass


def test_credentials_with_config_syntax_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info, run_pproxy(auth=("user", "pa#ss"), tmp_path=tmp_path):
        pass
    assert "pa#ss" not in str(info.value)
    with pytest.raises(ValueError), run_tinyproxy(tmp_path=tmp_path, basic_auth=("u", "a b")):
        pass
    with pytest.raises(ValueError), run_squid(tmp_path=tmp_path, basic_auth=("a:b", "x")):
        pass


def test_start_retries_once_on_a_taken_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = int(squatter.getsockname()[1])
        ports = iter([taken, _run.free_port()])
        monkeypatch.setattr(_run, "free_port", lambda host: next(ports))
        with run_pproxy(tmp_path=tmp_path) as proxy:
            assert proxy.port != taken

        monkeypatch.setattr(_run, "free_port", lambda host: taken)
        with (
            pytest.raises(PeerStartError, match="before serving"),
            run_pproxy(tmp_path=tmp_path / "again"),
        ):
            pass


async def test_usable_from_trio(tmp_path: Path) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        with run_tinyproxy(tmp_path=tmp_path) as proxy, trio.fail_after(IO_TIMEOUT):
            stream = await trio.open_tcp_stream(proxy.host, proxy.port)
            await stream.send_all(connect_request(f"127.0.0.1:{port}"))
            received = b""
            while not received.endswith(b"\r\n\r\n"):
                received += await stream.receive_some(1)
            assert received.startswith(b"HTTP/1.0 200 ")
            await stream.send_all(b"trio")
            assert await stream.receive_some(4) == b"trio"
            await stream.aclose()
            await proxy.wait_for_access_log_async(f"CONNECT 127.0.0.1:{port}")
        nursery.cancel_scope.cancel()
