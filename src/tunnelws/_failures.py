"""Pure readings of OS and TLS failures, shared by the transport (for its error
messages) and ``check`` (for its diagnoses), so both say the same thing."""

from __future__ import annotations

import errno
import os
import ssl
from dataclasses import dataclass
from typing import Literal

__all__ = ["ConnectFailure", "TLSFailure", "classify_connect_failure", "read_tls_failure"]

ConnectOutcome = Literal["refused", "unreachable", "error"]


@dataclass(frozen=True)
class ConnectFailure:
    """Why a TCP connect failed: ``outcome`` for rules, ``reason`` for people."""

    outcome: ConnectOutcome
    reason: str


def classify_connect_failure(exc: OSError) -> ConnectFailure:
    """Read a failed connect, including the per-address errors trio keeps
    in an exception group under "all attempts to connect ... failed"."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        seen.append(error)
        # Duck-typed: Python 3.10 has no BaseExceptionGroup builtin.
        pending.extend(getattr(error, "exceptions", ()))
        if error.__cause__ is not None:
            pending.append(error.__cause__)
    attempts = [e for e in seen[1:] if isinstance(e, OSError) and e.errno]
    reasons = dict.fromkeys(os.strerror(e.errno) for e in attempts if e.errno)
    reason = ", ".join(reasons) or exc.strerror or str(exc)
    codes = {getattr(e, "errno", None) for e in seen}
    if errno.ECONNREFUSED in codes:
        return ConnectFailure("refused", reason)
    if codes & {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}:
        return ConnectFailure("unreachable", reason)
    return ConnectFailure("error", reason)


@dataclass(frozen=True)
class TLSFailure:
    """What broke a TLS handshake: a certificate that did not verify
    (``verify_error``), another TLS error (``handshake_error``), or neither
    (the peer closed the connection)."""

    verify_error: str | None = None
    handshake_error: str | None = None

    def describe(self, peer: str, server_hostname: str) -> str:
        """The sentence the error message and ``check`` show."""
        if self.verify_error is not None:
            message = (
                f"TLS certificate of the {peer} {server_hostname} could not be verified: "
                f"{self.verify_error}"
            )
            if peer == "origin":
                message += (
                    " (if a proxy intercepts TLS, trust its CA: --cacert FILE or ssl_context=)"
                )
            return message
        if self.handshake_error is not None:
            return f"TLS handshake with the {peer} {server_hostname} failed: {self.handshake_error}"
        return f"the {peer} {server_hostname} closed the connection during the TLS handshake"


def read_tls_failure(exc: BaseException) -> TLSFailure:
    """Find the SSL error in ``exc``'s cause chain."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TLSFailure(verify_error=str(cause.verify_message))
        if isinstance(cause, ssl.SSLError):
            return TLSFailure(handshake_error=str(cause.reason or cause))
        cause = cause.__cause__ or cause.__context__
    return TLSFailure()
