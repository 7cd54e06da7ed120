"""Steps 1 to 5: route, name resolution, TCP, CONNECT and TLS."""

from __future__ import annotations

import os
import socket
import ssl

import trio

from .._errors import (
    PhaseTimeoutError,
    ProxyAuthError,
    ProxyConfigError,
    ProxyConnectError,
    ProxyProtocolError,
    ProxyReplyError,
    TLSError,
    TunnelError,
)
from .._failures import classify_connect_failure, read_tls_failure
from .._negotiation import ConnectNegotiation
from .._route import ProxyDecision, resolve_proxy
from .._target import format_authority
from .._timeouts import PhaseClock
from .._transport import negotiate_tunnel, open_route_stream, start_tls
from .._trust import default_ssl_context
from . import _diagnose as rules
from ._certs import CertNames
from ._paths import open_plain_path, open_proxy
from ._report import Diagnosis, StepStatus
from ._state import StepFailed, Walk
from ._wire import body_text, cert_names, is_ip_literal, must

PORT_PROBE_TIMEOUT = 3.0
DIRECT_COMPARE_TIMEOUT = 2.0


async def route(walk: Walk) -> tuple[StepStatus, str]:
    """Step 1: which proxy and why (explicit, environment, loopback, no_proxy)."""
    await trio.lowlevel.checkpoint()
    try:
        decision = resolve_proxy(walk.target.url, walk.route.proxy, env=walk.route.env)
    except ProxyConfigError as exc:
        raise StepFailed(
            "the proxy configuration is invalid", rules.diagnose_route(str(exc), exc.source)
        ) from None
    _describe_decision(walk, decision)
    pac = getattr(decision, "pac", None)
    if pac is not None:
        raise StepFailed(
            f"a PAC script decides ({pac})",
            rules.diagnose_route(
                "check does not evaluate PAC scripts yet; run `tunnelws resolve -v URL`"
                " and pass the proxy it names with --proxy",
                decision.source,
            ),
        )
    proxy = decision.proxy
    walk.proxy = proxy
    if proxy is None:
        where = ""
        if walk.options.connect_to is not None:
            where = f" (connecting to {format_authority(*walk.options.connect_to)})"
        return "ok", f"DIRECT{where}: {decision.rule}"
    return "ok", f"via {proxy.redacted()}: {decision.rule}"


def _describe_decision(walk: Walk, decision: ProxyDecision) -> None:
    env = os.environ if walk.route.env is None else walk.route.env
    if decision.considered:
        seen = [
            f"{name}={'set' if (env.get(name) or '').strip() else 'unset'}"
            for name in decision.considered
        ]
        walk.details.append("variables: " + ", ".join(seen))
    walk.details.extend(decision.notes)


async def resolve_names(walk: Walk) -> tuple[StepStatus, str]:
    """Step 2: resolve the name we connect to; never the origin's through a proxy."""
    if walk.proxy is not None:
        host, port = walk.proxy.host, walk.proxy.port
        skipped = f"skipped for {walk.target.host}: the proxy resolves it"
    else:
        host, port = walk.origin_address()
        skipped = ""
    if is_ip_literal(host):
        await trio.lowlevel.checkpoint()
        return "skip", skipped or f"skipped: {host} is an IP address"
    timeout = walk.timeout
    error = ""
    with trio.move_on_after(timeout) as scope:
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            error = exc.strerror or str(exc)
    if scope.cancelled_caught:
        error = f"no answer within {timeout:g} s"
    if error:
        raise StepFailed(
            f"{host} does not resolve",
            rules.diagnose_resolution(host, error, via_proxy=walk.proxy is not None),
        )
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    what = "proxy " if walk.proxy is not None else ""
    summary = f"{what}{host} -> {', '.join(addresses[:4])}"
    if skipped:
        summary += f"; {skipped}"
    return "ok", summary


