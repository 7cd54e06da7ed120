"""Several gateways behind real load balancers (nginx, HAProxy) with the
configurations docs/gateway.md gives: sticky routing on the session id in
the path, so every fallback session works wherever its open landed."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import trio

import tunnelws
from conftest import require_binary
from fallback_support import Client, messages_of, text
from test_gateway import _free_port, websockets_backend
from tunnelws_testnet.fallback import FallbackConfig
from tunnelws_testnet.gateway import GatewayConfig, RunningGateway, serve_gateway

SESSIONS = 12

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # A session's requests go to the gateway its id names (ROUTE-...);
    # open and native WebSockets to any.
    map $uri $tunnelws_route {{
        ~/_tunnelws/1/(?<route>[A-Za-z0-9]+)-[^/]*/(down|up)$  $route;
        default                                              "";
    }}
    map $tunnelws_route $tunnelws_upstream {{
        {routes}
        default tunnelws_gateways;
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream tunnelws_gateways {{
        {servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://$tunnelws_upstream;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""

HAPROXY_CONF = """
global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend www
    bind 127.0.0.1:{port}
    default_backend tunnelws_gateways
backend tunnelws_gateways
    balance roundrobin
    {routes}
    {servers}
"""


@asynccontextmanager
async def two_gateways() -> AsyncIterator[list[RunningGateway]]:
    async with websockets_backend() as port, trio.open_nursery() as nursery:
        yield [
            await nursery.start(serve_gateway, GatewayConfig(
                backend=f"ws://127.0.0.1:{port}", fallback=FallbackConfig(route=f"gw{i}")))
            for i in range(2)
        ]
        nursery.cancel_scope.cancel()


@contextmanager
def running(command: list[str], port: int) -> Iterator[None]:
    import socket
    import time

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read() if process.stderr else b""
                    raise AssertionError(f"{command[0]} did not start: {stderr!r}") from None
                time.sleep(0.05)
        yield
    finally:
        process.kill()
        process.wait(timeout=5)


async def _sessions_work_through(address: tuple[str, int]) -> None:
    routes = set()
    for i in range(SESSIONS):
        client = Client(address, "/echo")
        assert (await client.open()).status == 201
        routes.add(client.session.split("-")[0])
        assert (await client.up([text(1, f"session {i}")])).json() == {"ack": 1}
        got = messages_of(await client.poll_events())
        assert [m.data for m in got] == [f"session {i}"]
    assert routes == {"gw0", "gw1"}, "opens were spread over both gateways"
    async with tunnelws.open_websocket(f"ws://{address[0]}:{address[1]}/echo", proxy=None) as ws:
        await ws.send("native through the balancer")
        assert await ws.receive() == "native through the balancer"


async def test_gateways_behind_nginx(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    async with two_gateways() as gateways:
        port = _free_port()
        servers = "\n".join(f"server 127.0.0.1:{g.port};" for g in gateways)
        routes = "\n".join(f"gw{i} 127.0.0.1:{g.port};" for i, g in enumerate(gateways))
        conf = tmp_path / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port, servers=servers, routes=routes))
        with running([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"], port):
            await _sessions_work_through(("127.0.0.1", port))


async def test_gateways_behind_haproxy(tmp_path: Path) -> None:
    haproxy = require_binary("haproxy")
    async with two_gateways() as gateways:
        port = _free_port()
        servers = "\n    ".join(f"server gw{i} 127.0.0.1:{g.port}" for i, g in enumerate(gateways))
        routes = "\n    ".join(
            f"use-server gw{i} if {{ path_reg /_tunnelws/1/gw{i}-[^/]*/(down|up)$ }}"
            for i in range(len(gateways))
        )
        conf = tmp_path / "haproxy.cfg"
        conf.write_text(HAPROXY_CONF.format(port=port, servers=servers, routes=routes))
        with running([haproxy, "-db", "-f", str(conf)], port):
            await _sessions_work_through(("127.0.0.1", port))
