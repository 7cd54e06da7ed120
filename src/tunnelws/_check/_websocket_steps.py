"""Steps 6 to 9: the WebSocket upgrade, echoes, the idle tunnel and SSE."""

from __future__ import annotations

import itertools
import statistics

import trio

from .._errors import (
    HandshakeError,
    TunnelError,
)
from .._event_stream import open_event_stream
from .._target import Target
from .._timeouts import PhaseClock
from .._trace import trace_head
from .._transport import (
    start_tls,
)
from .._trust import default_ssl_context
from . import _diagnose as rules
from ._channel import ChannelLost, MessageChannel
from ._paths import open_origin, open_second_websocket
from ._report import Diagnosis, StepStatus
from ._state import StepFailed, Walk
from ._upgrade import (
    MAX_HEAD_BYTES,
    BadResponse,
    accept_is_valid,
    build_get_request,
    build_upgrade_request,
    new_key,
    upgrade_headers,
)
from ._wire import (
    RECEIVE_SIZE,
    changes_from_info,
    complete_json,
    echo_once,
    idle_then_echo,
    must,
    read_head,
    request_headers,
)

LATENCY_ROUNDS = 20
BIG_MESSAGE = bytes(range(256)) * 4096  # 1 MiB
SSE_INTERVAL = 0.25
SSE_COUNT = 4


async def upgrade(walk: Walk) -> tuple[StepStatus, str, Diagnosis | None]:
    """Step 6: the upgrade by hand, so a wrong reply can be reported as it came."""
    assert walk.stream is not None
    key = new_key()
    timeout = walk.timeout
    request = build_upgrade_request(walk.target, key)
    trace_head(
        walk.trace,
        ">",
        f"GET {walk.target.resource} HTTP/1.1",
        upgrade_headers(walk.target, key),
    )
    head, leftover, error, timed_out = await read_head(walk.stream, request, timeout)
    base = rules.UpgradeObservation(
        walk.target.url,
        walk.target.secure,
        walk.proxy is not None,
        timed_out=timed_out,
        timeout=timeout,
        error=error,
    )
    if head is None:
        silent = must(rules.diagnose_upgrade(base))
        walk.blocked = (silent.category, None)
        raise StepFailed("no reply", silent)
    trace_head(
        walk.trace, "<", f"HTTP/{head.http_version} {head.status} {head.reason}", head.headers
    )
    walk.details.append(f"reply: HTTP/{head.http_version} {head.status} {head.reason}")
    accept_ok = accept_is_valid(head, key) if head.status == 101 else None
    if accept_ok is not None:
        walk.details.append("Sec-WebSocket-Accept: " + ("correct" if accept_ok else "WRONG"))
    if head.status == 101 and accept_ok:
        walk.leftover = leftover
        changes = await _compare_via_info_websocket(walk)
    else:
        changes = await _compare_via_info_get(walk)
    if changes is not None:
        walk.details.append(
            "headers (vs the origin's /info): "
            + (f"stripped {', '.join(changes.stripped)}" if changes.stripped else "none stripped")
            + "; "
            + (f"added {', '.join(changes.added)}" if changes.added else "none added")
        )
    observation = rules.UpgradeObservation(
        walk.target.url,
        walk.target.secure,
        walk.proxy is not None,
        status=head.status,
        reason=head.reason,
        headers=head.headers,
        accept_ok=accept_ok,
        changes=changes,
    )
    diagnosis = rules.diagnose_upgrade(observation)
    summary = f"{head.status} {head.reason}"
    if diagnosis is not None and diagnosis.severity == "error":
        walk.blocked = (diagnosis.category, head.status)
        raise StepFailed(summary, diagnosis)
    return ("warn" if diagnosis else "ok"), summary, diagnosis


async def _compare_via_info_websocket(walk: Walk) -> rules.HeaderChanges | None:
    """Upgrade to ``/info`` on a second connection and compare what the
    origin received with what was sent. None when it is not a tunnelws server."""
    with trio.move_on_after(walk.timeout):
        try:
            stream = await open_origin(walk)
        except TunnelError:
            return None
        info_key = new_key()
        request = build_upgrade_request(walk.target, info_key, "/info")
        head, leftover, _, _ = await read_head(stream, request, walk.timeout)
        if head is None or head.status != 101:
            await trio.aclose_forcefully(stream)
            return None
        channel = MessageChannel(stream, leftover)
        try:
            first = await channel.receive()
        except ChannelLost:
            return None
        finally:
            await channel.aclose()
        return changes_from_info(first, upgrade_headers(walk.target, info_key))
    return None


async def _compare_via_info_get(walk: Walk) -> rules.HeaderChanges | None:
    """After a failed upgrade: what does the origin receive of an upgrade
    request sent to ``/info``? A 101 means nothing was stripped."""
    with trio.move_on_after(walk.timeout):
        try:
            stream = await open_origin(walk)
        except TunnelError:
            return None
        async with stream:
            request = build_get_request(walk.target, "/info")
            head, rest, _, _ = await read_head(stream, request, walk.timeout)
            if head is None:
                return None
            if head.status == 101:
                return rules.HeaderChanges()
            body = bytearray(rest)
            try:
                while len(body) < MAX_HEAD_BYTES:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        break
                    body += data
                    if complete_json(body):
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            return changes_from_info(bytes(body), request_headers(request))
    return None


