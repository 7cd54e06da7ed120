"""Route selection: which proxy, if any, a URL goes through, and why.

Pure: reads an environment mapping, never the network. The rules (see
docs/proxy-selection.md) in the order they are applied:

1. An explicit ``proxy=`` (string or :class:`ProxyURL`) wins over everything,
   including ``no_proxy``; ``proxy=None`` means direct.
2. Otherwise the first set variable among ``wss_proxy``, ``https_proxy``,
   ``all_proxy`` (for ``wss://``/``https://``) or ``ws_proxy``,
   ``http_proxy``, ``all_proxy`` (for ``ws://``/``http://``), each lower case
   first, then upper case; empty values count as unset; upper-case
   ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set (httpoxy). An
   invalid value is a :class:`ProxyConfigError`, whatever the host.
3. Loopback hosts never use a proxy from the environment.
4. ``no_proxy`` (then ``NO_PROXY``) entries send matching hosts direct.
5. With no variable set, a PAC URL from the OS settings (Windows registry,
   macOS preferences) is used where pypac can read one.

A value starting with ``pac+`` (``pac+file:///...``, ``pac+http://...``,
``pac+wpad:``), explicit or in a variable, is a PAC setting: the decision then
carries :attr:`ProxyDecision.pac` and the transport asks the script (see
``_pac``) for the list of proxies to try.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from ._no_proxy import NoProxyRules
from ._pac import PAC_PREFIX, PacSource, os_pac_url
from ._proxy_url import ProxyURL
from ._target import Target, parse_target

__all__ = [
    "AUTO",
    "ProxyDecision",
    "ProxySetting",
    "is_loopback",
    "proxy_variable_names",
    "resolve_proxy",
]

EXPLICIT_SOURCE: Final = "proxy argument"
NO_PROXY_VARIABLES: Final = ("no_proxy", "NO_PROXY")

# Per target scheme, the proxy variables' base names in priority order.
_VARIABLES_BY_SCHEME: Final = {
    "wss": ("wss_proxy", "https_proxy", "all_proxy"),
    "https": ("wss_proxy", "https_proxy", "all_proxy"),
    "ws": ("ws_proxy", "http_proxy", "all_proxy"),
    "http": ("ws_proxy", "http_proxy", "all_proxy"),
}
_HTTPOXY_NOTE: Final = "HTTP_PROXY ignored because REQUEST_METHOD is set (CGI process: httpoxy)"


class _Auto:
    """Type of :data:`AUTO`: "pick the proxy from the environment"."""

    _instance: _Auto | None = None

    def __new__(cls) -> _Auto:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "AUTO"

    def __reduce__(self) -> str:
        return "AUTO"  # pickles as the module-level singleton


#: Default of every ``proxy=`` argument: choose from the environment.
AUTO: Final[_Auto] = _Auto()

#: The type of every ``proxy=`` argument in tunnelws.
ProxySetting: TypeAlias = str | ProxyURL | _Auto | None


@dataclass(frozen=True)
class ProxyDecision:
    """The outcome of :func:`resolve_proxy`.

    ``proxy`` is ``None`` for a direct connection. ``rule`` is one sentence
    saying why. ``source`` names what decided: ``"proxy argument"``, the
    variable actually used (``"HTTPS_PROXY"``; the ``no_proxy`` variable when
    an entry matched) or ``None`` for built-in rules and the default.
    ``considered`` lists the variables looked at, in order; ``notes`` holds
    anything else worth showing with ``-v`` (ignored variables or entries).
    ``pac`` is set (and ``proxy`` is None) when a PAC script decides.
    """

    proxy: ProxyURL | None
    rule: str
    source: str | None
    considered: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    pac: PacSource | None = None

    def __str__(self) -> str:
        if self.pac is not None:
            return str(self.pac)
        return "DIRECT" if self.proxy is None else self.proxy.redacted()


def _is_pac(value: str) -> bool:
    return value.strip().lower().startswith(PAC_PREFIX)


def proxy_variable_names(scheme: str) -> tuple[str, ...]:
    """Every proxy variable name for a target scheme, in lookup order."""
    return tuple(name for base in _VARIABLES_BY_SCHEME[scheme] for name in (base, base.upper()))


def is_loopback(host: str) -> bool:
    """``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``::1`` (also IPv4-mapped)."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _get(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or ``None`` when unset or blank."""
    value = env.get(name)
    return value if value is not None and value.strip() else None