async def tcp(walk: Walk) -> tuple[StepStatus, str]:
    """Step 3: TCP to the proxy or the origin (and TLS to an https:// proxy)."""
    via_proxy = walk.proxy is not None
    host, port = (
        (walk.proxy.host, walk.proxy.port) if walk.proxy is not None else walk.origin_address()
    )
    authority = format_authority(host, port)
    timeout = walk.timeout
    stream: trio.abc.Stream | None = None
    failure: tuple[str, str] | None = None
    with trio.move_on_after(timeout) as scope:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            read = classify_connect_failure(exc)
            failure = (read.outcome, read.reason)
    if scope.cancelled_caught:
        failure = ("silent", "")
    if stream is None:
        outcome, detail = failure or ("error", "unknown error")
        observation = rules.TCPObservation(outcome, authority, via_proxy, detail, timeout)
        raise StepFailed(
            f"{'proxy ' if via_proxy else ''}{authority}: {outcome}",
            rules.diagnose_tcp(observation),
        )
    walk.stream = stream
    summary = f"connected to {'proxy' if via_proxy else 'origin'} {authority}"
    if walk.proxy is not None and walk.proxy.scheme == "https":
        walk.stream = await _proxy_tls(walk, stream)
        summary += " (TLS to the proxy)"
    return "ok", summary


async def _proxy_tls(walk: Walk, stream: trio.abc.Stream) -> trio.abc.Stream:
    assert walk.proxy is not None
    context = walk.route.proxy_ssl_context or default_ssl_context()
    try:
        tls = await start_tls(
            stream,
            context,
            walk.proxy.host,
            peer="proxy",
            clock=PhaseClock(walk.timeout),
            trace=walk.trace,
        )
    except TLSError as exc:
        raise StepFailed(
            "TLS to the proxy failed",
            Diagnosis(
                "tls",
                "proxy-tls",
                str(exc),
                "trust the proxy's CA with --proxy-cacert FILE, or check that the"
                " proxy really speaks TLS (else use an http:// proxy URL)",
            ),
        ) from None
    except PhaseTimeoutError as exc:
        raise StepFailed(
            "TLS to the proxy timed out",
            Diagnosis("timeout", "proxy-tls-silent", str(exc), "check the proxy URL's port"),
        ) from None
    names = cert_names(tls)
    if names is not None:
        walk.proxy_issuer = names.issuer
        walk.details.append(f"proxy certificate: {names.subject}; issuer {names.issuer}")
    return tls


async def connect(walk: Walk) -> tuple[StepStatus, str]:
    """Step 4: the CONNECT negotiation, driven exactly as the client drives it
    (the same :class:`ConnectNegotiation`); after a 403, a probe to port 443
    tells a port policy from a host policy."""
    if walk.proxy is None:
        await trio.lowlevel.checkpoint()
        return "skip", "skipped: direct route, no tunnel"
    if walk.proxy.scheme not in ("http", "https"):
        return await _socks_tunnel(walk)
    assert walk.stream is not None
    target = walk.target
    negotiation = _negotiation(walk, target.port)
    stream, walk.stream = walk.stream, None
    timed_out = False
    error: TunnelError | None = None
    try:
        walk.stream = await negotiate_tunnel(
            negotiation, stream, lambda: open_proxy(walk), PhaseClock(walk.timeout)
        )
    except PhaseTimeoutError as exc:
        timed_out, error = True, exc
    except (ProxyReplyError, ProxyProtocolError) as exc:
        error = exc
    except ProxyConnectError as exc:  # the reconnect after a 407-and-close failed
        raise StepFailed(
            "cannot reconnect to the proxy", rules.diagnose_route(str(exc), None)
        ) from None
    attempts = _record_attempts(walk, negotiation)
    final = negotiation.reply
    port_443: int | None = None
    if final is not None and final.status == 403 and target.port != 443:
        port_443 = await _probe_port_443(walk)
        if port_443 is not None:
            walk.details.append(f"CONNECT {format_authority(target.host, 443)} -> {port_443}")
    last = negotiation.attempts[-1]
    observation = rules.ConnectObservation(
        authority=target.authority,
        port=target.port,
        attempts=attempts,
        had_credentials=negotiation.had_credentials,
        auth_error=str(error) if isinstance(error, ProxyAuthError) else None,
        protocol_error=str(error) if isinstance(error, ProxyProtocolError) else None,
        reply_prefix=last.prefix,
        received_bytes=last.received,
        timed_out=timed_out,
        timeout=walk.timeout,
        port_443_status=port_443,
        body_excerpt=body_text(final.body) if final is not None else "",
    )
    diagnosis = rules.diagnose_connect(observation)
    if diagnosis is not None:
        walk.blocked = (diagnosis.category, final.status if final is not None else None)
        if timed_out:
            summary = "no reply"
        elif final is not None and not isinstance(error, ProxyProtocolError):
            summary = f"{final.status} {final.reason}"
        else:
            summary = "bad reply"
        raise StepFailed(summary, diagnosis)
    assert final is not None and walk.stream is not None
    scheme = negotiation.authenticator.scheme_used
    accepted = f"; {scheme} credentials accepted" if scheme else ""
    return "ok", f"tunnel open: {final.status} {final.reason}{accepted}"


