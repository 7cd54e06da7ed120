"""Proxy auto-config (PAC) files: where they come from, what they answer.

A PAC setting is written ``pac+file:///etc/proxy.pac``, ``pac+http://host/proxy.pac``
(or ``pac+https://``), or ``pac+wpad:`` for WPAD discovery through DNS
(``http://wpad.<domain>/wpad.dat`` for each parent domain of this host, then
``http://wpad/wpad.dat`` via the resolver's search list). The script runs in
pypac's JavaScript sandbox (dukpy), in a worker thread so the event loop
never waits on it, one evaluation at a time (the interpreter is not
thread-safe). Scripts and answers are cached for :data:`CACHE_SECONDS`; answers
per (scheme, host, port).

The answer (``PROXY a:1; SOCKS5 b:2; DIRECT``) becomes an ordered list of
routes; the transport tries them in order and fails over to the next when a
proxy cannot be reached.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import h11
import trio

from ._errors import ProxyConfigError
from ._proxy_url import ProxyURL
from ._target import Target, format_authority
from ._trust import default_ssl_context

__all__ = [
    "CACHE_SECONDS",
    "PacAnswer",
    "PacResolver",
    "PacSource",
    "default_resolver",
    "os_pac_url",
    "pac_query_url",
    "parse_pac_answer",
]

PAC_PREFIX: Final = "pac+"
CACHE_SECONDS: Final = 300.0
MAX_PAC_BYTES: Final = 1024 * 1024
_RECEIVE = 65536
# PAC keywords and the proxy URL scheme each becomes. "SOCKS" is SOCKS4 in
# the original Netscape spec; browsers speak SOCKS5 to it today, and so does
# tunnelws, resolving names on the proxy as browsers do.
_KEYWORDS: Final = {
    "PROXY": "http",
    "HTTP": "http",
    "HTTPS": "https",
    "SOCKS": "socks5h",
    "SOCKS5": "socks5h",
}


@dataclass(frozen=True)
class PacSource:
    """Where the PAC script comes from: ``url`` is ``file:``, ``http(s):`` or
    ``wpad:``; ``source`` names the setting (``"proxy argument"``, a variable)."""

    url: str
    source: str

    @classmethod
    def parse(cls, value: str, *, source: str) -> PacSource:
        text = value.strip()
        if not text.lower().startswith(PAC_PREFIX):
            raise ProxyConfigError(f"not a PAC setting in {source}: {text!r}", source=source)
        url = text[len(PAC_PREFIX) :]
        scheme = urlsplit(url).scheme.lower()
        if scheme == "wpad":
            return cls("wpad:", source)
        if scheme not in ("file", "http", "https"):
            raise ProxyConfigError(
                f"invalid PAC setting in {source} ({text!r}): use pac+file:///PATH, "
                "pac+http://HOST/PATH, pac+https://HOST/PATH or pac+wpad:",
                source=source,
            )
        parts = urlsplit(url)
        if scheme != "file" and not parts.hostname:
            raise ProxyConfigError(f"PAC URL without a host in {source}: {text!r}", source=source)
        if parts.password is not None:
            raise ProxyConfigError(f"PAC URL must not carry a password ({source})", source=source)
        return cls(url, source)

    def __str__(self) -> str:
        return f"{PAC_PREFIX}{self.url}"


@dataclass(frozen=True)
class PacAnswer:
    """What the PAC script said for one URL, and the routes it became.

    ``routes`` holds a :class:`ProxyURL` per proxy and ``None`` for DIRECT,
    in the order to try them; ``notes`` lists entries that were skipped.
    """

    script_url: str
    query_url: str
    text: str
    routes: tuple[ProxyURL | None, ...]
    notes: tuple[str, ...] = ()
    cached: bool = False


def pac_query_url(target: Target) -> str:
    """The URL handed to ``FindProxyForURL``: ``ws``/``wss`` become
    ``http``/``https`` (PAC files know only those, as in browsers), and for
    secure URLs only the origin is shown, as Chrome does."""
    scheme = "https" if target.secure else "http"
    authority = format_authority(target.host, target.port)
    return (
        f"{scheme}://{authority}/" if target.secure else f"{scheme}://{authority}{target.resource}"
    )


def parse_pac_answer(text: str, *, source: str = "PAC") -> tuple[list[ProxyURL | None], list[str]]:
    """``"PROXY a:1; SOCKS b:2; DIRECT"`` into routes, plus notes for skipped
    entries. An empty answer means DIRECT (as in browsers)."""
    routes: list[ProxyURL | None] = []
    notes: list[str] = []
    for raw in text.split(";"):
        entry = raw.strip()
        if not entry:
            continue
        keyword, _, where = entry.partition(" ")
        keyword = keyword.upper()
        where = where.strip()
        if keyword == "DIRECT" and not where:
            routes.append(None)
            continue
        scheme = _KEYWORDS.get(keyword)
        if scheme is None or not where or " " in where:
            notes.append(f"PAC entry {entry!r} ignored: not PROXY/HTTPS/SOCKS host:port or DIRECT")
            continue
        try:
            routes.append(ProxyURL.parse(f"{scheme}://{where}", source=source))
        except ProxyConfigError as exc:
            notes.append(f"PAC entry {entry!r} ignored: {exc}")
    if not routes and not notes:
        routes.append(None)
    return routes, notes


def os_pac_url() -> str | None:
    """The PAC URL configured in the OS proxy settings: Windows (registry,
    ``AutoConfigURL``) or macOS (system preferences), via pypac. ``None``
    elsewhere or when none is set. Not testable on Linux."""
    try:
        from pypac import os_settings
    except ImportError:
        return None
    for lookup in (
        os_settings.autoconfig_url_from_registry,
        os_settings.autoconfig_url_from_preferences,
    ):
        try:
            url = lookup()
        except Exception:  # NotWindowsError / NotDarwinError, unreadable settings
            continue
        if url:
            return str(url)
    return None


def _wpad_urls() -> list[str]:
    from pypac.wpad import proxy_urls_from_dns

    urls: list[str] = list(proxy_urls_from_dns())
    urls.append("http://wpad/wpad.dat")  # the bare name, via the resolver's search list
    return list(dict.fromkeys(urls))


@dataclass
class _CacheEntry:
    expires: float
    value: Any


@dataclass
class PacResolver:
    """Fetches, evaluates and caches PAC scripts; one per process is enough
    (:func:`default_resolver`)."""

    cache_seconds: float = CACHE_SECONDS
    fetch_timeout: float = 10.0
    _scripts: dict[str, _CacheEntry] = field(default_factory=dict)
    _answers: dict[tuple[str, str, str, int], _CacheEntry] = field(default_factory=dict)
    # dukpy interpreters are not thread-safe: one evaluation at a time.
    _limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))

    def clear(self) -> None:
        self._scripts.clear()
        self._answers.clear()

    async def find_proxy(
        self, pac: PacSource, target: Target, *, log: Callable[[str], None] | None = None
    ) -> PacAnswer:
        """Evaluate ``pac`` for ``target``; raises :class:`ProxyConfigError`
        when the script cannot be fetched or run."""
        now = time.monotonic()  # not trio's clock: the cache outlives one trio.run
        key = (str(pac), "https" if target.secure else "http", target.host, target.port)
        hit = self._answers.get(key)
        if hit is not None and hit.expires > now:
            answer: PacAnswer = hit.value
            return PacAnswer(
                answer.script_url, answer.query_url, answer.text, answer.routes, answer.notes, True
            )
        script_url, script = await self._script(pac, log)
        query = pac_query_url(target)
        try:
            text = await trio.to_thread.run_sync(
                partial(script.find_proxy_for_url, query, target.host), limiter=self._limiter
            )
        except Exception as exc:
            raise ProxyConfigError(
                f"the PAC script {script_url} failed for {query}: {_first_line(exc)}",
                source=pac.source,
            ) from None
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        routes, notes = parse_pac_answer(text, source=f"PAC {script_url}")
        answer = PacAnswer(script_url, query, text, tuple(routes), tuple(notes))
        self._answers[key] = _CacheEntry(now + self.cache_seconds, answer)
        return answer

    async def _script(self, pac: PacSource, log: Callable[[str], None] | None) -> tuple[str, Any]:
        now = time.monotonic()  # not trio's clock: the cache outlives one trio.run
        hit = self._scripts.get(pac.url)
        if hit is not None and hit.expires > now:
            cached: tuple[str, Any] = hit.value
            return cached
        candidates = _wpad_urls() if pac.url == "wpad:" else [pac.url]
        failures: list[str] = []
        for url in candidates:
            try:
                source_text = await self._fetch(url)
            except (OSError, ValueError, h11.ProtocolError, trio.TooSlowError, ssl.SSLError) as exc:
                failures.append(f"{url}: {_first_line(exc)}")
                if log:
                    log(f"PAC script {url} not available: {_first_line(exc)}")
                continue
            script = await trio.to_thread.run_sync(_compile, source_text, url, pac.source)
            value = (url, script)
            self._scripts[pac.url] = _CacheEntry(now + self.cache_seconds, value)
            return value
        raise ProxyConfigError(
            f"cannot load the PAC script ({'; '.join(failures) or 'no WPAD URL to try'})",
            source=pac.source,
        )

    async def _fetch(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError("file: PAC URLs must be local (file:///PATH)")
            data = await trio.Path(unquote(parts.path)).read_bytes()
        else:
            with trio.fail_after(self.fetch_timeout):
                data = await _http_get(url)
        if len(data) > MAX_PAC_BYTES:
            raise ValueError(f"PAC script larger than {MAX_PAC_BYTES} bytes")
        return data.decode("utf-8", errors="replace")


def _compile(source_text: str, url: str, source: str) -> Any:
    try:
        from pypac.parser import PACFile
    except ImportError as exc:  # pragma: no cover - pypac is a dependency
        raise ProxyConfigError(f"PAC support needs pypac and dukpy: {exc}", source=source) from None
    try:
        return PACFile(source_text)
    except Exception as exc:  # MalformedPacError, dukpy errors
        raise ProxyConfigError(
            f"the PAC script {url} is not valid: {_first_line(exc)}", source=source
        ) from None


async def _http_get(url: str) -> bytes:
    """A plain GET, always direct: a PAC file is never fetched through a proxy."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        if secure:
            tls = trio.SSLStream(stream, default_ssl_context(), server_hostname=host)
            await tls.do_handshake()
            stream = tls
        connection = h11.Connection(h11.CLIENT)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        request = h11.Request(
            method="GET",
            target=path,
            headers=[
                ("Host", format_authority(host, port) if parts.port else host),
                ("Accept", "application/x-ns-proxy-autoconfig, */*"),
                ("Connection", "close"),
            ],
        )
        await stream.send_all(connection.send(request) or b"")
        await stream.send_all(connection.send(h11.EndOfMessage()) or b"")
        body = bytearray()
        status = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(_RECEIVE)))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_PAC_BYTES:
                    raise ValueError(f"PAC script larger than {MAX_PAC_BYTES} bytes")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if status != 200:
            raise ValueError(f"HTTP status {status}")
        return bytes(body)
    finally:
        await trio.aclose_forcefully(stream)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


_DEFAULT = PacResolver()


def default_resolver() -> PacResolver:
    """The process-wide resolver (and cache) the transport uses."""
    return _DEFAULT
