"""HTTP field-value grammar (RFC 9110 section 5.6 and 11.6.1), Sans-IO.

The one place tunnelws reads and writes tokens, quoted strings, comma
lists, ``;`` parameters and authentication challenges, whatever header they
come in (``Connection``, ``Transfer-Encoding``, ``Content-Length``,
``Proxy-Authenticate``, ``Sec-WebSocket-Extensions``). Names follow the RFC.

Two kinds of reader: lists and challenges are lenient, as the RFC asks of
recipients (empty list elements are ignored; a challenge that cannot be
parsed is skipped up to the next comma outside a quoted string, and parsing
resumes there); parameters are strict and raise :class:`GrammarError`, which
the caller turns into its own typed error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "TCHAR",
    "TOKEN",
    "TOKEN_BYTES",
    "Challenge",
    "GrammarError",
    "is_token",
    "list_tokens",
    "parse_challenges",
    "parse_parameters",
    "quoted_string",
    "split_list",
    "token_prefix",
]

# RFC 9110 5.6.2: tchar, token.
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TOKEN_BYTES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 11.2: token68. In a challenge it must end the challenge, else
# "a=b" would read as token68 "a=" followed by junk.
_TOKEN68_IN_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
# RFC 9110 5.6.4: quoted-string with quoted-pairs.
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_OWS = " \t"


class GrammarError(ValueError):
    """A field value breaks the grammar; the message quotes a short excerpt."""


def is_token(text: str) -> bool:
    return TOKEN.fullmatch(text) is not None


def token_prefix(text: str) -> str:
    """The part of ``text`` before its first non-token character (safe to
    show when the rest may be a secret pasted in the wrong place)."""
    return text[: len(text) - len(text.lstrip(TCHAR))]


def quoted_string(value: str) -> str:
    """``value`` as a quoted-string, ``\\`` and ``"`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _skip_ows(text: str, i: int) -> int:
    while i < len(text) and text[i] in _OWS:
        i += 1
    return i


def _next_comma(text: str, i: int) -> int:
    """Index of the next comma outside a quoted string (or the end)."""
    in_quotes = False
    while i < len(text):
        char = text[i]
        if in_quotes and char == "\\":
            i += 1
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            return i
        i += 1
    return i


def split_list(value: str) -> list[str]:
    """The elements of a ``#rule`` list (RFC 9110 5.6.1): commas inside quoted
    strings are content, OWS around elements is dropped, empty elements are
    ignored."""
    elements: list[str] = []
    i = 0
    while i <= len(value):
        end = _next_comma(value, i)
        element = value[i:end].strip(_OWS)
        if element:
            elements.append(element)
        i = end + 1
    return elements


def list_tokens(values: Iterable[str]) -> set[str]:
    """The lower-cased elements of a token list sent in one or more field
    lines (``Connection: close``, ``Transfer-Encoding: gzip, chunked``)."""
    return {element.lower() for value in values for element in split_list(value)}


def _value_at(text: str, i: int) -> tuple[str, int] | None:
    """A token or quoted-string (unescaped) at ``i``, and the index after it."""
    quoted = _QUOTED_STRING.match(text, i)
    if quoted is not None:
        return _QUOTED_PAIR.sub(r"\1", quoted.group(1)), quoted.end()
    token = TOKEN.match(text, i)
    if token is None:
        return None
    return token.group(), token.end()


def parse_parameters(text: str) -> list[tuple[str, str | None]]:
    """``;``-separated parameters (RFC 9110 5.6.6, and the valueless ones
    RFC 6455 extensions use): ``a; b=1; c="2"`` -> ``[("a", None), ("b",
    "1"), ("c", "2")]``, names lower-cased, in order. Raises
    :class:`GrammarError` for anything else."""
    params: list[tuple[str, str | None]] = []
    i = 0
    while True:
        i = _skip_ows(text, i)
        while i < len(text) and text[i] == ";":  # empty parameters are allowed
            i = _skip_ows(text, i + 1)
        if i >= len(text):
            return params
        name = TOKEN.match(text, i)
        if name is None:
            raise GrammarError(f"expected a parameter name at {_excerpt(text, i)}")
        i = _skip_ows(text, name.end())
        value: str | None = None
        if i < len(text) and text[i] == "=":
            parsed = _value_at(text, _skip_ows(text, i + 1))
            if parsed is None:
                raise GrammarError(f"expected a token or quoted string at {_excerpt(text, i)}")
            value, i = parsed
            i = _skip_ows(text, i)
        if i < len(text) and text[i] != ";":
            raise GrammarError(f"expected ';' at {_excerpt(text, i)}")
        params.append((name.group().lower(), value))


def _excerpt(text: str, i: int) -> str:
    shown = text[i : i + 20]
    return repr(shown + "...") if len(text) > i + 20 else repr(shown) if shown else "the end"


# -- authentication challenges (RFC 9110 11.6.1) ---------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge from a ``Proxy-Authenticate`` header.

    ``scheme`` is as sent (compare it case-insensitively), ``params`` has
    lower-cased names and unquoted values (the first of duplicated names wins),
    ``token68`` is set for schemes like Negotiate that send an opaque token.
    """

    scheme: str
    params: Mapping[str, str]
    token68: str | None = None


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """Parse ``Proxy-Authenticate`` header values into challenges, in order.

    Several challenges per value and across values, quoted strings with
    backslash escapes (commas inside them are content), token68. Never
    raises: a part that cannot be parsed is skipped up to the next comma
    outside a quoted string, and parsing resumes there.
    """
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_parse_challenge_value(value))
    return challenges


def _parse_challenge_value(text: str) -> list[Challenge]:
    found: list[tuple[str, dict[str, str], str | None]] = []
    current: dict[str, str] | None = None  # params of the challenge being read
    i, end = 0, len(text)
    while i < end:
        while i < end and text[i] in " \t,":
            i += 1
        if i >= end:
            break
        name = TOKEN.match(text, i)
        if name is None:
            i, current = _next_comma(text, i), None
            continue
        after_name = _skip_ows(text, name.end())
        if after_name < end and text[after_name] == "=":
            # auth-param: token BWS "=" BWS ( token / quoted-string ). A
            # token68 is only valid right after a scheme, handled below.
            parsed = _param_value(text, _skip_ows(text, after_name + 1))
            if current is None or parsed is None:
                i, current = _next_comma(text, after_name), None
                continue
            param_value, i = parsed
            current.setdefault(name.group().lower(), param_value)
            continue
        # A new challenge: auth-scheme [ 1*SP ( token68 / #auth-param ) ]
        scheme, i = name.group(), name.end()
        params: dict[str, str] = {}
        spaces = _skip_ows(text, i)
        token = _TOKEN68_IN_CHALLENGE.match(text, spaces) if spaces > i else None
        if token is not None:
            found.append((scheme, params, token.group()))
            i, current = token.end(), None  # no auth-params may follow a token68
        else:
            found.append((scheme, params, None))
            current = params
    return [Challenge(scheme, MappingProxyType(params), token) for scheme, params, token in found]


def _param_value(text: str, i: int) -> tuple[str, int] | None:
    """A token or quoted-string at ``i`` that must end the list element."""
    parsed = _value_at(text, i)
    if parsed is None:
        return None
    value, after = parsed
    after = _skip_ows(text, after)
    if after < len(text) and text[after] != ",":
        return None
    return value, after
