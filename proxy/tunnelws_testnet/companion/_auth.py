"""Server-side proxy authentication: Basic (RFC 7617), Digest (RFC 7616), and
NTLM / Negotiate (connection-bound; verified by pyspnego, see ``_ntlm``;
Negotiate takes NTLM inside SPNEGO, and Kerberos given a keytab).

Written independently of the tunnelws client's auth code on purpose, so the
two check each other. Pure: header values in, verdicts out. Digest nonces are
stateless (a timestamp signed with a per-proxy secret), so a client may answer
a challenge on a new connection (as it must after ``close_after_407``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._ntlm import NTLMAcceptor, NTLMSession

__all__ = [
    "AuthResult",
    "AuthScheme",
    "Authenticator",
    "DigestAlgorithm",
    "NTLMSession",
    "parse_auth_params",
]

AuthScheme = Literal["basic", "digest", "ntlm", "negotiate"]
_SCHEME_NAMES = {"basic": "Basic", "digest": "Digest", "ntlm": "NTLM", "negotiate": "Negotiate"}

DigestAlgorithm = Literal["MD5", "SHA-256"]
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}

# token68 or auth-param list; quoted strings may contain backslash escapes.
_PARAM = re.compile(
    r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(?:,|$)'
)


def parse_auth_params(text: str) -> dict[str, str]:
    """``k=v, k2="v 2"`` into a dict with lower-cased keys and unquoted values."""
    params: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _PARAM.match(text, position)
        if match is None or match.end() == position:
            raise ValueError("malformed auth-param list")
        value = match[2]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match[1].lower()] = value
        position = match.end()
    return params


@dataclass(frozen=True)
class AuthResult:
    """Outcome of checking one ``Proxy-Authorization`` header."""

    ok: bool
    user: str | None = None
    # Why a credential was refused: for the log, never containing secrets.
    reason: str = ""
    stale: bool = False
    # NTLM messages decoded from this header and the challenge it produced
    # (type, flags, names; never response bytes), for the log.
    messages: tuple[dict[str, Any], ...] = ()
    # For NTLM and Negotiate: what authenticated the user, "ntlm" or "kerberos".
    mechanism: str | None = None


class Authenticator:
    """Checks credentials for one user and builds the matching challenge."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        scheme: AuthScheme = "basic",
        realm: str = "tunnelws",
        digest_algorithm: DigestAlgorithm = "MD5",
        nonce_lifetime: float = 300.0,
        keytab: Path | None = None,
    ) -> None:
        if scheme not in _SCHEME_NAMES:
            raise ValueError(f"unknown auth scheme {scheme!r}")
        if digest_algorithm not in _HASHES:
            raise ValueError(f"unsupported digest algorithm {digest_algorithm!r}")
        if '"' in realm or "\\" in realm:
            raise ValueError("realm must not contain quotes or backslashes")
        if keytab is not None and scheme != "negotiate":
            raise ValueError("a keytab is for the negotiate scheme (Kerberos)")
        self.user = user
        self._password = password
        self.scheme = scheme
        self.realm = realm
        self.digest_algorithm = digest_algorithm
        self.nonce_lifetime = nonce_lifetime
        self._secret = secrets.token_bytes(32)
        self._opaque = secrets.token_hex(8)
        self._ntlm = (
            NTLMAcceptor(user, password, protocol=scheme, keytab=keytab)
            if scheme in ("ntlm", "negotiate")
            else None
        )

    @property
    def connection_bound(self) -> bool:
        """NTLM and Negotiate authenticate a connection, not a request."""
        return self._ntlm is not None

    def new_session(self) -> NTLMSession:
        """Per-connection state; pass it to :meth:`verify` and :meth:`challenge`."""
        return NTLMSession()

    def close(self) -> None:
        if self._ntlm is not None:
            self._ntlm.close()

    def __repr__(self) -> str:
        return f"Authenticator(user={self.user!r}, password='***', scheme={self.scheme!r})"

    # -- challenges ---------------------------------------------------------

    def challenge(self, *, stale: bool = False, session: NTLMSession | None = None) -> str:
        """The ``Proxy-Authenticate`` value for a 407 (for NTLM/Negotiate: the
        pending challenge token of ``session``, or the bare scheme name)."""
        if self._ntlm is not None:
            name = _SCHEME_NAMES[self.scheme]
            token = session.pending_token if session is not None else None
            if session is not None:
                session.pending_token = None
            return f"{name} {base64.b64encode(token).decode()}" if token else name
        if self.scheme == "basic":
            return f'Basic realm="{self.realm}", charset="UTF-8"'
        parts = [
            f'realm="{self.realm}"',
            'qop="auth"',
            f"algorithm={self.digest_algorithm}",
            f'nonce="{self._new_nonce()}"',
            f'opaque="{self._opaque}"',
        ]
        if stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)

    def _new_nonce(self) -> str:
        stamp = f"{time.time():.6f}"
        return base64.b64encode(f"{stamp}:{self._sign(stamp)}".encode()).decode()

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()

    def _nonce_state(self, nonce: str) -> Literal["fresh", "stale", "bad"]:
        try:
            stamp, _, signature = base64.b64decode(nonce, validate=True).decode().partition(":")
            issued = float(stamp)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return "bad"
        if not hmac.compare_digest(signature, self._sign(stamp)):
            return "bad"
        return "fresh" if time.time() - issued <= self.nonce_lifetime else "stale"

    # -- verification -------------------------------------------------------

    def verify(
        self, method: str, uri: str, header: str | None, session: NTLMSession | None = None
    ) -> AuthResult:
        """Check a ``Proxy-Authorization`` value for a request ``method uri``.

        NTLM and Negotiate need the connection's ``session``: a type 1
        message yields a not-ok result with the challenge left in the session.
        """
        if header is None:
            return AuthResult(False, reason="no credentials")
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() != self.scheme:
            return AuthResult(False, reason=f"scheme {scheme[:16]!r} not accepted")
        if self._ntlm is not None:
            return self._verify_ntlm(rest.strip(), session or NTLMSession())
        if self.scheme == "basic":
            return self._verify_basic(rest.strip())
        return self._verify_digest(method, uri, rest)

    def _verify_ntlm(self, token: str, session: NTLMSession) -> AuthResult:
        assert self._ntlm is not None
        try:
            raw = base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error):
            return AuthResult(False, reason=f"malformed {self.scheme} token")
        seen = len(session.messages)
        user, reason = self._ntlm.accept(session, raw)
        messages = tuple(session.messages[seen:])
        if user is None:
            return AuthResult(False, reason=reason, messages=messages)
        return AuthResult(True, user, messages=messages, mechanism=session.mechanism)

    def _verify_basic(self, token: str) -> AuthResult:
        try:
            raw = base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error):
            return AuthResult(False, reason="malformed Basic token")
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = raw.decode("latin-1")
        user, colon, password = decoded.partition(":")
        if not colon:
            return AuthResult(False, reason="Basic token without a colon")
        good = hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
            password.encode(), self._password.encode()
        )
        return AuthResult(good, user if good else None, "" if good else "wrong credentials")

    def _verify_digest(self, method: str, uri: str, rest: str) -> AuthResult:
        try:
            params = parse_auth_params(rest)
        except ValueError:
            return AuthResult(False, reason="malformed Digest parameters")
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        missing = [name for name in required if name not in params]
        if missing:
            return AuthResult(False, reason=f"Digest response lacks {', '.join(missing)}")
        algorithm = params.get("algorithm", "MD5")
        if algorithm.upper() != self.digest_algorithm:
            return AuthResult(False, reason=f"algorithm {algorithm[:16]!r} not offered")
        if params["qop"] != "auth":
            return AuthResult(False, reason="qop must be auth")
        if params["realm"] != self.realm:
            return AuthResult(False, reason="wrong realm")
        if params["uri"] != uri:
            return AuthResult(False, reason="Digest uri does not match the request target")
        if params.get("opaque", self._opaque) != self._opaque:
            return AuthResult(False, reason="wrong opaque")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", params["nc"]):
            return AuthResult(False, reason="malformed nc")
        nonce_state = self._nonce_state(params["nonce"])
        if nonce_state == "bad":
            return AuthResult(False, reason="nonce not issued by this proxy")
        expected = self.digest_response(
            params["username"], method, uri, params["nonce"], params["nc"], params["cnonce"]
        )
        good = hmac.compare_digest(expected, params["response"].lower()) and hmac.compare_digest(
            params["username"].encode(), self.user.encode()
        )
        if not good:
            return AuthResult(False, reason="wrong credentials")
        if nonce_state == "stale":
            # Right password, old nonce: RFC 7616 says challenge again with stale=true.
            return AuthResult(False, reason="stale nonce", stale=True)
        return AuthResult(True, self.user)

    def digest_response(
        self, user: str, method: str, uri: str, nonce: str, nc: str, cnonce: str
    ) -> str:
        """The expected ``response`` value for qop=auth (RFC 7616 3.4.1)."""
        hash_ = _HASHES[self.digest_algorithm]

        def h(text: str) -> str:
            return hash_(text.encode("utf-8")).hexdigest()

        ha1 = h(f"{user}:{self.realm}:{self._password}")
        ha2 = h(f"{method}:{uri}")
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
