"""How a connection reaches its target: the one route-options object.

Every entry point that opens a connection (:func:`~tunnelws.open_tunnel`,
:func:`~tunnelws.open_websocket`, :func:`~tunnelws.open_event_stream`,
:func:`~tunnelws.run_check`, the CLI) takes a :class:`RouteOptions` as
``route=`` and/or the same fields as keywords, and turns them into one object
with :func:`route_options`. A new route option is a new field here (and its
keyword in :class:`RouteKeywords`, which a test keeps in step), nothing else.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypedDict

from ._auth import Credentials
from ._errors import ProxyConfigError
from ._proxy_url import ProxyURL, redact_proxy_value
from ._route import AUTO, ProxySetting
from ._trace import Trace

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["HeaderList", "ProxyAuth", "RouteKeywords", "RouteOptions", "route_options"]

ProxyAuth = tuple[str, str] | Credentials | None
HeaderList = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class RouteOptions:
    """Everything that decides how a connection reaches its target.

    ``proxy``: :data:`~tunnelws.AUTO` (environment, PAC), None (direct) or a
    proxy URL. ``proxy_auth``: ``(user, password)`` or :class:`Credentials`,
    winning over credentials in the proxy URL. ``proxy_headers``: extra CONNECT
    headers. ``ssl_context``/``proxy_ssl_context``: trust for the origin and an
    ``https://`` proxy (default: the OS store). ``connect_timeout``: one budget
    for every phase of opening. ``trace``: a callable receiving curl-style
    lines (credentials redacted). ``env``: the environment for the route
    (default :data:`os.environ`). ``proxy_auth_schemes``: restricts and orders
    the authentication schemes (None: the strongest the proxy offers).
    """

    proxy: ProxySetting = AUTO
    proxy_auth: ProxyAuth = None
    proxy_headers: tuple[tuple[str, str], ...] = ()
    ssl_context: ssl.SSLContext | None = None
    proxy_ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    trace: Trace | None = field(default=None, compare=False)
    env: Mapping[str, str] | None = None
    proxy_auth_schemes: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        # A plain (user, password) tuple or a URL with credentials must never
        # show: every value goes through _shown().
        changed = [f.name for f in fields(self) if getattr(self, f.name) != f.default]
        return f"RouteOptions({', '.join(f'{name}={_shown(self, name)}' for name in changed)})"

    def credentials_for(self, proxy: ProxyURL) -> Credentials | None:
        """``proxy_auth`` wins over credentials embedded in the proxy URL."""
        if isinstance(self.proxy_auth, Credentials):
            return self.proxy_auth
        try:
            if self.proxy_auth is not None:
                user, password = self.proxy_auth
                return Credentials(user, password)
            if proxy.username is not None:
                return Credentials(proxy.username, proxy.password or "")
        except ValueError as exc:  # e.g. a colon in the user name
            raise ProxyConfigError(f"invalid proxy credentials: {exc}") from None
        return None


def _shown(options: RouteOptions, name: str) -> str:
    value = getattr(options, name)
    if name == "proxy_auth":
        return "***"
    if isinstance(value, ProxyURL):
        return repr(value.redacted())
    if isinstance(value, str):
        return repr(redact_proxy_value(value))
    return repr(value)


class RouteKeywords(TypedDict, total=False):
    """The fields of :class:`RouteOptions`, as keywords of every entry point."""

    proxy: ProxySetting
    proxy_auth: ProxyAuth
    proxy_headers: HeaderList
    ssl_context: ssl.SSLContext | None
    proxy_ssl_context: ssl.SSLContext | None
    connect_timeout: float
    trace: Trace | None
    env: Mapping[str, str] | None
    proxy_auth_schemes: Sequence[str] | None


_FIELD_NAMES = frozenset(f.name for f in fields(RouteOptions))


def route_options(
    route: RouteOptions | None = None, /, **keywords: Unpack[RouteKeywords]
) -> RouteOptions:
    """``route`` (default: all defaults) with ``keywords`` applied on top.

    The one place keywords become :class:`RouteOptions`: sequences become
    tuples (a lone scheme string is one scheme, not its letters), and an
    unknown keyword is a :class:`TypeError` as for any function.
    """
    unknown = set(keywords) - _FIELD_NAMES
    if unknown:
        raise TypeError(f"unknown route option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = dict(keywords)
    if "proxy_headers" in values:
        values["proxy_headers"] = tuple(values["proxy_headers"] or ())
    if "proxy_auth_schemes" in values:
        values["proxy_auth_schemes"] = _scheme_names(values["proxy_auth_schemes"])
    base = route if route is not None else RouteOptions()
    return replace(base, **values) if values else base


def _scheme_names(schemes: Sequence[str] | None) -> tuple[str, ...] | None:
    # A lone string would otherwise be read as a sequence of one-letter names.
    if isinstance(schemes, str):
        return (schemes,)
    return None if schemes is None else tuple(schemes)
