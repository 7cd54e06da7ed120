"""Server side of NTLM and Negotiate (RFC 4559) for the companion proxy.

Verification is pyspnego's acceptor, a real implementation independent of
the tunnelws client code. pyspnego reads the accepted NTLM credentials from
the file named by ``NTLM_USER_FILE``; each :class:`NTLMAcceptor` writes its
own file and points the variable at it only while pyspnego runs
(synchronously, so no other trio task can observe it), which lets several
proxies with different users share a process. Negotiate also accepts
Kerberos when python-gssapi is installed: GSSAPI takes the service keys from
``KRB5_KTNAME``, set the same way from the acceptor's ``keytab`` (without
one, whatever the environment names is used).

:func:`describe_ntlm_message` decodes the NTLMSSP header fields of each
message (type, flags, names) for the log, so tests can check the exchange
message by message. It never returns response or session-key bytes.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NTLMAcceptor", "NTLMSession", "describe_ntlm_message"]

SIGNATURE = b"NTLMSSP\x00"
_UNICODE = 0x00000001


def _field(message: bytes, offset: int) -> bytes:
    """A security buffer (length, max length, offset) at ``offset``."""
    length, _max, start = struct.unpack_from("<HHI", message, offset)
    return message[start : start + length]


def _text(raw: bytes, flags: int) -> str:
    return raw.decode("utf-16-le" if flags & _UNICODE else "latin-1", errors="replace")


def describe_ntlm_message(token: bytes) -> dict[str, Any] | None:
    """The NTLMSSP message inside ``token`` (raw or SPNEGO-wrapped), decoded.

    Returns ``{"type": 1|2|3, "flags": "0x...", ...}`` with, for type 3, the
    user, domain and workstation names and the NT response length (24 means
    NTLMv1, more means NTLMv2), or None when there is no NTLM message.
    """
    start = token.find(SIGNATURE)
    if start < 0:
        return None
    message = token[start:]
    try:
        (kind,) = struct.unpack_from("<I", message, 8)
        if kind == 1:
            (flags,) = struct.unpack_from("<I", message, 12)
            return {"type": 1, "flags": f"0x{flags:08x}"}
        if kind == 2:
            (flags,) = struct.unpack_from("<I", message, 20)
            return {
                "type": 2,
                "flags": f"0x{flags:08x}",
                "target": _text(_field(message, 12), flags),
            }
        if kind == 3:
            (flags,) = struct.unpack_from("<I", message, 60)
            return {
                "type": 3,
                "flags": f"0x{flags:08x}",
                "domain": _text(_field(message, 28), flags),
                "user": _text(_field(message, 36), flags),
                "workstation": _text(_field(message, 44), flags),
                "nt_response_bytes": len(_field(message, 20)),
            }
    except struct.error:
        return {"type": "malformed"}
    return {"type": kind}


@dataclass
class NTLMSession:
    """Per-connection state: NTLM authenticates a connection, not a request."""

    context: Any = None  # the pyspnego acceptor, once a first token arrived
    pending_token: bytes | None = None  # the challenge to send with the next 407
    # What authenticated the connection: "ntlm" or "kerberos" (pyspnego's name).
    mechanism: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


class NTLMAcceptor:
    """Accepts one user's NTLM credentials, raw or inside SPNEGO (Negotiate);
    for Negotiate also any Kerberos ticket for a service key in ``keytab``."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        protocol: str,
        keytab: str | os.PathLike[str] | None = None,
    ) -> None:
        if protocol not in ("ntlm", "negotiate"):
            raise ValueError(f"unknown protocol {protocol!r}")
        domain, backslash, name = user.partition("\\")
        if not backslash:
            domain, name = "", user
        if ":" in name or ":" in domain or ":" in password or "\n" in password:
            # pyspnego's credential file is colon- and line-separated.
            raise ValueError("NTLM user names and passwords must not contain ':' or newlines")
        self.protocol = protocol
        self._environment = {"NTLM_USER_FILE": ""}
        if keytab is not None:
            self._environment["KRB5_KTNAME"] = f"FILE:{os.fspath(keytab)}"
        self._directory = tempfile.TemporaryDirectory(prefix="tunnelws-ntlm-")
        user_file = os.path.join(self._directory.name, "ntlm-users")
        with open(user_file, "w", encoding="utf-8") as handle:
            handle.write(f"{domain}:{name}:{password}\n")
        self._environment["NTLM_USER_FILE"] = user_file

    @contextmanager
    def _acceptor_environment(self) -> Iterator[None]:
        previous = {name: os.environ.get(name) for name in self._environment}
        os.environ.update(self._environment)
        try:
            yield
        finally:
            for name, value in previous.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value

    def accept(self, session: NTLMSession, token: bytes) -> tuple[str | None, str]:
        """Feed one client token. Returns ``(user, "")`` when authenticated,
        else ``(None, reason)``; a challenge to send is left in
        ``session.pending_token``."""
        import spnego
        import spnego.exceptions

        info = describe_ntlm_message(token)
        session.messages.append(info or {"type": "not-ntlm"})
        first = info is not None and info.get("type") == 1
        if info is None and self.protocol == "negotiate" and session.context is None:
            first = True  # a SPNEGO token without NTLM inside (Kerberos): pyspnego decides
        with self._acceptor_environment():
            try:
                if first or session.context is None:
                    if not first:
                        return (
                            None,
                            "NTLM authenticate message without a challenge on this connection",
                        )
                    session.context = spnego.server(protocol=self.protocol)
                reply = session.context.step(token)
            except spnego.exceptions.SpnegoError as exc:
                session.context = None
                return None, f"rejected: {str(exc).splitlines()[0][:160]}"
        if session.context.complete:
            user = str(session.context.client_principal or "")
            session.mechanism = str(session.context.negotiated_protocol or "") or None
            session.context = None
            return user or "?", ""
        session.pending_token = reply
        described = describe_ntlm_message(reply or b"")
        if described is not None:
            session.messages.append(described)
        return None, "challenge sent"

    def close(self) -> None:
        self._directory.cleanup()
