"""Delivery status notifications (RFC 3464) for the outbound queue, built with the stdlib `email` package.

A DSN is a `multipart/report; report-type=delivery-status` message (RFC 6522) with three parts: a text for people,
a `message/delivery-status` part with one block of per-message fields and one block per recipient (RFC 3464 §2.2,
§2.3), and the original message's headers (`text/rfc822-headers`) or, for RET=FULL (RFC 3461 §4.3), the whole
message (`message/rfc822`). It is marked `Auto-Submitted: auto-replied` (RFC 3834 §5) and is sent with the null
reverse-path by the caller (RFC 3461 §6.2, RFC 5321 §4.5.5).

Every value that comes from an envelope or a remote server (addresses, ORCPT, ENVID, replies) is untrusted: line
breaks and other control characters become spaces, so no value can start a header of its own. Fields of the
machine-readable part are kept to printable ASCII: other characters are written as `\\x{HEX}` (the
EmbeddedUnicodeChar of RFC 6533 §3), and an address with such characters is given the "utf-8" address type.
"""

from __future__ import annotations

import datetime
import email.policy
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import Literal

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
Ret = Literal["FULL", "HDRS"]

# RFC 5322 §2.1.1: 998 octets per line at most; a field value never comes near it after this cut.
_MAX_FIELD = 900
_FOLD_AT = 76
_SUBJECTS: dict[str, str] = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
    "expanded": "Successful Mail Delivery Report",
}
_INTRO: dict[str, str] = {
    "failed": (
        "Your message could not be delivered to the recipients below. This is a permanent error: the mail system "
        "has given up, and will not try again."
    ),
    "delayed": (
        "Your message has not been delivered yet to the recipients below. The mail system keeps trying; you do not "
        "need to send it again. This is only a warning."
    ),
    "delivered": "Your message was delivered to the recipients below.",
    "relayed": (
        "Your message was passed on to the mail systems of the recipients below. You may not get a further "
        "notification when it reaches the mailbox."
    ),
    "expanded": "Your message was delivered to the recipients below, and forwarded by them to further recipients.",
}
_STATUS_FORMAT = "%d.%d.%d"
_DIGITS = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True, slots=True)
class DSNRecipient:
    """One recipient's block of RFC 3464 §2.3 fields."""

    address: str  # the recipient as we tried it (Final-Recipient)
    status: str  # RFC 3463 enhanced status code, e.g. "5.1.1"
    action: Action
    diagnostic: str | None = None  # the remote reply ("550 5.1.1 no such user") or what went wrong
    remote_mta: str | None = None  # the host that replied; without it there is no Diagnostic-Code field
    orcpt: str | None = None  # RFC 3461 ORCPT as received, "addr-type;address"
    last_attempt: float | None = None
    will_retry_until: float | None = None  # for action "delayed"


def clean_text(value: str) -> str:
    """One line of printable text: control characters and line or paragraph separators become spaces."""
    return " ".join("".join(char if char.isprintable() else " " for char in value).split())


def _escape(text: str, plain: str) -> str:
    """RFC 6533 §3 EmbeddedUnicodeChar for every character that is not in `plain` or not printable ASCII."""
    return "".join(
        char if (" " <= char <= "~" and (not plain or char in plain)) else f"\\x{{{ord(char):02X}}}" for char in text
    )


def field_text(value: str) -> str:
    """A value for the machine-readable part: one line, printable ASCII, no longer than a header allows."""
    text = _escape(clean_text(value), "")
    if len(text) > _MAX_FIELD:
        text = text[: _MAX_FIELD - 3].rstrip("\\") + "..."
    return text


# RFC 6533 §3 QCHAR: printable ASCII except SP, "+", "=" and "\".
_QCHAR = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in "+=\\")


