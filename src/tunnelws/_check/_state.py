"""What the walk carries from step to step: plain data, no I/O (the steps and
``_paths`` do that)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from .._proxy_url import ProxyURL
from .._route_options import RouteKeywords, RouteOptions, route_options
from .._target import Target
from .._trace import Trace
from ._channel import MessageChannel
from ._report import Diagnosis, StepStatus

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CheckOptions", "Outcome", "StepFailed", "Walk"]

#: What a step returns: ``(status, summary)`` or ``(status, summary, diagnosis)``;
#: None for a step that does not apply at all (``idle`` without ``--idle``).
Outcome = tuple[StepStatus, str] | tuple[StepStatus, str, Diagnosis | None] | None


@dataclass(frozen=True, init=False)
class CheckOptions:
    """How ``check`` reaches the origin: ``route`` (a
    :class:`~tunnelws.RouteOptions`, or its fields as keywords, exactly as for
    :func:`~tunnelws.open_websocket`), plus:

    ``idle``: also check that the tunnel survives this many idle seconds.
    ``message_timeout``: seconds each echo may take.
    ``compare_direct``: for ``wss://`` through a proxy, also fetch the
    origin's certificate directly (bounded to 2 s) to tell interception.
    ``connect_to``: reach the origin at this ``(host, port)`` instead of the
    URL's, keeping the URL's ``Host`` and SNI (like curl's ``--connect-to``;
    direct routes only).
    """

    route: RouteOptions
    message_timeout: float = 10.0
    idle: float | None = None
    compare_direct: bool = True
    connect_to: tuple[str, int] | None = None

    def __init__(
        self,
        route: RouteOptions | None = None,
        *,
        message_timeout: float = 10.0,
        idle: float | None = None,
        compare_direct: bool = True,
        connect_to: tuple[str, int] | None = None,
        **route_keywords: Unpack[RouteKeywords],
    ) -> None:
        object.__setattr__(self, "route", route_options(route, **route_keywords))
        object.__setattr__(self, "message_timeout", message_timeout)
        object.__setattr__(self, "idle", idle)
        object.__setattr__(self, "compare_direct", compare_direct)
        object.__setattr__(self, "connect_to", connect_to)


class StepFailed(Exception):
    """A step ends with this diagnosis (and these details)."""

    def __init__(self, summary: str, diagnosis: Diagnosis) -> None:
        super().__init__(summary)
        self.summary = summary
        self.diagnosis = diagnosis


@dataclass
class Walk:
    """The state of one check: the route chosen, the stream built so far,
    and the details the current step has noted."""

    target: Target
    options: CheckOptions
    proxy: ProxyURL | None = None
    stream: trio.abc.Stream | None = None
    channel: MessageChannel | None = None
    leftover: bytes = b""  # bytes read after the upgrade reply
    proxy_issuer: str | None = None
    details: list[str] = field(default_factory=list)
    #: How the native path broke, as the fallback rule reads it: the
    #: taxonomy category and the reply's status (101 when nothing followed it).
    blocked: tuple[str, int | None] | None = None
    #: The fallback step's finding when the fallback works ("streaming, ...").
    fallback_works: str | None = None

    @property
    def route(self) -> RouteOptions:
        """The user's route options."""
        return self.options.route

    @property
    def trace(self) -> Trace | None:
        return self.options.route.trace

    @property
    def timeout(self) -> float:
        """The connect timeout, which also bounds each probe."""
        return self.options.route.connect_timeout

    def chosen_route(self, *, quiet: bool = False) -> RouteOptions:
        """The route options with the proxy the route step chose (None:
        direct); ``quiet`` drops the trace (-v shows the main path only)."""
        chosen = replace(self.options.route, proxy=self.proxy)
        return replace(chosen, trace=None) if quiet else chosen

    def origin_address(self) -> tuple[str, int]:
        return self.options.connect_to or (self.target.host, self.target.port)