def _negotiation(walk: Walk, port: int) -> ConnectNegotiation:
    assert walk.proxy is not None
    route = walk.route
    try:
        return ConnectNegotiation(
            walk.target.host,
            port,
            credentials=route.credentials_for(walk.proxy),
            proxy_host=walk.proxy.host,
            headers=route.proxy_headers,
            schemes=route.proxy_auth_schemes,
            trace=walk.trace,
        )
    except ProxyConfigError as exc:
        raise StepFailed(
            "the proxy configuration is invalid", rules.diagnose_route(str(exc), exc.source)
        ) from None


def _record_attempts(
    walk: Walk, negotiation: ConnectNegotiation
) -> tuple[rules.ConnectAttempt, ...]:
    """The attempts as the rules see them, and one detail line for each."""
    attempts: list[rules.ConnectAttempt] = []
    for attempt in negotiation.attempts:
        if attempt.new_connection:
            walk.details.append("the proxy closed the connection after 407; new connection")
        sent = f" (Proxy-Authorization: {attempt.credentials_scheme} ***)"
        line = f"CONNECT {attempt.authority}" + (sent if attempt.credentials_scheme else "")
        if attempt.status is None:
            walk.details.append(f"{line} -> {attempt.error or 'no reply'}")
            continue
        walk.details.append(f"{line} -> {attempt.status} {attempt.reason}")
        if attempt.status == 407 and attempt.offered_schemes:
            walk.details.append("proxy offers: " + ", ".join(attempt.offered_schemes))
        attempts.append(
            rules.ConnectAttempt(
                attempt.status,
                attempt.reason,
                attempt.offered_schemes,
                attempt.credentials_scheme,
                closed_after=attempt.closed_after,
            )
        )
    return tuple(attempts)


async def _socks_tunnel(walk: Walk) -> tuple[StepStatus, str]:
    """A SOCKS tunnel through the transport (no step-by-step detail yet)."""
    assert walk.proxy is not None
    if walk.stream is not None:
        await trio.aclose_forcefully(walk.stream)
        walk.stream = None
    try:
        clock = PhaseClock(walk.timeout)
        walk.stream = await open_route_stream(walk.target, walk.chosen_route(), clock)
    except TunnelError as exc:
        raise StepFailed(
            f"{walk.proxy.scheme} tunnel failed",
            Diagnosis(
                exc.category,
                "socks-failed",
                str(exc),
                "check the SOCKS proxy's address, credentials and rules (-v shows the exchange)",
            ),
        ) from None
    return "ok", f"{walk.proxy.scheme} tunnel open to {walk.target.authority}"


