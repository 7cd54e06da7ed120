"""Small trio helpers shared by the steps: one response head, one echo, an
idle wait; and the facts they extract."""

from __future__ import annotations

import html
import ipaddress
import json
import re
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from . import _diagnose as rules
from ._certs import CertificateError, CertNames, read_cert_names
from ._channel import ChannelLost, MessageChannel
from ._report import Diagnosis
from ._upgrade import (
    MAX_HEAD_BYTES,
    BadResponse,
    ResponseHead,
    compare_headers,
    parse_response_head,
)

if TYPE_CHECKING:
    pass

RECEIVE_SIZE = 65536


@dataclass(frozen=True)
class EchoFailure:
    """Why one echo failed: the connection was lost, timed out, or the reply differed."""

    lost: bool = False
    how: str = ""
    code: int | None = None
    timed_out: bool = False


async def echo_once(
    channel: MessageChannel, message: str | bytes, limit: float
) -> EchoFailure | None:
    with trio.move_on_after(limit):
        try:
            await channel.send(message)
            reply = await channel.receive()
        except ChannelLost as lost:
            return EchoFailure(lost=True, how=lost.how, code=lost.code)
        return None if reply == message else EchoFailure()
    return EchoFailure(timed_out=True)


async def idle_then_echo(
    channel: MessageChannel, idle: float, ping_interval: float | None, limit: float
) -> float | None:
    """Stay idle (but for pings) for ``idle`` seconds, then echo once.
    Returns None if the WebSocket survived, else the seconds it lasted."""
    started = trio.current_time()
    lasted: float | None = None

    async def ping_forever(interval: float) -> None:
        with suppress(ChannelLost):  # the reader notices and reports the loss
            while True:
                await trio.sleep(interval)
                await channel.ping()

    async with trio.open_nursery() as nursery:
        if ping_interval is not None:
            nursery.start_soon(ping_forever, ping_interval)
        with trio.move_on_after(idle):
            try:
                while True:
                    await channel.receive()  # nothing is expected; pongs are handled inside
            except ChannelLost:
                lasted = trio.current_time() - started
        nursery.cancel_scope.cancel()
    if lasted is not None:
        return lasted
    failure = await echo_once(channel, "after idle", limit)
    return None if failure is None else idle


async def read_head(
    stream: trio.abc.Stream, request: bytes, limit: float
) -> tuple[ResponseHead | None, bytes, str | None, bool]:
    """Send ``request`` and read a response head: ``(head, leftover, error, timed_out)``."""
    buffer = bytearray()
    error: str | None = None
    with trio.move_on_after(limit) as scope:
        try:
            await stream.send_all(request)
            while b"\r\n\r\n" not in buffer:
                if len(buffer) > MAX_HEAD_BYTES:
                    error = "reply head too large"
                    break
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    error = "closed before a complete reply"
                    break
                buffer += data
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = f"connection broken: {exc.__cause__ or exc}"
    if scope.cancelled_caught:
        return None, b"", "timed out", True
    if error is not None:
        return None, b"", error, False
    raw, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    try:
        return parse_response_head(raw), rest, None, False
    except BadResponse as exc:
        return None, b"", str(exc), False


def request_headers(request: bytes) -> list[tuple[str, str]]:
    lines = request.decode("latin-1").split("\r\n")[1:]
    return [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines if line)]


def complete_json(body: bytearray) -> bool:
    try:
        json.loads(bytes(body))
    except ValueError:
        return False
    return True


def changes_from_info(
    payload: str | bytes, sent: Sequence[tuple[str, str]]
) -> rules.HeaderChanges | None:
    try:
        info = json.loads(payload)
        received = info["headers"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(received, list):
        return None
    return compare_headers(sent, received)


def cert_names(tls: trio.SSLStream[trio.abc.Stream]) -> CertNames | None:
    der = tls.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return read_cert_names(der)
    except CertificateError:
        return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def body_text(body: bytes, limit: int = 160) -> str:
    text = html.unescape(re.sub(r"<[^>]*>", " ", body.decode("utf-8", errors="replace")))
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def must(diagnosis: Diagnosis | None) -> Diagnosis:
    assert diagnosis is not None
    return diagnosis