def typed_address(address: str, address_type: str = "rfc822") -> str:
    """`addr-type; address` for Final-Recipient and Original-Recipient (RFC 3464 §2.3.1-2, RFC 6533 §3)."""
    address = clean_text(address)
    kind = "".join(char for char in address_type if char.isascii() and (char.isalnum() or char in "-.")) or "rfc822"
    if address.isascii() and address.isprintable() and kind.lower() == "rfc822":
        return f"rfc822; {field_text(address)}"
    return f"utf-8; {field_text(_escape(address, _QCHAR))}"


def _fold(value: str, first: int) -> str:
    """Fold at spaces into lines of about 76 characters (RFC 5322 §2.2.3); `first` is the room taken by the name."""
    lines: list[str] = []
    current = ""
    for word in value.split(" "):
        room = _FOLD_AT - (first if not lines else 1)
        if current and len(current) + 1 + len(word) > room:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n ".join(lines)


def _date(timestamp: float) -> str:
    return format_datetime(datetime.datetime.fromtimestamp(timestamp, datetime.UTC))


def _block(fields: Sequence[tuple[str, str]]) -> Message:
    # compat32 blocks hold plain strings, which the generator writes as they are (refold_source "none"): header
    # objects of the new policy would turn long words into RFC 2047 encoded words, meaningless in these fields.
    block = Message()
    for name, value in fields:
        block[name] = _fold(value, len(name) + 2)
    return block


def _status(code: str, action: str) -> str:
    # RFC 3463 §2: class "." subject "." detail, class 2, 4 or 5, subject and detail of 1 to 3 digits.
    parts = code.strip().split(".")
    if len(parts) == 3 and parts[0] in ("2", "4", "5") and all(_DIGITS.fullmatch(part) for part in parts[1:]):
        return _STATUS_FORMAT % tuple(int(part) for part in parts)
    # RFC 3463 §3.1: the "other or undefined" code of the class the action implies.
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")


def _recipient_fields(recipient: DSNRecipient) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if recipient.orcpt and clean_text(recipient.orcpt):
        kind, separator, address = recipient.orcpt.partition(";")
        fields.append(("Original-Recipient", typed_address(address, kind) if separator else typed_address(kind)))
    fields.append(("Final-Recipient", typed_address(recipient.address)))
    fields.append(("Action", recipient.action))
    fields.append(("Status", _status(recipient.status, recipient.action)))
    remote = field_text(recipient.remote_mta or "")
    if remote:
        fields.append(("Remote-MTA", f"dns; {remote}"))
        diagnostic = field_text(recipient.diagnostic or "")
        if diagnostic:
            fields.append(("Diagnostic-Code", f"smtp; {diagnostic}"))
    if recipient.last_attempt is not None:
        fields.append(("Last-Attempt-Date", _date(recipient.last_attempt)))
    if recipient.action == "delayed" and recipient.will_retry_until is not None:
        fields.append(("Will-Retry-Until", _date(recipient.will_retry_until)))
    return fields


def _explain(recipient: DSNRecipient) -> str:
    text = clean_text(recipient.diagnostic or "")
    host = clean_text(recipient.remote_mta or "")
    if text and host:
        text = f"{host} replied: {text}"
    elif not text:
        text = {"failed": "delivery failed", "delayed": "not delivered yet"}.get(recipient.action, "delivered")
        text += f" (status {_status(recipient.status, recipient.action)})"
    if recipient.action == "failed" and recipient.status.startswith("4.4.7"):
        text = f"gave up: the message could not be delivered in time. The last attempt: {text}"
    return text


