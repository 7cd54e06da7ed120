"""Subject and issuer of a DER certificate, without a crypto library.

``ssl`` only decodes certificates it has verified; ``check`` also needs the
names in certificates it could *not* verify (that is how interception shows),
so this reads just the two Name fields of the X.509 structure. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CertNames", "CertificateError", "read_cert_names"]

_SEQUENCE = 0x30
_SET = 0x31
_OID = 0x06
_EXPLICIT_VERSION = 0xA0
_ATTRIBUTE_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
}
# UTF8String, PrintableString, IA5String, TeletexString, BMPString
_STRING_ENCODINGS = {
    0x0C: "utf-8",
    0x13: "ascii",
    0x16: "ascii",
    0x14: "latin-1",
    0x1E: "utf-16-be",
}


class CertificateError(ValueError):
    """The bytes are not a DER certificate this reader understands."""


@dataclass(frozen=True)
class CertNames:
    """``subject`` and ``issuer`` as ``"CN=..., O=..."``; ``issuer_der`` is
    the raw issuer Name, for exact comparisons."""

    subject: str
    issuer: str
    issuer_der: bytes

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """``(tag, value_start, value_end)`` of the element at ``pos``."""
    if pos + 2 > len(data):
        raise CertificateError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        size = first & 0x7F
        if not 0 < size <= 4 or start + size > len(data):
            raise CertificateError("unsupported DER length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    end = start + length
    if end > len(data):
        raise CertificateError("truncated DER element")
    return tag, start, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    elements = []
    pos = start
    while pos < end:
        tag, value_start, value_end = _tlv(data, pos)
        elements.append((tag, value_start, value_end))
        pos = value_end
    return elements


def _oid(raw: bytes) -> str:
    if not raw:
        raise CertificateError("empty OID")
    parts = [raw[0] // 40, raw[0] % 40]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _format_name(data: bytes, start: int, end: int) -> str:
    parts = []
    for set_tag, set_start, set_end in _children(data, start, end):
        if set_tag != _SET:
            raise CertificateError("a Name holds SETs")
        for _, attr_start, attr_end in _children(data, set_start, set_end):
            (oid_tag, oid_start, oid_end), (value_tag, value_start, value_end) = _children(
                data, attr_start, attr_end
            )[:2]
            if oid_tag != _OID:
                raise CertificateError("an attribute starts with an OID")
            oid = _oid(data[oid_start:oid_end])
            encoding = _STRING_ENCODINGS.get(value_tag, "latin-1")
            value = data[value_start:value_end].decode(encoding, errors="replace")
            parts.append(f"{_ATTRIBUTE_NAMES.get(oid, oid)}={value}")
    return ", ".join(parts)


def read_cert_names(der: bytes) -> CertNames:
    """Subject and issuer of a DER-encoded X.509 certificate."""
    tag, start, _ = _tlv(der, 0)
    if tag != _SEQUENCE:
        raise CertificateError("a certificate is a SEQUENCE")
    tbs_tag, tbs_start, tbs_end = _tlv(der, start)
    if tbs_tag != _SEQUENCE:
        raise CertificateError("tbsCertificate is a SEQUENCE")
    fields = _children(der, tbs_start, tbs_end)
    if fields and fields[0][0] == _EXPLICIT_VERSION:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5 or fields[2][0] != _SEQUENCE or fields[4][0] != _SEQUENCE:
        raise CertificateError("unexpected tbsCertificate layout")
    _, issuer_start, issuer_end = fields[2]
    _, subject_start, subject_end = fields[4]
    return CertNames(
        subject=_format_name(der, subject_start, subject_end),
        issuer=_format_name(der, issuer_start, issuer_end),
        issuer_der=der[issuer_start:issuer_end],
    )
