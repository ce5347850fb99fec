"""Mailbox and path parsing for SMTP envelopes: RFC 5321 §4.1.2, §4.1.3 and §4.5.3.1, with RFC 6531
(SMTPUTF8).

The grammar is walked by hand rather than with one large regular expression because quoted local parts may
contain `>`, `@` and spaces, and because each failure needs a precise `kind` for the reply code the SMTP
engine chooses (501 syntax, 553 5.6.7 for UTF-8 without SMTPUTF8).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Address",
    "AddressError",
    "AddressErrorKind",
    "parse_path",
    "parse_reverse_path",
]

AddressErrorKind = Literal["syntax", "too_long", "needs_smtputf8"]

# RFC 5321 §4.5.3.1.1-3
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
# RFC 1035 §2.3.4: a label is at most 63 octets.
MAX_LABEL = 63

# RFC 5321 §4.1.2 atext (RFC 5322 §3.2.3): ASCII printable characters that need no quoting.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}", re.ASCII)
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
# Unicode categories that are never part of an address: controls, format characters, surrogates, unassigned,
# private use, separators (RFC 6531 §3.3 only adds UTF8-non-ascii; RFC 5198 excludes controls).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Co", "Zs", "Zl", "Zp"})


class AddressError(ValueError):
    """An envelope path that cannot be used; `kind` tells the SMTP engine which reply to give."""

    def __init__(self, message: str, kind: AddressErrorKind = "syntax") -> None:
        super().__init__(message)
        self.message = message
        self.kind: AddressErrorKind = kind


def _is_ascii(text: str) -> bool:
    return text.isascii()


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _needs_quoting(localpart: str) -> bool:
    """True unless the local part is an RFC 5321 Dot-string (atext atoms separated by single dots)."""
    atoms = localpart.split(".")
    return any(not atom or any(ch.isascii() and ch not in _ATEXT for ch in atom) for atom in atoms)


def _quote(localpart: str) -> str:
    # RFC 5321 §4.1.2 quoted-pairSMTP: only backslash and double quote need escaping inside quotes.
    return '"' + localpart.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Address:
    """An RFC 5321 mailbox. `localpart` is unquoted; `domain` is lower-cased, literals keep their brackets."""

    localpart: str
    domain: str

    def __post_init__(self) -> None:
        domain = self.domain
        if domain.startswith("["):
            # The tag of an IPv6 literal is matched case-insensitively (RFC 5321 §4.1.3); keep one spelling.
            if domain[1:6].lower() == "ipv6:":
                domain = "[IPv6:" + domain[6:].lower()
        else:
            domain = domain.lower()
        object.__setattr__(self, "domain", domain)

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def is_utf8(self) -> bool:
        return not (_is_ascii(self.localpart) and _is_ascii(self.domain))

    @property
    def quoted_localpart(self) -> str:
        return _quote(self.localpart) if _needs_quoting(self.localpart) else self.localpart

    @property
    def normalized(self) -> str:
        return str(self).lower()

    def __str__(self) -> str:
        if not self.domain:
            return self.quoted_localpart
        return f"{self.quoted_localpart}@{self.domain}"


def _check_characters(text: str) -> None:
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            raise AddressError("control characters are not allowed in an address")
        if code > 0x7F and unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise AddressError("invalid character in address")


def _parse_quoted(inner: str, pos: int) -> tuple[str, int]:
    """Parse an RFC 5321 Quoted-string starting at `inner[pos] == '"'`; return (content, index after it)."""
    out: list[str] = []
    i = pos + 1
    n = len(inner)
    while i < n:
        ch = inner[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            # RFC 5321 §4.1.2 quoted-pairSMTP = %d92 %d32-126 (RFC 6531 allows UTF-8 in qtext, not in pairs).
            if i + 1 >= n or not (0x20 <= ord(inner[i + 1]) <= 0x7E):
                raise AddressError("invalid quoted pair in local part")
            out.append(inner[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise AddressError("unterminated quoted string in local part")


def _check_dot_string(local: str) -> None:
    # RFC 5321 §4.1.2 Dot-string = Atom *("." Atom); RFC 6531 §3.3 adds UTF8-non-ascii to atext.
    for atom in local.split("."):
        if not atom:
            raise AddressError("empty atom in local part")
        for ch in atom:
            if ch.isascii() and ch not in _ATEXT:
                raise AddressError(f"character {ch!r} not allowed in an unquoted local part")


def _check_domain(domain: str) -> None:
    """RFC 5321 §4.1.2 Domain = sub-domain *("." sub-domain); U-labels per RFC 6531 §3.3."""
    if not domain:
        raise AddressError("empty domain")
    for label in domain.split("."):
        if not label:
            raise AddressError("empty label in domain")
        if label[0] == "-" or label[-1] == "-":
            raise AddressError("a domain label may not start or end with a hyphen")
        if _octets(label) > MAX_LABEL:
            raise AddressError("domain label too long", "too_long")
        for ch in label:
            if ch in _LDH:
                continue
            if ch.isascii() or unicodedata.category(ch)[0] not in "LMN":
                raise AddressError(f"character {ch!r} not allowed in a domain")


def _check_literal(literal: str) -> str:
    """RFC 5321 §4.1.3 address literals; returns the canonical bracketed form."""
    content = literal[1:-1]
    if content[:5].lower() == "ipv6:":
        text = content[5:]
        # ipaddress accepts "%scope" suffixes, which are no part of RFC 5321 IPv6-addr.
        if not text or not set(text) <= _IPV6_CHARS:
            raise AddressError("invalid IPv6 address literal")
        try:
            ip6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise AddressError("invalid IPv6 address literal") from None
        return f"[IPv6:{ip6.compressed}]"
    if not _IPV4.fullmatch(content):
        # General-address-literal tags are not registered for anything we could deliver to.
        raise AddressError("unsupported address literal")
    try:
        ipaddress.IPv4Address(content)
    except ValueError:
        raise AddressError("invalid IPv4 address literal") from None
    return f"[{content}]"


def _parse_mailbox(mailbox: str) -> Address:
    """RFC 5321 §4.1.2 Mailbox = Local-part "@" ( Domain / address-literal )."""
    if mailbox.startswith('"'):
        local, end = _parse_quoted(mailbox, 0)
        raw_local = mailbox[:end]
        if not local:
            raise AddressError("empty local part")
        if end >= len(mailbox) or mailbox[end] != "@":
            raise AddressError("expected '@' after quoted local part")
        domain = mailbox[end + 1 :]
    else:
        at = mailbox.rfind("@")
        if at < 0:
            raise AddressError("address has no domain")
        raw_local = mailbox[:at]
        domain = mailbox[at + 1 :]
        _check_dot_string(raw_local)
        local = raw_local
    if _octets(raw_local) > MAX_LOCAL_PART:
        raise AddressError("local part longer than 64 octets", "too_long")  # RFC 5321 §4.5.3.1.1
    if _octets(domain) > MAX_DOMAIN:
        raise AddressError("domain longer than 255 octets", "too_long")  # RFC 5321 §4.5.3.1.2
    if domain.startswith("["):
        if not domain.endswith("]"):
            raise AddressError("unterminated address literal")
        domain = _check_literal(domain)
    else:
        _check_domain(domain)
    return Address(local, domain)


def _strip_route(inner: str) -> str:
    """Drop an RFC 5321 A-d-l source route (`@a,@b:`); §C and §4.1.2 say to accept and ignore it."""
    if not inner.startswith("@"):
        return inner
    colon = inner.find(":")
    if colon < 0:
        raise AddressError("source route without ':'")
    for hop in inner[:colon].split(","):
        if not hop.startswith("@"):
            raise AddressError("invalid source route")
        _check_domain(hop[1:])
    return inner[colon + 1 :]


def _parse(text: str, *, smtputf8: bool, null_ok: bool, postmaster_ok: bool) -> Address | None:
    if _octets(text) > MAX_PATH:
        raise AddressError("path longer than 256 octets", "too_long")  # RFC 5321 §4.5.3.1.3
    _check_characters(text)
    if len(text) < 2 or text[0] != "<" or text[-1] != ">":
        raise AddressError("path must be enclosed in angle brackets")
    inner = text[1:-1]
    if not inner:
        if null_ok:
            return None
        raise AddressError("the null path is not allowed here")
    # RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted as a recipient (case-insensitive).
    if postmaster_ok and inner.lower() == "postmaster":
        return Address("postmaster", "")
    address = _parse_mailbox(_strip_route(inner))
    if not smtputf8 and address.is_utf8:
        # RFC 6531 §3.4: UTF-8 addresses need the SMTPUTF8 parameter.
        raise AddressError("a non-ASCII address needs SMTPUTF8", "needs_smtputf8")
    return address


def parse_path(text: str, *, smtputf8: bool) -> Address:
    """Parse an RFC 5321 Forward-path such as `<user@example.org>` (RCPT TO)."""
    address = _parse(text, smtputf8=smtputf8, null_ok=False, postmaster_ok=True)
    if address is None:  # unreachable with null_ok=False; keeps the return type honest
        raise AddressError("the null path is not allowed here")
    return address


def parse_reverse_path(text: str, *, smtputf8: bool) -> Address | None:
    """Parse an RFC 5321 Reverse-path (MAIL FROM); `<>` (the null sender, §4.5.5) gives None."""
    return _parse(text, smtputf8=smtputf8, null_ok=True, postmaster_ok=False)
