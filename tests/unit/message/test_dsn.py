"""Delivery status notifications (RFC 3464, RFC 6522 multipart/report, RFC 3834 Auto-Submitted), parsed back."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage, Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.message.dsn import DSNRecipient, build_dsn, clean_text

ORIGINAL = (
    b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: the quarterly numbers\r\n"
    b"Message-ID: <m1@a.test>\r\n\r\nSECRET BODY LINE\r\n"
)
ARRIVAL, NOW = 1_700_000_000.0, 1_700_003_600.0
TOP_HEADERS = {"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"}


def failed(address: str = "bob@b.test", **changes: object) -> DSNRecipient:
    values: dict[str, object] = {
        "address": address, "status": "5.1.1", "action": "failed", "diagnostic": "550 5.1.1 <bob@b.test>: no such user",
        "remote_mta": "mx.b.test", "orcpt": None, "last_attempt": NOW, "will_retry_until": None,
    }
    values.update(changes)
    return DSNRecipient(**values)  # type: ignore[arg-type]


def build(recipients: list[DSNRecipient], **changes: object) -> bytes:
    values: dict[str, object] = {
        "reporting_mta": "mx.a.test", "original_sender": "alice@a.test", "recipients": recipients,
        "action": "failed", "original": ORIGINAL, "ret": None, "envid": None, "arrival": ARRIVAL, "now": NOW,
        "postmaster": "postmaster@a.test",
    }
    values.update(changes)
    return build_dsn(**values)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(report: EmailMessage) -> list[Message]:
    payload = report.get_payload()
    assert isinstance(payload, list)
    return payload  # type: ignore[return-value]


def status_blocks(report: EmailMessage) -> list[Message]:
    status = parts(report)[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return blocks  # type: ignore[return-value]


def human(report: EmailMessage) -> str:
    text = parts(report)[0]
    assert isinstance(text, EmailMessage)
    return str(text.get_content())


def test_rfc3464_structure_and_headers() -> None:
    data = build([failed()])
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b""), "CRLF only"
    report = parse(data)
    assert set(report.keys()) == TOP_HEADERS
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@mx.a.test>"
    assert report["To"] == "alice@a.test"
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Message-ID"].endswith("@mx.a.test>")
    assert report["Date"] == "Tue, 14 Nov 2023 23:13:20 +0000"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts(report)] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"
    ]


def test_rfc3464_s2_2_and_s2_3_fields() -> None:
    report = parse(build([failed(orcpt="rfc822;Bob@B.test")], envid="QQ314159"))
    per_message, per_recipient = status_blocks(report)
    assert dict(per_message.items()) == {
        "Reporting-MTA": "dns; mx.a.test",
        "Original-Envelope-Id": "QQ314159",
        "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000",
    }
    assert dict(per_recipient.items()) == {
        "Original-Recipient": "rfc822; Bob@B.test",
        "Final-Recipient": "rfc822; bob@b.test",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.b.test",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@b.test>: no such user",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
    }


def test_optional_fields_are_left_out() -> None:
    local = failed("x@nullmx.test", status="5.1.10", diagnostic="556 5.1.10 the domain accepts no mail",
                   remote_mta=None, last_attempt=None)
    per_message, per_recipient = status_blocks(parse(build([local])))
    assert "Original-Envelope-Id" not in per_message
    assert set(per_recipient.keys()) == {"Final-Recipient", "Action", "Status"}
    assert per_recipient["Status"] == "5.1.10"
    assert "556 5.1.10 the domain accepts no mail" in human(parse(build([local]))), "still told to people"


def test_human_text_names_every_recipient_and_quotes_the_reply() -> None:
    carol = failed("carol@c.test", diagnostic="552 5.2.2 mailbox full", remote_mta="mx.c.test")
    report = parse(build([failed(), carol]))
    text = human(report)
    assert "<bob@b.test>" in text and "mx.b.test replied: 550 5.1.1 <bob@b.test>: no such user" in text
    assert "<carol@c.test>" in text and "mx.c.test replied: 552 5.2.2 mailbox full" in text
    assert "postmaster@a.test" in text
    assert [b["Final-Recipient"] for b in status_blocks(report)[1:]] == ["rfc822; bob@b.test", "rfc822; carol@c.test"]


def test_expired_recipient_says_so() -> None:
    expired = failed(status="4.4.7", diagnostic="421 4.4.2 connection timed out", remote_mta="mx.b.test")
    report = parse(build([expired]))
    assert status_blocks(report)[1]["Status"] == "4.4.7"
    assert "could not be delivered in time" in human(report)


def test_delayed_notification() -> None:
    until = ARRIVAL + 5 * 86400
    delayed = failed(status="4.4.1", action="delayed", diagnostic="421 4.4.1 no answer", will_retry_until=until)
    report = parse(build([delayed], action="delayed"))
    assert report["Subject"] == "Delayed Mail (still being retried)"
    block = status_blocks(report)[1]
    assert block["Action"] == "delayed" and block["Status"] == "4.4.1"
    assert block["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000"
    assert "keeps trying" in human(report)


def test_relayed_notification_for_notify_success() -> None:
    relayed = failed(status="2.0.0", action="relayed", diagnostic="250 2.0.0 Ok: queued as 123")
    report = parse(build([relayed], action="relayed"))
    assert report["Subject"] == "Successful Mail Delivery Report"
    assert status_blocks(report)[1]["Action"] == "relayed"


def test_rfc3461_s4_3_ret_hdrs_returns_headers_only() -> None:
    for ret in (None, "HDRS"):
        data = build([failed()], ret=ret)
        assert b"SECRET BODY LINE" not in data
        returned = parts(parse(data))[2]
        assert returned.get_content_type() == "text/rfc822-headers"
        assert "Subject: the quarterly numbers" in str(returned.get_payload())


def test_rfc3461_s4_3_ret_full_returns_the_exact_message() -> None:
    data = build([failed()], ret="FULL")
    assert ORIGINAL in data
    returned = parts(parse(data))[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload(0)
    assert isinstance(inner, Message) and inner["Subject"] == "the quarterly numbers"


def test_eight_bit_originals_survive() -> None:
    original = "Subject: Grüße\r\nFrom: a@a.test\r\n\r\nKörper\r\n".encode()
    assert original in build([failed()], original=original, ret="FULL")
    assert original.split(b"\r\n\r\n")[0] in build([failed()], original=original, ret="HDRS")


def test_rfc3464_s2_3_1_original_recipient_keeps_a_quoted_local_part() -> None:
    """RFC 3461 §4.2: ORCPT carries the address as the sender gave it; a quoted local part keeps its space."""
    report = parse(build([failed("john.smith@b.test", orcpt='rfc822;"John Smith"@b.test')]))
    assert status_blocks(report)[1]["Original-Recipient"] == 'rfc822; "John Smith"@b.test'


def test_rfc6533_internationalised_addresses() -> None:
    report = parse(build([failed("jörg@bücher.test", orcpt="utf-8;jörg@bücher.test")]))
    block = status_blocks(report)[1]
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}rg@b\\x{FC}cher.test"
    assert block["Original-Recipient"] == "utf-8; j\\x{F6}rg@b\\x{FC}cher.test"
    assert "<jörg@bücher.test>" in human(report)


def test_rfc6531_notification_to_an_internationalised_sender() -> None:
    data = build([failed()], original_sender="jörg@bücher.test")
    assert "To: <jörg@bücher.test>".encode() in data


def test_invalid_status_falls_back_to_the_class_of_the_action() -> None:
    assert status_blocks(parse(build([failed(status="bogus")])))[1]["Status"] == "5.0.0"
    assert status_blocks(parse(build([failed(status="4.1234.1", action="delayed")], action="delayed")))[1][
        "Status"
    ] == "4.0.0"


def test_long_replies_are_folded_not_encoded() -> None:
    reply = "550 5.7.1 " + " ".join(["blocked"] * 60) + " " + "x" * 150
    data = build([failed(diagnostic=reply)])
    assert b"=?" not in data
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert status_blocks(parse(data))[1]["Diagnostic-Code"] == f"smtp; {reply}"


def test_no_recipients_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        build([])


HOSTILE = "x\r\nBcc: victim@evil.test\r\n\r\nInjected-Body"


def test_hostile_values_cannot_add_headers() -> None:
    recipient = failed(HOSTILE, orcpt=f"rfc822;{HOSTILE}", diagnostic=HOSTILE, remote_mta=HOSTILE)
    data = build([recipient], envid=HOSTILE, original_sender=f"a@a.test{HOSTILE}", reporting_mta=f"mx{HOSTILE}")
    report = parse(data)
    assert set(report.keys()) == TOP_HEADERS
    assert "Bcc" not in report and not report.defects
    per_message, per_recipient = status_blocks(report)
    assert set(per_message.keys()) == {"Reporting-MTA", "Original-Envelope-Id", "Arrival-Date"}
    assert set(per_recipient.keys()) == {
        "Original-Recipient", "Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
        "Last-Attempt-Date",
    }
    assert b"\r\nBcc:" not in data and b"\r\nInjected-Body" not in data


text = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    [HOSTILE, "\r\n", "\n\nX-Evil: 1", "\x00\x0b\x0c\x1c\x85\u2028\u2029", "a\rB: c", "=?utf-8?q?x?="]
)


@settings(max_examples=300, deadline=None)
@given(diagnostic=text, orcpt=text, envid=text, remote=text, address=text)
def test_property_arbitrary_values_never_add_a_header(
    diagnostic: str, orcpt: str, envid: str, remote: str, address: str
) -> None:
    recipient = failed(address or "x@y.test", diagnostic=diagnostic, orcpt=orcpt or None, remote_mta=remote or None)
    data = build([recipient], envid=envid)
    assert b"\n" not in data.replace(b"\r\n", b"")
    report = parse(data)
    assert set(report.keys()) == TOP_HEADERS
    assert len(parts(report)) == 3
    per_message, per_recipient = status_blocks(report)
    assert set(per_message.keys()) == {"Reporting-MTA", "Original-Envelope-Id", "Arrival-Date"}
    expected = {"Final-Recipient", "Action", "Status", "Last-Attempt-Date"}
    expected |= {"Original-Recipient"} if clean_text(orcpt) else set()
    expected |= {"Remote-MTA"} if clean_text(remote) else set()
    expected |= {"Diagnostic-Code"} if clean_text(remote) and clean_text(diagnostic) else set()
    assert set(per_recipient.keys()) == expected
    assert per_recipient["Action"] == "failed" and per_recipient["Status"] == "5.1.1"
