"""One CONNECT negotiation, Sans-IO: which request to send next, what each
proxy reply means, and a record of every attempt.

:class:`ConnectNegotiation` owns the request builder, the reply parser and the
authenticator for one tunnel. Its driver only moves bytes: it sends what a
:class:`SendRequest` holds (on a new connection to the proxy when
``reconnect`` is set), feeds every byte it receives to
:meth:`ConnectNegotiation.receive_data` (``b""`` for end of file) and acts on
the answer:

* :class:`SendRequest`: send the next CONNECT (answering a 407);
* :class:`TunnelOpen`: the tunnel is open; ``leftover`` bytes already belong
  to it;
* :class:`TunnelFailed`: give up with ``error``, a typed
  :class:`~tunnelws.TunnelError` (auth, refusal, protocol);
* :class:`ComputeAnswer`: a 407 whose answer may block (NTLM/Negotiate call
  GSSAPI, which may wait for a Kerberos KDC): call ``compute`` off the event
  loop (:mod:`._auth_thread`), pass its result to
  :meth:`ConnectNegotiation.answer` and act on what that returns;
* ``None``: the reply is not complete yet, keep reading.

Both the client (``_transport``) and ``tunnelws check`` drive this object, so
the two can never disagree about what a proxy reply means. Timeouts belong to
the driver: nothing here reads a clock.

State, as data::

    AWAITING_REPLY --2xx--------------------------> OPEN
         |  ^
         |  +--407, answer on the same connection--+
         |  +--407, answer on a new connection-----+
         |  +--407, ANSWERING (compute, answer())--+
         +--anything else / broken / bad bytes----> FAILED
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from ._auth import Credentials, ProxyAuthenticator
from ._connect import ConnectReplyParser, ProxyReply, build_connect_request
from ._errors import (
    ProxyAuthError,
    ProxyConfigError,
    ProxyProtocolError,
    ProxyRefusedError,
    TunnelError,
)
from ._grammar import parse_challenges
from ._target import format_authority
from ._trace import Trace, trace_head
from ._version import USER_AGENT

__all__ = [
    "Action",
    "ComputeAnswer",
    "ConnectAttempt",
    "ConnectNegotiation",
    "NegotiationState",
    "SendRequest",
    "TunnelFailed",
    "TunnelOpen",
]

# How many first bytes of each reply an attempt keeps (to tell TLS or SOCKS
# answering on an HTTP proxy port).
_KEPT_PREFIX = 64


class NegotiationState(enum.Enum):
    #: A CONNECT has been handed out; its reply is being read.
    AWAITING_REPLY = enum.auto()
    #: A 407 arrived; its answer is being computed (see :class:`ComputeAnswer`).
    ANSWERING = enum.auto()
    #: A 2xx arrived: the stream is the tunnel now.
    OPEN = enum.auto()
    #: The negotiation ended with a typed error; it stays failed.
    FAILED = enum.auto()


@dataclass(frozen=True)
class SendRequest:
    """Send ``data`` to the proxy; first open a new connection to it when
    ``reconnect`` is set (the proxy closed the last one)."""

    data: bytes
    reconnect: bool = False


@dataclass(frozen=True)
class TunnelOpen:
    """The proxy accepted; ``leftover`` are tunnel bytes read with its reply."""

    leftover: bytes


@dataclass(frozen=True)
class TunnelFailed:
    """The negotiation is over and failed with ``error``."""

    error: TunnelError


@dataclass(frozen=True)
class ComputeAnswer:
    """Call ``compute()`` in a worker thread (it may block on GSSAPI), then
    :meth:`ConnectNegotiation.answer` with what it returned. ``compute``
    touches only the authenticator, so a thread abandoned on a timeout
    changes nothing the driver still reads."""

    compute: Callable[[], str | ProxyAuthError]


Action = SendRequest | TunnelOpen | TunnelFailed | ComputeAnswer


@dataclass(frozen=True)
class ConnectAttempt:
    """One CONNECT sent and what came back.

    ``credentials_scheme`` is the scheme of the ``Proxy-Authorization`` sent
    (None: none sent). ``status`` is None when no complete reply arrived (then
    ``error`` says why). ``closed_after`` says the proxy would not take another
    request on this connection. ``received`` counts the reply's bytes and
    ``prefix`` keeps its first ones.
    """

    authority: str
    credentials_scheme: str | None
    new_connection: bool
    status: int | None = None
    reason: str = ""
    offered_schemes: tuple[str, ...] = ()
    closed_after: bool = False
    received: int = 0
    prefix: bytes = b""
    error: str | None = None


class ConnectNegotiation:
    """The CONNECT to ``host:port`` (wire form, see
    :func:`tunnelws._target.normalize_host`) and its authentication.

    ``credentials``, ``schemes`` and ``proxy_host`` configure the
    :class:`~tunnelws._auth.ProxyAuthenticator` (or pass ``authenticator``);
    ``headers`` are sent with every CONNECT after ``User-Agent``. ``trace``, if
    given, receives the curl-style lines of the exchange (credentials
    redacted). Raises :class:`~tunnelws.ProxyConfigError` for an unknown
    scheme name and :class:`ValueError` for an invalid header.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        credentials: Credentials | None = None,
        proxy_host: str = "",
        headers: Sequence[tuple[str, str]] = (),
        schemes: Sequence[str] | None = None,
        authenticator: ProxyAuthenticator | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.authority = format_authority(host, port)
        if authenticator is None:
            try:
                authenticator = ProxyAuthenticator(
                    credentials, authority=self.authority, proxy_host=proxy_host, schemes=schemes
                )
            except ValueError as exc:  # an unknown scheme name
                raise ProxyConfigError(str(exc)) from None
        self.authenticator = authenticator
        self.had_credentials = credentials is not None
        self._headers = [("User-Agent", USER_AGENT), *headers]
        self._trace = trace
        self.state = NegotiationState.AWAITING_REPLY
        self.attempts: list[ConnectAttempt] = []
        self.error: TunnelError | None = None
        self._parser = ConnectReplyParser()
        self._received = 0
        self._prefix = b""
        self._answering: tuple[bool, int] | None = None  # (reusable, notes before)
        self._first: SendRequest | None = self._request(
            authenticator.initial_authorization(), reconnect=False
        )

    def __repr__(self) -> str:
        return (
            f"ConnectNegotiation({self.authority!r}, state={self.state.name}, "
            f"attempts={len(self.attempts)})"
        )

    @property
    def reply(self) -> ProxyReply | None:
        """The last complete reply, if any."""
        return self._parser.reply

    def start(self) -> SendRequest:
        """The first CONNECT (call once)."""
        if self._first is None:
            raise RuntimeError("start() was already called")
        first, self._first = self._first, None
        return first

    def receive_data(self, data: bytes) -> Action | None:
        """Feed bytes from the proxy (``b""``: it closed the connection)."""
        if self.state is not NegotiationState.AWAITING_REPLY:
            raise RuntimeError(f"receive_data() in state {self.state.name}")
        self._received += len(data)
        if len(self._prefix) < _KEPT_PREFIX:
            self._prefix = (self._prefix + data)[:_KEPT_PREFIX]
        try:
            reply = self._parser.feed(data) if data else self._parser.feed_eof()
        except ProxyProtocolError as exc:
            self._record(None, closed_after=True, error=str(exc))
            return self._fail(exc)
        if reply is None:
            return None
        return self._on_reply(reply, self._parser.leftover)

    def connection_broken(self, reason: str) -> TunnelFailed:
        """The driver could not send or receive: the connection broke."""
        error = ProxyProtocolError(
            f"the connection to the proxy broke while negotiating the tunnel ({reason})"
        )
        self._record(None, closed_after=True, error=f"connection broken: {reason}")
        return self._fail(error)

    # -- internals -------------------------------------------------------------

    def _request(self, authorization: str | None, *, reconnect: bool) -> SendRequest:
        headers = list(self._headers)
        if authorization is not None:
            headers.append(("Proxy-Authorization", authorization))
        data = build_connect_request(self.host, self.port, headers=headers)
        trace_head(
            self._trace,
            ">",
            f"CONNECT {self.authority} HTTP/1.1",
            [("Host", self.authority), *headers],
        )
        scheme = authorization.split(" ", 1)[0] if authorization else None
        self.attempts.append(ConnectAttempt(self.authority, scheme, reconnect))
        self._parser = ConnectReplyParser()
        self._received = 0
        self._prefix = b""
        return SendRequest(data, reconnect)

    def _record(self, reply: ProxyReply | None, *, closed_after: bool, error: str | None) -> None:
        """Complete the current attempt's record with what came back."""
        last = self.attempts[-1]
        offered: tuple[str, ...] = ()
        if reply is not None:
            challenges = parse_challenges(reply.get_all("Proxy-Authenticate"))
            offered = tuple(dict.fromkeys(c.scheme for c in challenges))
        self.attempts[-1] = replace(
            last,
            status=None if reply is None else reply.status,
            reason="" if reply is None else reply.reason,
            offered_schemes=offered,
            closed_after=closed_after,
            received=self._received,
            prefix=self._prefix,
            error=error,
        )

    def _on_reply(self, reply: ProxyReply, leftover: bytes) -> Action:
        trace_head(
            self._trace,
            "<",
            f"HTTP/{reply.http_version} {reply.status} {reply.reason}",
            reply.headers,
        )
        # Bytes beyond a non-2xx reply mean the proxy is out of step with us:
        # a new connection is safer than reusing this one.
        reusable = reply.reusable and not leftover
        self._record(reply, closed_after=not reply.ok and not reusable, error=None)
        if reply.ok:
            self.state = NegotiationState.OPEN
            self._note(f"Tunnel to {self.authority} established")
            return TunnelOpen(leftover)
        if reply.status != 407:
            return self._fail(self._refusal(reply))
        authenticator = self.authenticator
        self.state = NegotiationState.ANSWERING
        self._answering = (reusable, len(authenticator.notes))
        compute = partial(self._compute, reply, reusable)
        if authenticator.may_block(reply):
            return ComputeAnswer(compute)
        return self.answer(compute())

    def _compute(self, reply: ProxyReply, reusable: bool) -> str | ProxyAuthError:
        try:
            # NTLM and Negotiate cannot move to a new connection mid-handshake:
            # respond() turns that into a clear error.
            return self.authenticator.respond(reply, connection_reusable=reusable)
        except ProxyAuthError as exc:
            return exc

    def answer(self, outcome: str | ProxyAuthError) -> SendRequest | TunnelFailed:
        """Continue after :class:`ComputeAnswer` with what ``compute`` returned."""
        if self.state is not NegotiationState.ANSWERING or self._answering is None:
            raise RuntimeError(f"answer() in state {self.state.name}")
        (reusable, noted), self._answering = self._answering, None
        self._notes_since(noted)
        if isinstance(outcome, ProxyAuthError):
            return self._fail(outcome)
        self.state = NegotiationState.AWAITING_REPLY
        authenticator = self.authenticator
        authorization = outcome
        step = " (a connection-bound handshake)" if authenticator.connection_bound else ""
        self._note(f"Answering the proxy's challenge with {authenticator.scheme_used}{step}")
        if not reusable:
            self._note("The proxy closed the connection after 407; retrying on a new one")
        return self._request(authorization, reconnect=not reusable)

    def _refusal(self, reply: ProxyReply) -> ProxyRefusedError:
        message = f"proxy refused the tunnel to {self.authority}: {reply.status} {reply.reason}"
        if reply.status == 403 and self.port != 443:
            message += " (many proxies allow CONNECT only to port 443: try wss:// on port 443)"
        return ProxyRefusedError(
            message,
            status=reply.status,
            reason=reply.reason,
            headers=reply.headers,
            body=reply.body,
        )

    def _fail(self, error: TunnelError) -> TunnelFailed:
        self.state = NegotiationState.FAILED
        self.error = error
        return TunnelFailed(error)

    def _notes_since(self, index: int) -> None:
        for note in self.authenticator.notes[index:]:
            self._note(note)

    def _note(self, line: str) -> None:
        if self._trace is not None:
            self._trace(f"* {line}")