async def echo(walk: Walk) -> tuple[StepStatus, str]:
    """Step 7: text, binary and 1 MiB echoes, then 20 round trips for latency."""
    assert walk.stream is not None
    channel = MessageChannel(walk.stream, walk.leftover)
    walk.channel = channel
    timeout = walk.options.message_timeout
    latencies: list[float] = []
    parts: list[tuple[str, str | bytes]] = [
        ("text", "tunnelws check ✓ text"),
        ("binary", bytes(range(256))),
        ("1 MiB", BIG_MESSAGE),
    ]
    parts += [("latency", f"ping {i}") for i in range(LATENCY_ROUNDS)]
    for part, message in parts:
        sent_at = trio.current_time()
        failure = await echo_once(channel, message, timeout)
        if failure is not None:
            observation = rules.EchoObservation(
                part,
                lost=failure.lost,
                how=failure.how,
                bytes_before=channel.bytes_moved,
                timed_out=failure.timed_out,
                timeout=timeout,
                close_code=failure.code,
            )
            if part == "text" and (failure.timed_out or failure.how in ("closed", "reset")):
                # Nothing at all came after the 101: as the client sees it.
                walk.blocked = ("handshake", 101)
            raise StepFailed(f"{part} echo failed", rules.diagnose_echo(observation))
        if part == "latency":
            latencies.append(trio.current_time() - sent_at)
    median = statistics.median(latencies) * 1000
    return "ok", (
        f"text, binary and 1 MiB echoed; latency median {median:.1f} ms"
        f" ({LATENCY_ROUNDS} round trips)"
    )


async def idle(walk: Walk) -> tuple[StepStatus, str] | None:
    """Step 8 (with ``--idle``): idle without pings, then with pings if that failed."""
    idle = walk.options.idle
    if idle is None:
        return None
    assert walk.channel is not None
    died_after = await idle_then_echo(walk.channel, idle, None, walk.options.message_timeout)
    if died_after is None:
        return "ok", f"tunnel survived {idle:g} s idle without pings"
    walk.details.append(f"without pings: the tunnel ended after ~{died_after:.1f} s idle")
    interval = max(0.1, round(min(died_after, idle) / 2, 2))
    survived: bool | None = None
    try:
        with trio.fail_after(walk.timeout):
            channel = await open_second_websocket(walk)
    except (TunnelError, trio.TooSlowError, ChannelLost, BadResponse):
        walk.details.append("with pings: could not open a second WebSocket")
    else:
        try:
            lost = await idle_then_echo(channel, idle, interval, walk.options.message_timeout)
        finally:
            await channel.aclose()
        survived = lost is None
        walk.details.append(
            f"with a ping every {interval:g} s: "
            + ("survived" if survived else f"ended after ~{lost:.1f} s")
        )
    observation = rules.IdleObservation(
        idle, died_after, interval, survived, via_proxy=walk.proxy is not None
    )
    raise StepFailed(
        f"tunnel dropped after ~{died_after:.1f} s idle",
        must(rules.diagnose_idle(observation)),
    )


async def sse(walk: Walk) -> tuple[StepStatus, str, Diagnosis | None]:
    """Step 9: whether ``/timestamp`` events arrive one by one through the route."""
    if walk.channel is not None:
        await walk.channel.aclose()
        walk.stream = None
    scheme = "https" if walk.target.secure else "http"
    url = (
        f"{scheme}://{walk.target.host_header}/timestamp"
        f"?interval={SSE_INTERVAL}&count={SSE_COUNT}&heartbeat=0"
    )
    arrivals: list[float] = []
    limit = walk.timeout + SSE_INTERVAL * SSE_COUNT + 5
    started = trio.current_time()
    connect_to = walk.options.connect_to

    async def direct_opener(target: Target) -> trio.abc.Stream:
        assert connect_to is not None
        stream = await trio.open_tcp_stream(*connect_to)
        if not target.secure:
            return stream
        return await start_tls(
            stream,
            walk.route.ssl_context or default_ssl_context(),
            target.host,
            peer="origin",
            clock=PhaseClock(walk.timeout),
            trace=None,
        )

    opener = direct_opener if (connect_to is not None and walk.proxy is None) else None
    with trio.move_on_after(limit) as scope:
        try:
            async with open_event_stream(
                url,
                route=walk.chosen_route(quiet=True),
                reconnect=False,
                _open_stream=opener,
            ) as events:
                async for _ in events:
                    arrivals.append(trio.current_time() - started)
        except HandshakeError as exc:
            return (
                "skip",
                f"skipped: the origin offers no /timestamp stream ({exc.status})",
                None,
            )
        except TunnelError as exc:
            return "skip", f"skipped: could not open /timestamp ({exc.category})", None
    if scope.cancelled_caught and not arrivals:
        return "skip", "skipped: /timestamp sent nothing in time", None
    observation = rules.SSEObservation(SSE_INTERVAL, tuple(arrivals))
    diagnosis = rules.diagnose_sse(observation)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    summary = f"{len(arrivals)} events, one by one" if diagnosis is None else "events buffered"
    if gaps:
        walk.details.append("gaps between events: " + ", ".join(f"{g:.2f} s" for g in gaps))
    return ("warn" if diagnosis else "ok"), summary, diagnosis