def _human_text(*, host: str, action: str, recipients: Sequence[DSNRecipient], ret: str | None, postmaster: str) -> str:
    wrap = textwrap.TextWrapper(width=_FOLD_AT, break_long_words=False, break_on_hyphens=False)
    paragraphs = [f"This is the mail delivery system at {host}.", _INTRO[action]]
    lines = ["\n".join(wrap.wrap(paragraph)) + "\n" for paragraph in paragraphs]
    detail = textwrap.TextWrapper(
        width=_FOLD_AT, initial_indent="    ", subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
    )
    for recipient in recipients:
        lines.append(f"<{clean_text(recipient.address)}>")
        lines.append("\n".join(detail.wrap(_explain(recipient))))
        if action == "delayed" and recipient.will_retry_until is not None:
            lines.append(f"    the mail system will keep trying until {_date(recipient.will_retry_until)}")
        lines.append("")
    attached = "the message" if ret == "FULL" else "the headers of the message"
    closing = f"Attached are a machine-readable report and {attached}. For help, write to {postmaster}."
    lines.append("\n".join(wrap.wrap(closing)))
    return "\n".join(lines) + "\n"


def _header_block(original: bytes) -> bytes:
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = original.find(separator)
        if end >= 0:
            return original[: end + len(separator) // 2]
    return original


def _original_part(original: bytes, ret: str | None) -> MIMEPart:
    part = MIMEPart(policy=email.policy.SMTP)
    cte = "7bit" if original.isascii() else "8bit"
    if ret != "FULL":
        part.set_content(_header_block(original), maintype="text", subtype="rfc822-headers", cte=cte)
        return part
    part["Content-Type"] = "message/rfc822"
    if cte == "7bit":
        # A string payload is written out as it is: the returned message keeps its exact octets.
        part.set_payload(original.decode("ascii"))
    else:
        # The generator writes only ASCII strings as they are; 8-bit octets survive a parse and regeneration.
        part["Content-Transfer-Encoding"] = cte
        part.set_payload([BytesParser(policy=email.policy.compat32).parsebytes(original)])
    return part


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    recipients: list[DSNRecipient],
    action: Action,
    original: bytes,
    ret: Ret | str | None,
    envid: str | None,
    arrival: float,
    now: float,
    postmaster: str,
) -> bytes:
    """The DSN for `recipients` of one message, addressed to its `original_sender`, as CRLF-terminated octets.

    `action` chooses the subject and the text; each recipient's block carries its own action. `original` may be
    the whole message or only its header block (all that is returned unless `ret` is "FULL").
    """
    if not recipients:
        raise ValueError("a delivery status notification needs at least one recipient")
    if action not in _SUBJECTS:
        raise ValueError(f"invalid DSN action {action!r}")
    host = clean_text(reporting_mta).replace(" ", "") or "localhost"
    sender = clean_text(original_sender).replace(" ", "")
    # RFC 6531 §3.7.4: a notification to an internationalised address is itself an SMTPUTF8 message.
    policy = email.policy.SMTP if sender.isascii() else email.policy.SMTPUTF8
    ret = ret.upper() if isinstance(ret, str) else None

    report = EmailMessage(policy=policy)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{host}>"
    report["To"] = f"<{sender}>"
    report["Subject"] = _SUBJECTS[action]
    report["Date"] = _date(now)
    report["Message-ID"] = make_msgid(domain=host)
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report"
    report.set_param("report-type", "delivery-status")

    text = _human_text(
        host=host, action=action, recipients=recipients, ret=ret, postmaster=clean_text(postmaster) or host
    )
    human = MIMEPart(policy=policy)
    human.set_content(text, cte=None if text.isascii() else "quoted-printable")

    per_message = [("Reporting-MTA", f"dns; {field_text(host)}")]
    if envid is not None:
        per_message.append(("Original-Envelope-Id", field_text(envid)))
    per_message.append(("Arrival-Date", _date(arrival)))
    status = MIMEPart(policy=policy)
    status["Content-Type"] = "message/delivery-status"
    status.set_payload([_block(per_message), *(_block(_recipient_fields(r)) for r in recipients)])

    report.set_payload([human, status, _original_part(original, ret)])
    # The blocks are folded already; refolding them would turn a long word into RFC 2047 encoded words.
    return report.as_bytes(policy=policy.clone(refold_source="none"))
