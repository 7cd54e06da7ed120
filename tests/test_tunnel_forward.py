"""``tunnelws tunnel`` and ``tunnelws forward`` with real peers: ssh's
ProxyCommand to Debian's sshd through an authenticating proxy, 16 MiB both
ways byte-exact, half-close, TLS inside the tunnel, exit codes, failures
reported while the listener keeps going, 200 concurrent connections."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from companion_support import start_proxy, start_tcp_echo
from conftest import require_binary
from relay_support import dead_port, digest, echo_through, payload
from ssh_support import run_sshd
from tunnelws import RouteOptions
from tunnelws._forward import Forwarding, serve_forward

PASSWORD = "tunnel-pw-3141"
TUNNELWS = [sys.executable, "-m", "tunnelws"]


def password_env() -> dict[str, str]:
    return {**os.environ, "TUNNELWS_PROXY_PASSWORD": PASSWORD}


async def run_tunnel(
    *args: str, stdin: bytes = b"", limit: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(limit):
        return await trio.run_process(
            [*TUNNELWS, "tunnel", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=password_env(),
        )


async def test_ssh_proxycommand_through_an_authenticating_proxy(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ssh = require_binary("ssh")
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD), auth_scheme="digest")
    with run_sshd(tmp_path) as sshd:
        command = " ".join(
            [*TUNNELWS, "tunnel", "%h:%p", "--proxy", upstream.url, "--proxy-user", "alice"]
        )
        data = payload(4 << 20)
        with trio.fail_after(60):
            result = await trio.run_process(
                [
                    ssh,
                    "-F",
                    "/dev/null",
                    "-i",
                    str(sshd.client_key),
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=accept-new",
                    "-o",
                    f"UserKnownHostsFile={sshd.known_hosts}",
                    "-o",
                    f"ProxyCommand={command}",
                    "-p",
                    str(sshd.port),
                    f"{sshd.user}@{sshd.host}",
                    "echo connected-through-tunnelws; sha256sum",
                ],
                stdin=data,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=password_env(),
            )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "connected-through-tunnelws"
    assert lines[1].split()[0] == digest(data)
    assert upstream.stats.tunnels_total == 1
    assert upstream.stats.targets[f"127.0.0.1:{sshd.port}"] == 1
    assert upstream.stats.auth_challenges >= 1  # the proxy did authenticate us
    assert PASSWORD.encode() not in result.stderr


async def test_tunnel_carries_16_mib_both_ways_byte_exact(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD))
    data = payload(16 << 20)
    result = await run_tunnel(
        f"127.0.0.1:{echo_port}", "--proxy", upstream.url, "--proxy-user", "alice", stdin=data
    )
    assert result.returncode == 0, result.stderr
    # The echo only closes after our half-close reached it: stdin EOF went through.
    assert len(result.stdout) == len(data) and digest(result.stdout) == digest(data)
    assert upstream.stats.bytes_up == len(data) == upstream.stats.bytes_down


async def test_half_close_and_exit_when_the_far_side_closes(nursery: trio.Nursery) -> None:
    async def count_then_reply(stream: trio.SocketStream) -> None:
        total = 0
        while data := await stream.receive_some(65536):
            total += len(data)
        await stream.send_all(f"got {total} bytes\n".encode())
        await stream.aclose()

    async def greet_and_hang_up(stream: trio.SocketStream) -> None:
        await stream.send_all(b"bye\n")
        await stream.aclose()

    counter = (await nursery.start(partial(trio.serve_tcp, count_then_reply, 0, host="127.0.0.1")))[
        0
    ]
    greeter = (
        await nursery.start(partial(trio.serve_tcp, greet_and_hang_up, 0, host="127.0.0.1"))
    )[0]
    result = await run_tunnel(
        f"127.0.0.1:{counter.socket.getsockname()[1]}", "--no-proxy", stdin=b"z" * 100_000
    )
    assert (result.returncode, result.stdout) == (0, b"got 100000 bytes\n"), result.stderr

    # Standard input stays open: the far side's close alone ends the command.
    process = await trio.lowlevel.open_process(
        [*TUNNELWS, "tunnel", f"127.0.0.1:{greeter.socket.getsockname()[1]}", "--no-proxy"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    received = b""
    with trio.fail_after(15):
        while chunk := await process.stdout.receive_some():
            received += chunk
        assert await process.wait() == 0
    await process.stdin.aclose()
    assert received == b"bye\n"


async def test_tls_inside_the_tunnel_is_verified_with_sni(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _context: names.append(name)  # type: ignore[assignment,misc]

    async def shout(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            line = await stream.receive_some(1024)
            await stream.send_all(b"TLS:" + line)
            await stream.aclose()
        except trio.BrokenResourceError:
            pass

    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, shout, 0, context, host="127.0.0.1")
    )
    port = listeners[0].transport_listener.socket.getsockname()[1]
    upstream = await start_proxy(nursery)
    result = await run_tunnel(
        "--tls",
        f"localhost:{port}",
        "--proxy",
        upstream.url,
        "--cacert",
        str(ca_file),
        stdin=b"hello\n",
    )
    assert (result.returncode, result.stdout) == (0, b"TLS:hello\n"), result.stderr
    assert names == ["localhost"]
    assert upstream.stats.targets[f"localhost:{port}"] == 1  # TLS ran inside the tunnel
    unverified = await run_tunnel("--tls", f"localhost:{port}", "--no-proxy", stdin=b"x\n")
    assert unverified.returncode == 9 and b"tls:" in unverified.stderr


async def test_tunnel_exit_codes(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD))
    cases = [
        ((f"127.0.0.1:{dead_port()}", "--no-proxy"), 4, b"connect:"),
        (
            (f"127.0.0.1:{echo_port}", "--proxy", f"http://127.0.0.1:{dead_port()}"),
            5,
            b"proxy-connect:",
        ),
        (
            (f"127.0.0.1:{echo_port}", "--proxy", upstream.url, "--proxy-user", "alice:nope"),
            6,
            b"proxy-auth:",
        ),
        (("127.0.0.1:0x50", "--no-proxy"), 2, b"invalid port"),
    ]
    for args, code, message in cases:
        result = await run_tunnel(*args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr and b"nope" not in result.stderr


async def start_forward(
    nursery: trio.Nursery, destination: tuple[str, int], route: RouteOptions, **kwargs: object
) -> Forwarding:
    forwarding: Forwarding = await nursery.start(
        partial(serve_forward, ("127.0.0.1", 0), destination, route, **kwargs)  # type: ignore[arg-type]
    )
    return forwarding


async def test_forward_16_mib_both_ways_and_200_concurrent(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    upstream = await start_proxy(nursery, auth=("alice", PASSWORD), auth_scheme="digest")
    route = RouteOptions(proxy=upstream.url, proxy_auth=("alice", PASSWORD))
    forwarding = await start_forward(nursery, ("127.0.0.1", echo_port), route)
    data = payload(16 << 20)
    stream = await trio.open_tcp_stream(*forwarding.address)
    echoed = await echo_through(stream, data)
    assert len(echoed) == len(data) and digest(echoed) == digest(data)

    failures: list[int] = []

    async def one(index: int) -> None:
        client = await trio.open_tcp_stream(*forwarding.address)
        message = payload(8192) + index.to_bytes(4, "big")
        if await echo_through(client, message) != message:
            failures.append(index)
        await client.aclose()

    with trio.fail_after(90):
        async with trio.open_nursery() as clients:
            for index in range(200):
                clients.start_soon(one, index)
    assert failures == [] and upstream.stats.tunnels_total == 201


async def test_forward_reports_a_failed_connection_and_keeps_listening(
    nursery: trio.Nursery,
) -> None:
    errors: list[tuple[str, BaseException]] = []
    port = dead_port()
    forwarding = await start_forward(
        nursery,
        ("127.0.0.1", port),
        RouteOptions(proxy=None),
        on_error=lambda what, exc: errors.append((what, exc)),
    )
    for _ in range(2):
        client = await trio.open_tcp_stream(*forwarding.address)
        with trio.fail_after(10):
            assert await client.receive_some() == b""  # closed: nothing to tunnel to
        await client.aclose()
    assert [type(exc).__name__ for _, exc in errors] == ["DirectConnectError"] * 2
    assert errors[1][0].startswith("connection 2 from 127.0.0.1:")
    assert f"127.0.0.1:{port}" in errors[1][0]


async def test_forward_command(nursery: trio.Nursery) -> None:
    echo_port = await start_tcp_echo(nursery)
    dead = dead_port()
    process = await trio.lowlevel.open_process(
        [
            *TUNNELWS,
            "forward",
            "0",
            f"127.0.0.1:{echo_port}",
            "127.0.0.1:0",
            f"127.0.0.1:{dead}",
            "--no-proxy",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        output = b""
        with trio.fail_after(15):
            while output.count(b"\n") < 2:
                output += await process.stdout.receive_some()
        first, second = (line.split()[2].decode() for line in output.splitlines())
        host, port = first.rsplit(":", 1)
        client = await trio.open_tcp_stream(host, int(port))
        assert await echo_through(client, b"through forward") == b"through forward"
        host, port = second.rsplit(":", 1)
        failing = await trio.open_tcp_stream(host, int(port))
        with trio.fail_after(10):
            assert await failing.receive_some() == b""
            errors = await process.stderr.receive_some()
        assert b"tunnelws: forward: connection 1 from 127.0.0.1:" in errors
        assert f"to 127.0.0.1:{dead}: connect: cannot connect".encode() in errors
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("listen", ["0", "127.0.0.1:0x"])
def test_forward_rejects_bad_pairs(listen: str) -> None:
    result = subprocess.run(
        [*TUNNELWS, "forward", listen], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 2 and b"tunnelws: error:" in result.stderr
