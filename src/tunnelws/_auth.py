"""Proxy authentication, Sans-IO: answer 407 challenges (parsed by ``_grammar``).

Client side only (the companion test proxy has its own, independent server
side, so each checks the other). Supported: Basic (RFC 7617), Digest
(RFC 7616: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256 and its -sess
variant where the local OpenSSL has it; qop=auth, qop=auth-int and the legacy
RFC 2069 form without qop; userhash; ``username*`` for non-ASCII names), and
NTLM and Negotiate (RFC 4559) through pyspnego, which computes the tokens
(Kerberos inside Negotiate needs the ``tunnelws[kerberos]`` extra: pyspnego
reaches Kerberos through python-gssapi; without it Negotiate carries NTLM).

:class:`ProxyAuthenticator` is the per-attempt state machine. It allows at
most two *authentication attempts* per tunnel: the optional preemptive Basic
and one answer to a challenge. For Basic and Digest an attempt is one CONNECT;
for NTLM and Negotiate it is a handshake of two CONNECTs (token, then the
answer to the proxy's challenge token) that must share one connection, since
those schemes authenticate the connection rather than the request. A hard cap
of :data:`MAX_CONNECTS` CONNECTs per tunnel holds whatever the proxy sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from ._connect import ProxyReply
from ._errors import ProxyAuthError
from ._grammar import Challenge, parse_challenges, quoted_string, split_list

__all__ = [
    "MAX_CONNECTS",
    "SCHEME_PREFERENCE",
    "Challenge",
    "Credentials",
    "ProxyAuthenticator",
    "SecurityContext",
    "basic_authorization",
    "digest_response",
    "parse_challenges",
]

#: Schemes tunnelws answers, strongest first: the order used when a proxy
#: offers several (Negotiate moves behind NTLM when no Kerberos ticket exists).
SCHEME_PREFERENCE = ("Negotiate", "NTLM", "Digest", "Basic")
SUPPORTED_SCHEMES = ("Basic", "Digest", "NTLM", "Negotiate")
#: Hard cap on CONNECT requests per tunnel: preemptive Basic, then a
#: connection-bound handshake (2), plus one spare leg for a Negotiate exchange
#: that needs it. Reaching it is an error, never a loop.
MAX_CONNECTS = 4
_CONNECTION_BOUND = ("ntlm", "negotiate")


@dataclass(frozen=True, repr=False)
class Credentials:
    """A proxy user name and password. The password never shows in reprs."""

    username: str
    password: str

    def __post_init__(self) -> None:
        if ":" in self.username:
            # Basic joins user and password with ":"; the proxy would split
            # such a name in the wrong place.
            raise ValueError(
                f"proxy user name {self.username!r} contains ':', which Basic authentication "
                "cannot carry"
            )

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    __str__ = __repr__


# -- computing answers ----------------------------------------------------------


def basic_authorization(credentials: Credentials) -> str:
    """The ``Proxy-Authorization`` value for Basic (UTF-8, as RFC 7617 allows)."""
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _hash_function(algorithm: str) -> Callable[[bytes], str] | None:
    """Hex digest function for a Digest algorithm name (any case, -sess or not)."""
    base = algorithm.upper().removesuffix("-SESS")
    if base == "MD5":
        return lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest()
    if base == "SHA-256":
        return lambda data: hashlib.sha256(data).hexdigest()
    if base == "SHA-512-256":
        try:
            hashlib.new("sha512_256")
        except ValueError:  # OpenSSL built without it
            return None
        return lambda data: hashlib.new("sha512_256", data).hexdigest()
    return None


def _wire(text: str) -> bytes:
    """The bytes a proxy-supplied value had on the wire.

    The reply parser decodes header values as ISO-8859-1, so encoding back
    gives the proxy's exact bytes (a UTF-8 realm included); text that never
    came from the wire and is not ISO-8859-1 is taken as UTF-8.
    """
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def digest_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    cnonce: str = "",
    nc: str = "00000001",
    qop: str | None = "auth",
) -> str:
    """The ``response`` value of RFC 7616 section 3.4.1.

    ``qop`` is ``"auth"``, ``"auth-int"`` (the entity body is empty, as for a
    CONNECT) or None for the RFC 2069 form. The user name and password are
    hashed as UTF-8 (RFC 7616 ``charset=UTF-8``), values taken from the
    challenge as the bytes the proxy sent (see :func:`_wire`). Raises
    :class:`ValueError` for an unsupported algorithm.
    """
    hash_hex = _hash_function(algorithm)
    if hash_hex is None:
        raise ValueError(f"unsupported Digest algorithm {algorithm!r}")
    ha1 = hash_hex(b"%s:%s:%s" % (username.encode(), _wire(realm), password.encode()))
    if algorithm.upper().endswith("-SESS"):
        ha1 = hash_hex(b"%s:%s:%s" % (ha1.encode(), _wire(nonce), _wire(cnonce)))
    a2 = b"%s:%s" % (_wire(method), _wire(uri))
    if qop == "auth-int":
        a2 += b":" + hash_hex(b"").encode()
    ha2 = hash_hex(a2).encode()
    if qop is None:
        return hash_hex(b"%s:%s:%s" % (ha1.encode(), _wire(nonce), ha2))
    fields = (ha1.encode(), _wire(nonce), _wire(nc), _wire(cnonce), _wire(qop), ha2)
    return hash_hex(b":".join(fields))


def digest_userhash(algorithm: str, username: str, realm: str) -> str:
    """The hashed user name of RFC 7616 3.4.4 (``userhash=true``)."""
    hash_hex = _hash_function(algorithm)
    if hash_hex is None:
        raise ValueError(f"unsupported Digest algorithm {algorithm!r}")
    return hash_hex(b"%s:%s" % (username.encode(), _wire(realm)))


# Preference when a proxy offers several Digest challenges: strongest first.
_ALGORITHM_RANK = {
    "SHA-512-256": 0,
    "SHA-512-256-SESS": 1,
    "SHA-256": 2,
    "SHA-256-SESS": 3,
    "MD5": 4,
    "MD5-SESS": 5,
}
_ATTR_CHARS = "!#$&+^`|"  # RFC 8187 attr-char beyond what quote() keeps


@dataclass(frozen=True)
class _DigestPlan:
    """A Digest challenge we can answer, with the choices already made."""

    challenge: Challenge
    algorithm: str  # as sent by the proxy ("" when it sent none: MD5)
    qop: str | None

    @property
    def rank(self) -> int:
        return _ALGORITHM_RANK[(self.algorithm or "MD5").upper()]


def _plan_digest(challenge: Challenge) -> _DigestPlan | None:
    params = challenge.params
    if "nonce" not in params or "realm" not in params:
        return None
    algorithm = params.get("algorithm", "")
    effective = algorithm or "MD5"  # RFC 7616: no algorithm parameter means MD5
    if effective.upper() not in _ALGORITHM_RANK or _hash_function(effective) is None:
        return None
    if "qop" in params:
        offered = {option.lower() for option in split_list(params["qop"])}
        qop = "auth" if "auth" in offered else "auth-int" if "auth-int" in offered else None
        if qop is None:
            return None
    elif algorithm.upper().endswith("-SESS"):
        return None  # -sess needs a cnonce, which only the qop form carries
    else:
        qop = None
    return _DigestPlan(challenge, algorithm, qop)


def _needs_extended_username(username: str) -> bool:
    return not username.isascii() or any(ord(char) < 0x20 or char == "\x7f" for char in username)


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


def _secret_cnonce() -> str:
    return secrets.token_hex(16)


class SecurityContext(Protocol):
    """The part of a pyspnego client context tunnelws uses (one handshake)."""

    def step(self, in_token: bytes | None = None) -> bytes | None: ...


#: Makes a security context: ``(credentials or None, protocol, proxy host)``,
#: protocol ``"ntlm"`` or ``"negotiate"``. ``None`` credentials mean "whatever
#: the environment offers" (a Kerberos ticket, pyspnego's ``NTLM_USER_FILE``).
ContextFactory = Callable[[Credentials | None, str, str], SecurityContext]


def spnego_context(credentials: Credentials | None, protocol: str, host: str) -> SecurityContext:
    """A pyspnego client context for ``HTTP@host`` (raises if unavailable)."""
    import spnego  # deferred: only NTLM/Negotiate proxies need it

    username = credentials.username if credentials is not None else None
    password = credentials.password if credentials is not None else None
    context: SecurityContext = spnego.client(
        username, password, hostname=host or "unspecified", service="HTTP", protocol=protocol
    )
    return context


def kerberos_available(credentials: Credentials | None, host: str) -> bool:
    """True when a Kerberos token for ``HTTP@host`` can be made from a ticket
    already in the cache (``tunnelws[kerberos]`` installed, ``kinit`` done;
    the cache is the one ``KRB5CCNAME`` names, or the system default).

    The password is deliberately not used: getting a ticket with it would mean
    a KDC round trip just to choose a scheme. Without python-gssapi this
    returns False at once; with it, making the token may ask the KDC for a
    service ticket (a blocking call, as in every Kerberos client). ``host``
    must be the name the proxy's ``HTTP/<host>`` principal has, not an address.
    """
    del credentials  # the ticket cache decides, see above
    try:
        import spnego

        spnego.client(hostname=host or "unspecified", service="HTTP", protocol="kerberos").step()
    except Exception:  # ImportError without gssapi, SpnegoError without a ticket
        return False
    return True


@dataclass
class _Handshake:
    """A connection-bound exchange (NTLM or Negotiate) in progress."""

    scheme: str  # as the proxy spelled it
    context: SecurityContext
    legs: int = 1  # tokens sent so far


class ProxyAuthenticator:
    """Per tunnel attempt. Never lets a caller send more than
    :data:`MAX_CONNECTS` CONNECTs, nor more than two authentication attempts.

    Use: send the first CONNECT with :meth:`initial_authorization` (if not
    None) as ``Proxy-Authorization``; on a 407, call :meth:`respond` and send
    the next CONNECT with its result; when :attr:`connection_bound` is true
    that CONNECT must go on the same connection. :meth:`respond` raises
    :class:`~tunnelws.ProxyAuthError` instead of ever allowing a loop.

    ``authority`` is the CONNECT target (``host:port``), the Digest ``uri``
    (for a request forwarded in absolute form: its request target, with
    ``method`` its method);
    ``proxy_host`` names the proxy for NTLM/Negotiate (the ``HTTP@host``
    service). ``preemptive_basic=False`` waits for a challenge before sending
    Basic credentials (useful to keep a password off a Digest-only proxy's
    wire). ``schemes`` restricts and orders the schemes tried (default
    :data:`SCHEME_PREFERENCE`); ``context_factory`` makes NTLM/Negotiate
    contexts (default pyspnego).
    """

    def __init__(
        self,
        credentials: Credentials | None,
        *,
        authority: str,
        method: str = "CONNECT",
        proxy_host: str = "",
        cnonce_factory: Callable[[], str] = _secret_cnonce,
        preemptive_basic: bool = True,
        schemes: Sequence[str] | None = None,
        context_factory: ContextFactory = spnego_context,
        kerberos_check: Callable[[Credentials | None, str], bool] = kerberos_available,
    ) -> None:
        self._credentials = credentials
        self._authority = authority
        self._method = method
        self._proxy_host = proxy_host
        self._cnonce_factory = cnonce_factory
        self._schemes = _normalise_schemes(schemes)
        self._preemptive_basic = preemptive_basic and "basic" in self._schemes
        self._context_factory = context_factory
        self._kerberos_check = kerberos_check
        self._sent: str | None = None  # scheme of the last Proxy-Authorization sent
        self._answered = False
        self._handshake: _Handshake | None = None
        self._connects = 1  # the first CONNECT is always sent
        self.notes: list[str] = []  # why a scheme was skipped, for the trace

    def __repr__(self) -> str:
        return (
            f"ProxyAuthenticator({self._credentials!r}, authority={self._authority!r}, "
            f"scheme_used={self._sent!r})"
        )

    @property
    def scheme_used(self) -> str | None:
        """The scheme of the last credentials sent (``"Basic"``, ``"Digest"``,
        ``"NTLM"``, ``"Negotiate"``), else None."""
        return self._sent

    @property
    def connection_bound(self) -> bool:
        """True while an NTLM/Negotiate handshake needs the current connection."""
        return self._handshake is not None

    @property
    def challenge_certain(self) -> bool:
        """True when the last answer was NTLM's first message, which the
        proxy always answers with a 407 carrying its challenge: a request
        body need not go with it (curl sends none either), and a proxy that
        would close the connection after a 407 with a body keeps it."""
        handshake = self._handshake
        return handshake is not None and handshake.scheme.lower() == "ntlm" and handshake.legs == 1

    def initial_authorization(self) -> str | None:
        """``Proxy-Authorization`` for the first CONNECT: preemptive Basic when
        credentials are known (proxies such as pproxy never send a challenge
        worth waiting for), else None. A ``DOMAIN\\user`` name marks Windows
        credentials, meant for NTLM/Negotiate: no Basic is sent for those, so
        the password never crosses the wire in clear to an NTLM proxy."""
        if self._credentials is None or not self._preemptive_basic or self._sent is not None:
            return None
        if "\\" in self._credentials.username:
            return None
        self._sent = "Basic"
        return basic_authorization(self._credentials)

    def respond(self, reply: ProxyReply, *, connection_reusable: bool = True) -> str:
        """``Proxy-Authorization`` for the next CONNECT, answering a 407.

        ``connection_reusable`` says whether the connection that carried
        ``reply`` stays open; an NTLM/Negotiate challenge on a connection the
        proxy closes cannot be answered (the answer is only valid on that
        connection), which is reported instead of retried.

        Raises :class:`~tunnelws.ProxyAuthError` (carrying the reply and the
        offered schemes) when there is nothing sensible to send: no
        credentials, credentials already rejected, no supported scheme, a
        broken handshake, or the CONNECT cap reached.
        """
        if reply.status != 407:
            raise ValueError(f"respond() needs a 407 reply, not {reply.status}")
        challenges = parse_challenges(reply.get_all("Proxy-Authenticate"))
        offered = list(dict.fromkeys(challenge.scheme for challenge in challenges))
        if self._connects >= MAX_CONNECTS:
            raise self._error(
                reply,
                offered,
                f"giving up after {self._connects} CONNECTs: the proxy keeps answering 407 "
                f"({_describe(reply, offered)})",
            )
        if self._handshake is not None:
            answer = self._continue_handshake(
                self._handshake, reply, challenges, offered, connection_reusable
            )
        else:
            answer = self._start_attempt(reply, challenges, offered)
        self._connects += 1
        return answer

    def may_block(self, reply: ProxyReply) -> bool:
        """Whether :meth:`respond` to ``reply`` may call pyspnego/GSSAPI (an
        NTLM or Negotiate context, the Kerberos ticket check), which can wait
        for a Kerberos KDC: the driver then runs it in a worker thread."""
        if self._handshake is not None:
            return True
        if self._answered or self._connects >= MAX_CONNECTS:
            return False  # respond() fails without touching a context
        offered = {c.scheme.lower() for c in parse_challenges(reply.get_all("Proxy-Authenticate"))}
        return any(s in offered for s in _CONNECTION_BOUND if s in self._schemes)

    # -- a new attempt -------------------------------------------------------

    def _start_attempt(
        self, reply: ProxyReply, challenges: list[Challenge], offered: list[str]
    ) -> str:
        credentials = self._credentials
        if self._answered:
            stale = any(
                _is_true(c.params.get("stale")) for c in challenges if c.scheme.lower() == "digest"
            )
            hint = "; the proxy reported the nonce as stale" if stale else ""
            raise self._error(
                reply,
                offered,
                f"proxy rejected the {self._sent} credentials{_for_user(credentials)} "
                f"({_describe(reply, offered)}){hint}",
            )
        self._answered = True

        for scheme in self._preference(challenges):
            if scheme in _CONNECTION_BOUND:
                answer = self._start_handshake(scheme, challenges)
                if answer is not None:
                    return answer
                continue
            if credentials is None:
                continue
            if scheme == "digest":
                plans = [
                    plan
                    for plan in (
                        _plan_digest(c) for c in challenges if c.scheme.lower() == "digest"
                    )
                    if plan is not None
                ]
                if plans:
                    best = min(plans, key=lambda plan: plan.rank)  # min keeps the first of equals
                    self._sent = "Digest"
                    return self._digest_authorization(best, credentials)
            elif scheme == "basic":
                if self._sent == "Basic":
                    raise self._error(
                        reply,
                        offered,
                        f"proxy rejected the Basic credentials{_for_user(credentials)} "
                        f"({_describe(reply, offered)})",
                    )
                self._sent = "Basic"
                return basic_authorization(credentials)
        raise self._error(reply, offered, self._nothing_to_send(reply, challenges, offered))

    def _preference(self, challenges: list[Challenge]) -> list[str]:
        """Offered schemes we may use, lower case, in the order to try them."""
        offered = {c.scheme.lower() for c in challenges}
        order = [scheme for scheme in self._schemes if scheme in offered]
        # Negotiate without a Kerberos ticket would only wrap NTLM in SPNEGO;
        # plain NTLM is the better-supported form of the same thing.
        if (
            "negotiate" in order
            and "ntlm" in order
            and order.index("negotiate") < order.index("ntlm")
            and not self._kerberos_check(self._credentials, self._proxy_host)
        ):
            order.remove("negotiate")
            order.insert(order.index("ntlm") + 1, "negotiate")
            self.notes.append("no Kerberos ticket: NTLM preferred over Negotiate")
        return order

    def _start_handshake(self, scheme: str, challenges: list[Challenge]) -> str | None:
        spelled = next(c.scheme for c in challenges if c.scheme.lower() == scheme)
        try:
            context = self._context_factory(self._credentials, scheme, self._proxy_host)
            token = context.step()
        except Exception as exc:  # ImportError, SpnegoError: this scheme is not usable here
            self.notes.append(f"{spelled} not usable: {_safe_reason(exc)}")
            return None
        if not token:
            self.notes.append(f"{spelled} not usable: no initial token")
            return None
        self._handshake = _Handshake(spelled, context)
        self._sent = spelled
        return f"{spelled} {base64.b64encode(token).decode('ascii')}"

    # -- continuing NTLM / Negotiate ------------------------------------------

    def _continue_handshake(
        self,
        handshake: _Handshake,
        reply: ProxyReply,
        challenges: list[Challenge],
        offered: list[str],
        connection_reusable: bool,
    ) -> str:
        scheme = handshake.scheme
        self._handshake = None  # whatever happens next, this leg ends here
        token68 = next(
            (c.token68 for c in challenges if c.scheme.lower() == scheme.lower() and c.token68),
            None,
        )
        if token68 is None:
            # A bare "NTLM" challenge after our token: the proxy said no.
            what = "credentials" if handshake.legs > 1 else "initial token"
            raise self._error(
                reply,
                offered,
                f"proxy rejected the {scheme} {what}{_for_user(self._credentials)} "
                f"({_describe(reply, offered)})",
            )
        if not connection_reusable:
            raise self._error(
                reply,
                offered,
                f"proxy closed the connection after its {scheme} challenge; {scheme} "
                "authenticates one connection, so the answer cannot be sent on a new one "
                "(the proxy must keep the connection open: check its keep-alive settings, "
                "or use Basic/Digest)",
            )
        try:
            token = handshake.context.step(base64.b64decode(token68, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise self._error(
                reply, offered, f"proxy sent a malformed {scheme} challenge token: {exc}"
            ) from None
        except Exception as exc:  # SpnegoError: a challenge pyspnego cannot answer
            raise self._error(
                reply,
                offered,
                f"cannot answer the proxy's {scheme} challenge: {_safe_reason(exc)}",
            ) from None
        if not token:
            raise self._error(
                reply,
                offered,
                f"proxy rejected the {scheme} credentials{_for_user(self._credentials)} "
                f"({_describe(reply, offered)})",
            )
        self._handshake = _Handshake(scheme, handshake.context, handshake.legs + 1)
        return f"{scheme} {base64.b64encode(token).decode('ascii')}"

    def _nothing_to_send(
        self, reply: ProxyReply, challenges: list[Challenge], offered: list[str]
    ) -> str:
        if not challenges:
            return "proxy answered 407 without a usable Proxy-Authenticate challenge"
        offered_lower = {scheme.lower() for scheme in offered}
        usable = [s for s in self._schemes if s in offered_lower]
        if self._credentials is None and usable:
            notes = f" ({'; '.join(self.notes)})" if self.notes else ""
            kerberos = (
                ", or get a Kerberos ticket with kinit (needs tunnelws[kerberos])"
                if "negotiate" in usable
                else ""
            )
            return (
                f"proxy requires authentication ({_describe(reply, offered)}) but no proxy "
                "credentials were given; put them in the proxy URL "
                "(http://USER:PASSWORD@HOST:PORT, percent-encoding special characters) "
                f"or pass proxy_auth=(USER, PASSWORD){kerberos}{notes}"
            )
        unusable_digest = [
            c.params.get("algorithm", "MD5") for c in challenges if c.scheme.lower() == "digest"
        ]
        detail = (
            f" (Digest offered only with algorithm {', '.join(unusable_digest)} or "
            "without realm/nonce)"
            if unusable_digest and "digest" in self._schemes
            else ""
        )
        if self.notes:
            detail += f" ({'; '.join(self.notes)})"
        allowed = [s for s in SCHEME_PREFERENCE if s.lower() in self._schemes]
        return (
            f"proxy offers no supported authentication scheme: {', '.join(offered)}"
            f"{detail}; tunnelws {'supports' if len(allowed) == 4 else 'is allowed'} "
            f"{', '.join(allowed)}"
        )

    def _digest_authorization(self, plan: _DigestPlan, credentials: Credentials) -> str:
        params = plan.challenge.params
        realm, nonce = params["realm"], params["nonce"]
        algorithm = plan.algorithm or "MD5"
        cnonce = self._cnonce_factory() if plan.qop else ""
        response = digest_response(
            algorithm=algorithm,
            username=credentials.username,
            password=credentials.password,
            realm=realm,
            method=self._method,
            uri=self._authority,
            nonce=nonce,
            cnonce=cnonce,
            qop=plan.qop,
        )
        parts: list[str] = []
        if _is_true(params.get("userhash")):
            hashed = digest_userhash(algorithm, credentials.username, realm)
            parts.append(f"username={quoted_string(hashed)}")
        elif _needs_extended_username(credentials.username):
            encoded = quote(credentials.username, safe=_ATTR_CHARS, encoding="utf-8")
            parts.append(f"username*=UTF-8''{encoded}")
        else:
            parts.append(f"username={quoted_string(credentials.username)}")
        parts += [
            f"realm={quoted_string(realm)}",
            f"nonce={quoted_string(nonce)}",
            f"uri={quoted_string(self._authority)}",
        ]
        if plan.algorithm:
            parts.append(f"algorithm={plan.algorithm}")
        parts.append(f"response={quoted_string(response)}")
        if "opaque" in params:
            parts.append(f"opaque={quoted_string(params['opaque'])}")
        if plan.qop:
            parts += [f"qop={plan.qop}", "nc=00000001", f"cnonce={quoted_string(cnonce)}"]
        if _is_true(params.get("userhash")):
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    @staticmethod
    def _error(reply: ProxyReply, offered: list[str], message: str) -> ProxyAuthError:
        return ProxyAuthError(
            message,
            status=reply.status,
            reason=reply.reason,
            headers=reply.headers,
            body=reply.body,
            schemes=offered,
        )


def _normalise_schemes(schemes: Sequence[str] | None) -> tuple[str, ...]:
    if schemes is None:
        return tuple(scheme.lower() for scheme in SCHEME_PREFERENCE)
    known = {scheme.lower() for scheme in SCHEME_PREFERENCE}
    chosen = tuple(dict.fromkeys(scheme.strip().lower() for scheme in schemes))
    unknown = [scheme for scheme in chosen if scheme not in known]
    if unknown or not chosen:
        raise ValueError(
            f"unknown proxy authentication scheme(s) {', '.join(map(repr, unknown)) or '(none)'}; "
            f"choose from {', '.join(SCHEME_PREFERENCE)}"
        )
    return chosen


def _for_user(credentials: Credentials | None) -> str:
    if credentials is None:
        return " from the environment"
    return f" for user {credentials.username!r}"


def _safe_reason(exc: BaseException) -> str:
    """An exception's text without anything that could be a secret.

    pyspnego messages name the missing piece, never the password; still,
    only the first line is kept and any Proxy-Authorization-like token cut.
    """
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"[A-Za-z0-9+/]{40,}={0,2}", "***", text)[:300]


def _describe(reply: ProxyReply, offered: list[str]) -> str:
    schemes = ", ".join(offered) if offered else "no scheme"
    return f"{reply.status} {reply.reason}; offers {schemes}".replace("  ", " ")
