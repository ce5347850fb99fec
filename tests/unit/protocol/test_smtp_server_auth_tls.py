"""The SMTP server engine's AUTH (RFC 4954, RFC 4616) and STARTTLS (RFC 3207) handling."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from smtp_session_harness import SETTINGS, SUBMISSION, Session, plain

from postkontor.protocol.smtp import (
    AuthRequest,
    Hello,
    Reply,
    SMTPServerConnection,
    StartTLSRequested,
)

OPEN_AUTH = dataclasses.replace(SETTINGS, auth_mechanisms=("PLAIN", "LOGIN"), auth_requires_tls=False)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _tls_submission() -> Session:
    return Session(SUBMISSION, tls_active=True).ready()


def _reply_after(settings: object, tls: bool, setup: list[str], line: str) -> tuple[int, str | None]:
    """(code, enhanced code) of the reply to `line` after the `setup` commands."""
    assert isinstance(settings, type(SETTINGS))
    session = Session(settings, tls_active=tls)
    for command in setup:
        session.command(command)
    reply = session.command(line)
    return reply.code, reply.enhanced


def test_rfc4954_s4_plain_with_initial_response() -> None:
    session = _tls_submission()
    reply = session.command(f"AUTH PLAIN {plain('alice')}")
    assert reply == Reply(235, "2.7.0", "Authentication successful")
    assert session.events[-1] == AuthRequest("PLAIN", "", "alice", "secret")
    assert session.conn.authenticated == "alice"
    assert session.command("MAIL FROM:<alice@b.c>").code == 250


def test_rfc4954_s4_plain_with_empty_challenge() -> None:
    session = _tls_submission()
    assert session.feed(b"AUTH PLAIN\r\n") == [Reply(334, None, "")]
    assert session.conn._out == b""
    assert session.command(plain("bob")).code == 235
    assert session.conn.authenticated == "bob"


def test_rfc4954_s4_login_exchange() -> None:
    session = _tls_submission()
    assert session.command("AUTH LOGIN") == Reply(334, None, "VXNlcm5hbWU6")
    assert session.command(_b64("carol")) == Reply(334, None, "UGFzc3dvcmQ6")
    assert session.command(_b64("secret")).code == 235
    assert session.events[-1] == AuthRequest("LOGIN", "", "carol", "secret")


def test_rfc4954_s4_login_with_initial_username() -> None:
    session = _tls_submission()
    assert session.command(f"AUTH login {_b64('dave')}") == Reply(334, None, "UGFzc3dvcmQ6")
    assert session.command(_b64("secret")).code == 235


def test_rfc4954_s6_wrong_password_is_not_authenticated() -> None:
    session = _tls_submission()
    reply = session.command(f"AUTH PLAIN {plain('alice', 'wrong')}")
    assert (reply.code, reply.enhanced) == (535, "5.7.8")
    assert session.conn.authenticated is None
    assert session.command("MAIL FROM:<a@b.c>").code == 530
    assert session.command(f"AUTH PLAIN {plain('alice')}").code == 235


def test_rfc4954_s4_cancel_and_bad_base64() -> None:
    """SECURITY-CASES 21-22."""
    session = _tls_submission()
    session.command("AUTH LOGIN")
    assert session.command("*") == Reply(501, "5.7.0", "Authentication cancelled")
    assert session.command("NOOP").code == 250, "back in command state"
    assert (session.command("AUTH PLAIN !!!notbase64").code, session.events) == (
        501,
        [Hello("client.example", True)],
    )
    session.command("AUTH PLAIN")
    reply = session.command("not base64!")
    assert (reply.code, reply.enhanced) == (501, "5.5.2")
    reply = session.command("AUTH PLAIN *")
    assert (reply.code, reply.enhanced) == (501, "5.7.0")


@pytest.mark.parametrize(
    "message",
    ["\0u\0p\0x", "root\0alice\0secret", "\0\0secret", "\0alice\0", "alice"],
)
def test_rfc4616_malformed_plain_is_535_without_event(message: str) -> None:
    """SECURITY-CASES 22: extra NULs, authzid ≠ authcid, empty fields → 535 5.7.8, no AuthRequest."""
    session = _tls_submission()
    reply = session.command(f"AUTH PLAIN {_b64(message)}")
    assert (reply.code, reply.enhanced) == (535, "5.7.8")
    assert not any(isinstance(e, AuthRequest) for e in session.events)


def test_rfc4954_s4_equals_is_an_empty_initial_response() -> None:
    session = _tls_submission()
    assert session.command("AUTH PLAIN =").code == 535  # an empty PLAIN message is malformed


def test_rfc4954_s4_response_line_of_12288_octets_ok_12289_too_long() -> None:
    """SECURITY-CASES 20."""
    session = _tls_submission()
    session.command("AUTH PLAIN")
    password = "p" * (9216 - len("\0alice\0"))  # 9,216 octets encode to exactly 12,288 base64 characters
    line = plain("alice", password)
    assert len(line) == 12_288
    assert session.command(line).code == 535
    assert session.events[-1] == AuthRequest("PLAIN", "", "alice", password)
    session.command("AUTH PLAIN")
    reply = session.command("A" * 12_289)
    assert reply == Reply(500, "5.5.6", "Authentication exchange line is too long")
    assert session.command("NOOP").code == 250


@pytest.mark.parametrize(
    ("settings", "tls", "setup", "line", "expected"),
    [
        (SETTINGS, False, [], "AUTH PLAIN", (502, "5.5.1")),  # not on this port
        (SUBMISSION, False, [], "AUTH PLAIN", (503, "5.5.1")),  # no EHLO yet
        (SUBMISSION, False, ["EHLO x"], f"AUTH PLAIN {plain('alice')}", (530, "5.7.0")),  # RFC 3207 §4
        (SUBMISSION, True, ["EHLO x"], "AUTH CRAM-MD5", (504, "5.5.4")),
        (SUBMISSION, True, ["EHLO x"], "AUTH", (501, "5.5.4")),
        (
            SUBMISSION,
            True,
            ["EHLO x", f"AUTH PLAIN {plain('a')}"],
            f"AUTH PLAIN {plain('a')}",
            (503, "5.5.1"),
        ),
        (OPEN_AUTH, False, ["EHLO x", "MAIL FROM:<a@b.c>"], f"AUTH PLAIN {plain('a')}", (503, "5.5.1")),
        (
            dataclasses.replace(OPEN_AUTH, auth_mechanisms=("PLAIN",)),
            False,
            ["EHLO x"],
            "AUTH LOGIN",
            (504, "5.5.4"),
        ),
    ],
)
def test_rfc4954_s4_auth_refusals(
    settings: object, tls: bool, setup: list[str], line: str, expected: tuple[int, str]
) -> None:
    assert _reply_after(settings, tls, setup, line) == expected


def test_rfc4954_after_auth_no_auth_or_starttls_advertised() -> None:
    session = Session(dataclasses.replace(OPEN_AUTH, starttls=True)).ready()
    assert "STARTTLS" in session.command("EHLO x").lines
    session.command(f"AUTH PLAIN {plain('alice')}")
    lines = session.command("EHLO x").lines
    assert not any(line.startswith(("AUTH", "STARTTLS")) for line in lines)
    reply = session.command("STARTTLS")
    assert (reply.code, reply.enhanced) == (503, "5.5.1"), "RFC 3207 §4.2: no STARTTLS after AUTH"
    assert session.conn.authenticated == "alice", "a second EHLO keeps the authentication"


# --- STARTTLS (RFC 3207) -----------------------------------------------------------------------------------
def test_rfc3207_s4_starttls_success_and_state_reset() -> None:
    """SECURITY-CASES 10: nothing learnt before TLS survives it."""
    session = Session(SUBMISSION).ready()
    assert session.command("STARTTLS") == Reply(220, "2.0.0", "Ready to start TLS")
    assert isinstance(session.events[-1], StartTLSRequested)
    assert session.conn.tls_active
    assert session.conn.helo is None and not session.conn.extended
    assert session.command("MAIL FROM:<a@b.c>").code == 503
    lines = session.command("EHLO x").lines
    assert "STARTTLS" not in lines and "AUTH PLAIN LOGIN" in lines
    reply = session.command("STARTTLS")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")


def test_rfc3207_s5_injected_commands_after_starttls_are_discarded() -> None:
    """SECURITY-CASES 7 / CVE-2011-0411: `STARTTLS\\r\\nNOOP\\r\\n` in one segment → NOOP never answered."""
    conn = SMTPServerConnection(SUBMISSION)
    conn.start()
    conn.receive_data(b"EHLO x\r\n")
    conn.next_event()
    conn.data_to_send()
    conn.receive_data(b"STARTTLS\r\nNOOP\r\nEHLO inj\r\n")
    assert isinstance(conn.next_event(), StartTLSRequested)
    assert conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    conn.receive_data(b"MAIL FROM:<a@b.c>\r\n")  # plaintext that arrives before the handshake completes
    assert conn.next_event() is None and conn.data_to_send() == b""
    conn.tls_started()
    assert conn.next_event() is None and conn.data_to_send() == b""
    conn.receive_data(b"EHLO real\r\n")
    assert conn.next_event() == Hello("real", True)


@pytest.mark.parametrize(
    ("settings", "tls", "setup", "line", "expected"),
    [
        (SUBMISSION, False, ["EHLO x"], "STARTTLS now", (501, "5.5.4")),
        (SETTINGS, False, ["EHLO x"], "STARTTLS", (503, "5.5.1")),  # not offered
        (SUBMISSION, True, ["EHLO x"], "STARTTLS", (503, "5.5.1")),  # already TLS (SECURITY-CASES 11)
        (
            dataclasses.replace(SUBMISSION, auth_required=False),
            False,
            ["EHLO x", "MAIL FROM:<a@b.c>"],
            "STARTTLS",
            (503, "5.5.1"),
        ),
    ],
)
def test_rfc3207_s4_starttls_refusals(
    settings: object, tls: bool, setup: list[str], line: str, expected: tuple[int, str]
) -> None:
    assert _reply_after(settings, tls, setup, line) == expected
