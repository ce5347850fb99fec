"""Fuzz target: the SMTP command-line parsers (`protocol.smtp.commands`: RFC 5321 §4.1.1-4.1.2, RFC 1870, 3030,
3461, 4954, 6152, 6531).

Input: octet 0 selects the parser and its flags (esmtp, smtputf8, dsn); the rest is the command line (for
`parse_command`) or its argument text.

Allowed exceptions: `SMTPSyntaxError` only (each carries the reply the engine sends). AddressError must never
escape: `parse_mail`/`parse_rcpt` turn it into an SMTPSyntaxError with the right code.
Invariants beyond that:
- every SMTPSyntaxError's reply is a valid single reply line (4xx/5xx, matching enhanced code class);
- a parsed command has a known verb and an argument without control characters or outer spaces;
- xtext round-trips: what `decode_xtext` returns, `encode_xtext` writes back to a value that decodes the same;
- a parsed sender or recipient prints (`str(address)`) as a path that parses back to the same address;
- a BDAT size is never negative, an AUTH mechanism is upper case.
"""

from __future__ import annotations

from _harness import Reader, check, instrumented, main

with instrumented():
    from postkontor.message.address import parse_path
    from postkontor.protocol.smtp import SMTPSyntaxError, encode_xtext
    from postkontor.protocol.smtp.commands import (
        KNOWN_VERBS,
        decode_xtext,
        parse_auth,
        parse_bdat,
        parse_command,
        parse_hello,
        parse_mail,
        parse_rcpt,
    )

TOKENS = (
    b"FROM:", b"TO:", b"<", b">", b"@", b"\"", b"\\", b" ", b"SIZE=", b"BODY=8BITMIME", b"BODY=7BIT", b"SMTPUTF8",
    b"AUTH=", b"RET=FULL", b"ENVID=", b"NOTIFY=NEVER", b"NOTIFY=SUCCESS,DELAY", b"ORCPT=rfc822;", b"+2B", b"+41",
    b"LAST", b"PLAIN", b"[127.0.0.1]", b"[IPv6:::1]", b"Postmaster", b"\xc3\xa9", b"\xe2\x80\x8b", b"\x7f", b"=",
)  # fmt: skip


def _check_reply(exc: SMTPSyntaxError) -> None:
    reply = exc.reply
    check(400 <= reply.code < 600, f"a syntax error with reply code {reply.code}")
    wire = reply.to_bytes()
    check(wire.count(b"\r\n") == 1 and wire.endswith(b"\r\n"), f"a refusal that is not one reply line: {wire!r}")


def _check_address_round_trip(address: object, smtputf8: bool) -> None:
    if address is None:
        return
    text = str(address)
    if text.lower() == "postmaster":
        return  # RFC 5321 §4.5.1: the domain-less Postmaster, only as a recipient
    again = parse_path(f"<{text}>", smtputf8=True)
    check(again == address, f"{text!r} parses back as {again!r}, not {address!r}")


def _run(reader: Reader) -> None:
    selector = reader.byte()
    esmtp, smtputf8, dsn = bool(selector & 0x10), bool(selector & 0x20), bool(selector & 0x40)
    raw = reader.rest()
    text = raw.decode("utf-8", "replace")
    which = selector % 8
    if which == 0:
        command = parse_command(raw, smtputf8=smtputf8)
        check(command.verb in KNOWN_VERBS, f"unknown verb {command.verb!r} parsed")
        check(command.argument == command.argument.strip(" "), "outer spaces left in the argument")
        check(not any(ch in command.argument for ch in "\r\n\x00"), "CR, LF or NUL in a parsed argument")
    elif which == 1:
        sender, params = parse_mail(text, esmtp=esmtp, dsn=dsn)
        _check_address_round_trip(sender, params.smtputf8)
        if params.envid is not None:
            check(decode_xtext(encode_xtext(params.envid)) == params.envid, "ENVID does not round-trip as xtext")
    elif which == 2:
        recipient, rparams = parse_rcpt(text, esmtp=esmtp, smtputf8=smtputf8, dsn=dsn)
        _check_address_round_trip(recipient, smtputf8)
        check(rparams.orcpt is None or ";" in rparams.orcpt, "ORCPT without its addr-type")
    elif which == 3:
        size, _last = parse_bdat(text)
        check(size >= 0, "negative BDAT size")
    elif which == 4:
        mechanism, _initial = parse_auth(text)
        check(mechanism == mechanism.upper(), "mechanism not upper-cased")
    elif which == 5:
        check(parse_hello(text) == text, "EHLO name changed")
    else:
        decoded = decode_xtext(text)
        check(decode_xtext(encode_xtext(decoded)) == decoded, f"xtext {decoded!r} does not round-trip")


def test_one_input(data: bytes) -> None:
    try:
        _run(Reader(data))
    except SMTPSyntaxError as exc:
        _check_reply(exc)


if __name__ == "__main__":
    main(test_one_input, TOKENS)
