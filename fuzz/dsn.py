"""Fuzz target: delivery status notifications (`message.dsn.build_dsn`, RFC 3464, RFC 3461, RFC 6522, RFC 6533)
composed from hostile values: every address, ORCPT, ENVID, remote host name and remote reply in a DSN comes from
an envelope or a remote server (the reporting MTA's name and the postmaster address are configuration; the sender
is a parsed MAIL FROM path, as the queue stores it).

Input: octet 0 = action and RET choice, octet 1 = recipient count; then length-prefixed values (reporting MTA,
sender, ENVID, postmaster, then per recipient: address, status, diagnostic, remote MTA, ORCPT, times); the rest
is the original message.

Allowed exceptions: none. `build_dsn`'s ValueError is only for a call without recipients or with an unknown
action, which the queue runner never makes (and this harness does not either).
Invariants beyond "nothing raised":
- the report is CRLF-terminated lines, none over 998 octets in its own header and delivery-status part
  (RFC 5322 §2.1.1), and it parses back with the stdlib parser;
- no hostile value adds a header field: the top-level header has exactly the fields we write, and every
  delivery-status block has only RFC 3464 field names;
- the delivery-status part is printable ASCII (RFC 3464 §2.1, RFC 6533 §3 escapes for the rest).
"""

from __future__ import annotations

import email.policy
from email.parser import BytesParser

from _harness import Reader, check, instrumented, main

with instrumented():
    from postkontor.message.address import AddressError, parse_reverse_path
    from postkontor.message.dsn import DSNRecipient, build_dsn

_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_TOP_FIELDS = {"from", "to", "subject", "date", "message-id", "auto-submitted", "mime-version", "content-type"}
_STATUS_FIELDS = {
    "reporting-mta", "original-envelope-id", "arrival-date", "original-recipient", "final-recipient", "action",
    "status", "remote-mta", "diagnostic-code", "last-attempt-date", "will-retry-until",
}  # fmt: skip
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
TOKENS = (
    b"\r\n", b"\n", b"\r", b"\x00", b"\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\x0b", b"\x0c", b"\x1b[31m",
    b"Bcc: victim@example.org", b"\r\nBcc: x@y", b"rfc822;", b"utf-8;", b"x-unknown;", b"5.1.1", b"4.4.7", b"2.0.0",
    b"550 5.1.1 <a@b>: no such user", b"\xc3\xa9", b"\xf0\x9f\x92\xa9", b"=?utf-8?q?x?=", b"\\x{41}", b"+2B",
    b"Subject: x\r\n\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b--", b"From ", b".", b" " * 80,
)  # fmt: skip


def _time(reader: Reader) -> float | None:
    value = reader.byte()
    return None if value == 0 else 1_700_000_000.0 + value * 86_400.0


def _sender(text: str) -> str:
    """The original sender as the queue stores it: `str()` of a MAIL FROM path the SMTP engine parsed (quoted local
    parts with any printable character included). An arbitrary string never gets there, and the stdlib's folding
    of a To header holding one that is not an address can start a line without white space."""
    try:
        address = parse_reverse_path(f"<{text}>", smtputf8=True)
    except AddressError:
        return "sender@example.test"
    return "sender@example.test" if address is None else str(address)


def _config_name(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch in _LDH)


def _check_lines(raw: bytes) -> None:
    body = raw[:-2] if raw.endswith(b"\r\n") else raw
    check(raw.endswith(b"\r\n"), "report does not end in CRLF")
    lines = body.split(b"\r\n")
    check(all(b"\r" not in line and b"\n" not in line for line in lines), "a bare CR or LF in the report")


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    choice = reader.byte()
    action = _ACTIONS[choice % len(_ACTIONS)]
    ret = (None, "FULL", "HDRS", "full")[(choice >> 3) % 4]
    count = 1 + reader.byte() % 3
    # The reporting MTA and the postmaster come from the configuration (hostname checked as LDH labels by the
    # config loader, the postmaster domain from the account store), not from the wire: ASCII host names here.
    reporting_mta = _config_name(reader.text()) or "mx.example.test"
    sender, envid_text = _sender(reader.text()), reader.text()
    postmaster = "postmaster@" + (_config_name(reader.text()) or "example.test")
    envid = envid_text if choice & 0x40 else None
    recipients = [
        DSNRecipient(
            address=reader.text(),
            status=reader.text(),
            action=action if choice & 0x80 else reader.pick(_ACTIONS),
            diagnostic=reader.text() or None,
            remote_mta=reader.text() or None,
            orcpt=reader.text() or None,
            last_attempt=_time(reader),
            will_retry_until=_time(reader),
        )
        for _ in range(count)
    ]
    original = reader.rest()
    raw = build_dsn(
        reporting_mta=reporting_mta,
        original_sender=sender,
        recipients=recipients,
        action=action,
        original=original,
        ret=ret,
        envid=envid,
        arrival=1_700_000_000.0,
        now=1_700_100_000.0,
        postmaster=postmaster,
    )
    head, sep, _ = raw.partition(b"\r\n\r\n")
    check(sep, "report without a header/body separator")
    check(all(len(line) <= 998 for line in head.split(b"\r\n")), "a header line over 998 octets")
    report = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    check({name.lower() for name in report} == _TOP_FIELDS, f"top-level fields {report.keys()}")
    check(report.get_content_type() == "multipart/report", "not a multipart/report")
    parts = report.get_payload()
    check(isinstance(parts, list) and len(parts) == 3, "a report without its three parts")
    status = parts[1]
    check(status.get_content_type() == "message/delivery-status", "second part is not message/delivery-status")
    blocks = status.get_payload()
    check(isinstance(blocks, list) and len(blocks) == 1 + count, f"{len(blocks)} delivery-status blocks")
    for block in blocks:
        names = {name.lower() for name in block}
        check(names <= _STATUS_FIELDS, f"unexpected delivery-status fields {names - _STATUS_FIELDS}")
        for value in block.values():
            text = str(value)
            check(text.isascii() and all(ch.isprintable() or ch in "\r\n\t" for ch in text), f"field {text[:80]!r}")
    # The status part as written: its lines are CRLF-terminated and short enough.
    start = raw.find(b"Content-Type: message/delivery-status")
    check(start >= 0, "delivery-status part not found")
    section = raw[start : raw.find(b"\r\n--", start)]
    _check_lines(section + b"\r\n")
    check(all(len(line) <= 998 for line in section.split(b"\r\n")), "a delivery-status line over 998 octets")


if __name__ == "__main__":
    main(test_one_input, TOKENS)
