"""Fuzz target: address parsing. `message.address` (RFC 5321 §4.1.2 paths, §4.5.3.1 limits, RFC 6531 SMTPUTF8)
for SMTP envelopes, and `message.imapaddress.parse_address_list` (RFC 5322 §3.4 header address lists, for IMAP
ENVELOPE).

Input: octet 0 = mode (bits 0-1: forward path, reverse path, header address list) and bit 2 = SMTPUTF8; the rest
is the path (UTF-8, invalid octets replaced as the SMTP engine's decoding would refuse them) or the raw header
value.

Allowed exceptions: `AddressError` for the envelope paths (a ValueError subclass, but only AddressError itself
is accepted: a plain ValueError, e.g. from `ipaddress`, escaping the parser is a crash). The header address-list
parser never raises.
Invariants beyond that:
- a parsed address is within the RFC 5321 limits, ASCII unless SMTPUTF8, and prints as a path that parses back
  to the same address (the printed form is what goes into queue files and Received headers);
- every AddressError has a known kind;
- a header address list renders as an IMAP value (`protocol.imap.response.render`) without error.
"""

from __future__ import annotations

from _harness import Reader, check, instrumented, main

with instrumented():
    from postkontor.message.address import AddressError, parse_path, parse_reverse_path
    from postkontor.message.imapaddress import parse_address_list
    from postkontor.protocol.imap.response import render

TOKENS = (
    b"<", b">", b"@", b"\"", b"\\", b".", b",", b":", b";", b"[", b"]", b"(", b")", b"IPv6:", b"::ffff:1.2.3.4",
    b"255.255.255.255", b"256.1.1.1", b"@a,@b:", b"postmaster", b"Postmaster", b"\xc3\xa9", b"\xe2\x80\x8b",
    b"\xef\xbf\xbf", b"x" * 64, b"a-", b"-a", b"=?utf-8?q?x?=", b"undisclosed-recipients:;", b"\t", b"\r\n ",
)  # fmt: skip
_KINDS = frozenset({"syntax", "too_long", "needs_smtputf8"})


def _envelope(text: str, *, forward: bool, smtputf8: bool) -> None:
    try:
        address = parse_path(text, smtputf8=smtputf8) if forward else parse_reverse_path(text, smtputf8=smtputf8)
    except AddressError as exc:
        check(exc.kind in _KINDS, f"unknown AddressError kind {exc.kind!r}")
        return
    if address is None:
        check(text == "<>" and not forward, f"a null path from {text!r}")
        return
    check(smtputf8 or not address.is_utf8, "a non-ASCII address without SMTPUTF8")
    if not address.domain:
        check(forward and address.localpart == "postmaster", f"an address without domain from {text!r}")
        return
    check(len(address.localpart.encode("utf-8", "surrogatepass")) <= 64, "local part over 64 octets")
    check(len(address.domain.encode("utf-8", "surrogatepass")) <= 255, "domain over 255 octets")
    again = parse_path(f"<{address}>", smtputf8=True)
    check(again == address, f"{address!s} parses back as {again!r}, not {address!r}")


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    flags = reader.byte()
    mode = flags & 3
    raw = reader.rest()
    if mode == 3:
        value = parse_address_list(raw)
        if value is not None:
            render(value)
        return
    _envelope(raw.decode("utf-8", "replace"), forward=mode != 1, smtputf8=bool(flags & 4))


if __name__ == "__main__":
    main(test_one_input, TOKENS)