def resolve_proxy(
    url: str, proxy: ProxySetting = AUTO, *, env: Mapping[str, str] | None = None
) -> ProxyDecision:
    """Decide whether ``url`` goes direct or through a proxy, and why.

    ``url`` is a ``ws``/``wss``/``http``/``https`` URL (a bad one raises
    :class:`ValueError`). ``proxy`` is an explicit proxy URL or
    :class:`ProxyURL`, ``None`` for direct, or :data:`AUTO` (the default) to
    consult ``env`` (default :data:`os.environ`). A bad proxy value, explicit
    or from the environment, raises :class:`~tunnelws.ProxyConfigError`
    naming its source.
    """
    target = parse_target(url)
    if proxy is None:
        return ProxyDecision(None, "proxy=None: direct", EXPLICIT_SOURCE)
    if isinstance(proxy, ProxyURL):
        return ProxyDecision(proxy, "explicit proxy argument", EXPLICIT_SOURCE)
    if isinstance(proxy, str) and _is_pac(proxy):
        pac = PacSource.parse(proxy, source=EXPLICIT_SOURCE)
        return ProxyDecision(None, "explicit PAC setting", EXPLICIT_SOURCE, pac=pac)
    if isinstance(proxy, str):
        parsed = ProxyURL.parse(proxy, source=EXPLICIT_SOURCE)
        return ProxyDecision(parsed, "explicit proxy argument", EXPLICIT_SOURCE)
    if not isinstance(proxy, _Auto):
        raise TypeError(f"proxy must be a URL string, ProxyURL, None or AUTO, not {proxy!r}")
    return _from_environment(target, os.environ if env is None else env)


def _from_environment(target: Target, env: Mapping[str, str]) -> ProxyDecision:
    considered: list[str] = []
    notes: list[str] = []
    chosen: tuple[str, ProxyURL | PacSource] | None = None
    for name in proxy_variable_names(target.scheme):
        # Presence, not non-emptiness: in a CGI process HTTP_PROXY comes from
        # the client's "Proxy:" request header and must never be trusted.
        if name == "HTTP_PROXY" and "REQUEST_METHOD" in env:
            if _get(env, name) is not None:
                notes.append(_HTTPOXY_NOTE)
            continue
        considered.append(name)
        value = _get(env, name)
        if value is not None:
            # Parsed before any bypass rule: a broken variable is reported
            # for every URL, not only for the ones that happen to use it.
            parsed: ProxyURL | PacSource = (
                PacSource.parse(value, source=name)
                if _is_pac(value)
                else ProxyURL.parse(value, source=name)
            )
            chosen = (name, parsed)
            break

    if chosen is None:
        os_pac = os_pac_url() if env is os.environ else None
        if os_pac is not None:
            chosen = ("OS proxy settings", PacSource.parse(PAC_PREFIX + os_pac, source="OS"))
            notes.append(f"PAC URL from the OS proxy settings: {os_pac}")
    if chosen is None:
        rule = "no proxy variable is set"
        if notes:
            rule += f"; {notes[0]}"
        return ProxyDecision(None, rule, None, tuple(considered), tuple(notes))
    name, proxy_url = chosen

    if is_loopback(target.host):
        rule = "loopback hosts never use a proxy from the environment"
        return ProxyDecision(None, rule, None, tuple(considered), tuple(notes))

    for no_proxy_name in NO_PROXY_VARIABLES:
        considered.append(no_proxy_name)
        no_proxy_value = _get(env, no_proxy_name)
        if no_proxy_value is None:
            continue
        rules = NoProxyRules.parse(no_proxy_value)
        notes.extend(
            f"{no_proxy_name} entry {entry!r} ignored: {reason}" for entry, reason in rules.ignored
        )
        matched = rules.match(target.host, target.port)
        if matched is not None:
            rule = f"{no_proxy_name} entry {matched!r} matches host {target.host!r}"
            return ProxyDecision(None, rule, no_proxy_name, tuple(considered), tuple(notes))
        break  # only the first set no_proxy variable counts

    if isinstance(proxy_url, PacSource):
        rule = f"{name} names a PAC script (used for {target.scheme}://)"
        return ProxyDecision(None, rule, name, tuple(considered), tuple(notes), pac=proxy_url)
    rule = f"{name} is set (used for {target.scheme}://)"
    return ProxyDecision(proxy_url, rule, name, tuple(considered), tuple(notes))
