"""The gateway's configuration and where a running gateway listens."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tunnelws import Target, parse_target
from tunnelws_testnet.fallback import FallbackConfig

__all__ = ["GatewayConfig", "RunningGateway"]


@dataclass(frozen=True)
class GatewayConfig:
    """How :func:`~tunnelws_testnet.gateway.serve_gateway` fronts a backend.

    ``backend`` is a ``ws://HOST:PORT[/path]`` URL. Its path is a prefix:
    a client's ``/chat?x=1`` goes to ``/path/chat?x=1`` (``/`` to ``/path``
    itself); without a path, the client's path is kept.
    """

    backend: str
    host: str = "127.0.0.1"
    port: int = 0
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    #: Seconds to connect to the backend and finish its handshake.
    connect_timeout: float = 10.0
    #: Seconds the backend has to answer a WebSocket close.
    close_timeout: float = 5.0
    #: Per connection, as the origin server: request head limits and timeouts.
    max_header_size: int = 16 * 1024
    request_timeout: float = 10.0
    send_timeout: float = 30.0

    def __post_init__(self) -> None:
        target = self.backend_target
        if target.scheme != "ws":
            raise ValueError(f"the backend must be a ws:// URL, not {self.backend!r}")
        if urlsplit(self.backend).query:
            raise ValueError("the backend URL takes no query (clients bring theirs)")

    @property
    def backend_target(self) -> Target:
        return parse_target(self.backend)

    def backend_resource(self, resource: str) -> str:
        """The backend's path (and the client's query) for a client ``resource``."""
        prefix = self.backend_target.resource.rstrip("/")
        path, mark, query = resource.partition("?")
        mapped = (prefix + path if path != "/" else prefix) if prefix else path
        return (mapped or "/") + mark + query

    def backend_url(self, resource: str) -> str:
        target = self.backend_target
        return f"ws://{target.host_header}{self.backend_resource(resource)}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class RunningGateway:
    """What ``await nursery.start(serve_gateway, config)`` returns."""

    host: str
    port: int
    backend: str

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def ws_url(self, path: str = "/") -> str:
        return f"ws://{_url_host(self.host)}:{self.port}{path}"

    def http_url(self, path: str = "/") -> str:
        return f"http://{_url_host(self.host)}:{self.port}{path}"
