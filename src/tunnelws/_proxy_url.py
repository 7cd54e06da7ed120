"""Proxy URLs: parsing, validation and redaction.

A proxy is written ``scheme://[user[:password]@]host[:port][/]``. Parsing is
deliberately strict (a typo in ``https_proxy`` should fail loudly, not send
traffic somewhere surprising) and every error message, ``repr`` and ``str``
shows the password as ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ._errors import ProxyConfigError
from ._target import format_authority, normalize_host

__all__ = ["DEFAULT_PROXY_PORTS", "ProxyURL", "redact_proxy_value"]

DEFAULT_PROXY_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SHAPE_HINT = "expected scheme://[user[:password]@]host[:port]"

# Turns a reason into the (redacting) error to raise; see ProxyURL.parse.
_FailFactory = Callable[[str], ProxyConfigError]


def redact_proxy_value(value: str) -> str:
    """Mask the password in a proxy value that may not even parse.

    Everything between the first ``:`` of the user info and the last ``@``
    becomes ``***``. Splitting at the *last* ``@`` (as the parser does) means
    a password containing unencoded ``@``, ``/`` or ``#`` is still hidden.
    Without any ``@``, a non-numeric "port" is hidden too: it may be the
    password of a ``user:password`` whose ``@host`` was forgotten.
    """
    scheme, rest = _split_scheme(value)
    prefix = f"{scheme}://" if scheme is not None else ""
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        # "user:password" with the "@host" forgotten looks like host:port;
        # a "port" that is not a number may be a password, so hide it.
        host, colon, after = rest.partition(":")
        port = re.split(r"[/?#]", after, maxsplit=1)[0]
        if colon and "[" not in host and not (port.isascii() and port.isdigit()):
            return f"{prefix}{host}:***"
        return value
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:***" if colon else user
    return f"{prefix}{masked}@{hostpart}"


@dataclass(frozen=True, repr=False)
class ProxyURL:
    """A validated proxy URL.

    ``host`` is in wire form (IDNA A-label, IPv6 unbracketed), ``port`` is
    always set (see :data:`DEFAULT_PROXY_PORTS`), ``username`` and
    ``password`` are percent-decoded. ``str()`` and ``repr()`` never show the
    password.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    # repr=False on the class plus the __repr__ below keep this out of logs.
    password: str | None = None

    @classmethod
    def parse(cls, value: str, *, source: str) -> ProxyURL:
        """Parse a proxy URL; a value without ``scheme://`` means ``http://``.

        ``source`` names where the value came from (``"https_proxy"``,
        ``"proxy argument"``) and appears in any :class:`ProxyConfigError`,
        together with the redacted value.
        """

        def fail(reason: str) -> ProxyConfigError:
            shown = redact_proxy_value(value)
            return ProxyConfigError(
                f"invalid proxy URL in {source} ({shown!r}): {reason}", source=source
            )

        text = value.strip()
        if not text:
            raise fail("empty value")
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
            raise fail("contains whitespace or control characters (percent-encode them)")

        given_scheme, rest = _split_scheme(text)
        head, sep, _ = text.partition("://")
        if given_scheme is None and sep and not any(c in head for c in ":@"):
            raise fail(f"malformed scheme; {_SHAPE_HINT}")
        scheme = "http" if given_scheme is None else given_scheme.lower()
        if scheme not in DEFAULT_PROXY_PORTS:
            supported = ", ".join(f"{s}://" for s in DEFAULT_PROXY_PORTS)
            raise fail(f"unsupported proxy scheme {scheme!r} (supported: {supported})")

        # The user info ends at the *last* '@', so unencoded '@', '/' or '#'
        # in a password still parse (and are still redacted).
        userinfo, at, hostpart = rest.rpartition("@")
        username = password = None
        if at:
            raw_user, colon, raw_password = userinfo.partition(":")
            if any(c in raw_user for c in "/?#"):
                raise fail(f"unexpected character in user name; {_SHAPE_HINT}")
            if _BAD_PERCENT_RE.search(userinfo):
                raise fail("invalid percent-encoding in the credentials")
            try:
                username = unquote(raw_user, errors="strict")
                password = unquote(raw_password, errors="strict") if colon else None
            except UnicodeDecodeError:
                raise fail("percent-encoded credentials are not valid UTF-8") from None
            if username == "" and password is None:
                username = None  # "http://@host": nothing to authenticate with

        cut = min((i for i in (hostpart.find(c) for c in "/?#") if i >= 0), default=None)
        hostport, tail = (hostpart, "") if cut is None else (hostpart[:cut], hostpart[cut:])
        if tail not in ("", "/"):
            raise fail(f"a proxy URL has no path, query or fragment; {_SHAPE_HINT}")

        raw_host, raw_port = _split_host_port(hostport, fail)
        if not raw_host:
            raise fail("no host")
        if "%" in raw_host and not raw_host.startswith("["):
            raise fail("'%' is only allowed in a bracketed IPv6 zone")
        try:
            host = normalize_host(raw_host)
        except ValueError as exc:
            raise fail(str(exc)) from None

        if raw_port is None or raw_port == "":
            port = DEFAULT_PROXY_PORTS[scheme]
        elif _PORT_RE.fullmatch(raw_port) and 1 <= int(raw_port) <= 65535:
            port = int(raw_port)
        else:
            # Echo only digits: "user:password" without "@host" would
            # otherwise print the password as a "port".
            shown_port = f" {raw_port!r}" if raw_port.isascii() and raw_port.isdigit() else ""
            raise fail(f"bad port{shown_port} (must be 1-65535)")
        return cls(scheme, host, port, username, password)

    @property
    def authority(self) -> str:
        """``host:port`` with IPv6 literals bracketed."""
        return format_authority(self.host, self.port)

    @property
    def secure(self) -> bool:
        """True when the connection *to the proxy* uses TLS (``https://``)."""
        return self.scheme == "https"

    def redacted(self) -> str:
        """The URL with the password shown as ``***``."""
        if self.username is None and self.password is None:
            return f"{self.scheme}://{self.authority}"
        user = quote(self.username or "", safe="")
        secret = ":***" if self.password is not None else ""
        return f"{self.scheme}://{user}{secret}@{self.authority}"

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"ProxyURL({self.redacted()!r})"


def _split_scheme(value: str) -> tuple[str | None, str]:
    """``("scheme", rest)``, or ``(None, value)`` when there is no scheme.

    Only a well-formed scheme counts: in ``bob:pa://ss@proxy`` the ``://`` is
    part of a password, and must be neither parsed nor shown as a scheme.
    """
    scheme, sep, rest = value.partition("://")
    if sep and _SCHEME_RE.fullmatch(scheme):
        return scheme, rest
    return None, value


def _split_host_port(hostport: str, fail: _FailFactory) -> tuple[str, str | None]:
    """Split ``host[:port]`` / ``[v6]:port``; bare IPv6 must be bracketed."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise fail("unclosed '[' in host")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        if after and not after.startswith(":"):
            raise fail(f"unexpected text after ']'; {_SHAPE_HINT}")
        if ":" not in host:
            raise fail("brackets are only for IPv6 addresses")
        return host, after[1:] if after else None
    if hostport.count(":") > 1:
        raise fail("IPv6 addresses must be in brackets: http://[2001:db8::1]:3128")
    host, colon, port = hostport.partition(":")
    return host, port if colon else None