async def _probe_port_443(walk: Walk) -> int | None:
    """Status of CONNECT to the same host on 443 (same credentials, same
    negotiation): tells port from host policy."""
    negotiation = _negotiation(walk, 443)
    with trio.move_on_after(PORT_PROBE_TIMEOUT):
        try:
            stream = await open_proxy(walk)
            tunnel = await negotiate_tunnel(
                negotiation, stream, lambda: open_proxy(walk), PhaseClock(PORT_PROBE_TIMEOUT)
            )
        except TunnelError:
            pass
        else:
            await trio.aclose_forcefully(tunnel)
    reply = negotiation.reply
    return reply.status if reply is not None else None


async def tls(walk: Walk) -> tuple[StepStatus, str] | tuple[StepStatus, str, Diagnosis | None]:
    """Step 5: end-to-end TLS for wss://, with the interception comparison."""
    if not walk.target.secure:
        await trio.lowlevel.checkpoint()
        return "skip", "skipped: ws:// has no TLS (a proxy on the way can read and alter it)"
    assert walk.stream is not None
    host = walk.target.host
    context = walk.route.ssl_context or default_ssl_context()
    timeout = walk.timeout
    verify_error: str | None = None
    handshake_error: str | None = None
    names: CertNames | None = None
    version = ""
    try:
        tls = await start_tls(
            walk.stream,
            context,
            host,
            peer="origin",
            clock=PhaseClock(timeout),
            trace=walk.trace,
        )
    except TLSError as exc:
        walk.stream = None
        failure = read_tls_failure(exc)
        verify_error = failure.verify_error
        handshake_error = failure.handshake_error
        if verify_error is None and handshake_error is None:
            handshake_error = str(exc)
    except PhaseTimeoutError:
        walk.stream = None
        observation = rules.TLSObservation(
            host, walk.proxy is not None, timed_out=True, timeout=timeout
        )
        raise StepFailed("handshake timed out", must(rules.diagnose_tls(observation))) from None
    else:
        walk.stream = tls
        names = cert_names(tls)
        version = tls.version() or ""
    if names is None and verify_error is not None:
        names = await _fetch_names(walk, via_route=True)
    direct_issuer: str | None = None
    if walk.proxy is not None and walk.options.compare_direct and names is not None:
        direct = await _fetch_names(walk, via_route=False)
        if direct is not None:
            direct_issuer = direct.issuer
            walk.details.append(f"reached directly: issuer {direct.issuer}")
        else:
            walk.details.append("direct comparison: origin not reachable directly")
    if names is not None:
        walk.details.insert(0, f"certificate: {names.subject}; issuer {names.issuer}")
    observation = rules.TLSObservation(
        host,
        walk.proxy is not None,
        verify_error=verify_error,
        handshake_error=handshake_error,
        subject=names.subject if names else None,
        issuer=names.issuer if names else None,
        direct_issuer=direct_issuer,
        proxy_issuer=walk.proxy_issuer,
    )
    diagnosis = rules.diagnose_tls(observation)
    if diagnosis is not None and diagnosis.severity == "error":
        raise StepFailed(verify_error or handshake_error or "failed", diagnosis)
    summary = f"{version}, certificate verified for {host}"
    return ("warn" if diagnosis else "ok"), summary, diagnosis


async def _fetch_names(walk: Walk, *, via_route: bool) -> CertNames | None:
    """The origin's certificate names without verifying it: along the
    route, or directly (bounded, for the interception comparison)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    limit = walk.timeout if via_route else DIRECT_COMPARE_TIMEOUT
    with trio.move_on_after(limit):
        try:
            if via_route:
                stream = await open_plain_path(walk)
            else:
                stream = await trio.open_tcp_stream(walk.target.host, walk.target.port)
            tls = trio.SSLStream(stream, context, server_hostname=walk.target.host)
            async with tls:
                await tls.do_handshake()
                return cert_names(tls)
        except (OSError, TunnelError, trio.BrokenResourceError):
            return None
    return None
