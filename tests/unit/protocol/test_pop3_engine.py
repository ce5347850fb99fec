"""Transcript tests of the POP3 server engine: RFC 1939 (states and commands), RFC 2449 (CAPA, response codes),
RFC 3206 (AUTH, SYS), RFC 2595 (STLS) and RFC 5034 (AUTH with SASL PLAIN)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from pop3_session_harness import CLEAR, MAILDROP, MESSAGES, PASSWORD, SETTINGS, TLS, Session, logged_in, plain

from postkontor.protocol.pop3 import (
    Closed,
    LoginRequest,
    POP3ProtocolError,
    POP3ServerConnection,
    POP3Settings,
    POP3State,
    RetrieveRequest,
    StartTLSRequested,
    UpdateRequest,
)

BASE_CAPA = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]


def capa(*extra: str) -> str:
    lines = ["+OK capability list follows", *BASE_CAPA, *extra, "IMPLEMENTATION postkontor", "."]
    return "".join(f"{line}\r\n" for line in lines)


# --- greeting, CAPA (RFC 1939 §4, RFC 2449 §5-6) -------------------------------------------------------------


def test_greeting_has_no_apop_timestamp_rfc1939_s4() -> None:
    assert Session().greeting == b"+OK postkontor POP3 ready\r\n"


def test_capa_before_tls_hides_user_and_sasl_rfc2595_s2_1() -> None:
    assert Session(SETTINGS).send("CAPA") == capa("STLS")


def test_capa_after_stls_lists_user_and_sasl_not_stls_rfc2449_s6() -> None:
    session = Session(SETTINGS)
    assert session.send("STLS") == "+OK begin TLS negotiation\r\n"
    assert session.send("CAPA") == capa("USER", "SASL PLAIN")


def test_capa_on_implicit_tls_and_when_plaintext_allowed_rfc2449_s6() -> None:
    assert Session(TLS).send("CAPA") == capa("USER", "SASL PLAIN")
    assert Session(CLEAR).send("capa") == capa("USER", "SASL PLAIN", "STLS")


def test_capa_without_user_when_not_allowed_and_with_more_mechanisms_rfc2449_s6_5() -> None:
    settings = dataclasses.replace(TLS, allow_user=False, sasl_mechanisms=("PLAIN", "LOGIN"))
    assert Session(settings).send("CAPA") == capa("SASL PLAIN LOGIN")


def test_capa_in_transaction_state_lists_no_login_capabilities_rfc2449_s5() -> None:
    assert logged_in().send("CAPA") == capa()


# --- STLS (RFC 2595 §4) --------------------------------------------------------------------------------------


def test_stls_discards_pipelined_commands_rfc2595_s4() -> None:
    session = Session(SETTINGS, auto_tls=False)
    out = session.send("STLS", "USER alice", f"PASS {PASSWORD}", "CAPA")
    assert out == "+OK begin TLS negotiation\r\n"
    assert session.events == [StartTLSRequested()]
    session.conn.receive_data(b"NOOP\r\nQUIT\r\n")  # arrives before the handshake: still plaintext
    assert session.conn.next_event() is None
    session.conn.tls_started()
    assert session.conn.tls_active and session.conn.buffered == 0
    assert session.send("CAPA") == capa("USER", "SASL PLAIN")


def test_stls_forgets_user_given_in_clear_rfc2595_s4() -> None:
    session = Session(CLEAR)
    assert session.send("USER alice", "STLS") == "+OK send PASS\r\n+OK begin TLS negotiation\r\n"
    assert session.send(f"PASS {PASSWORD}") == "-ERR USER first\r\n"


@pytest.mark.parametrize(
    ("settings", "command", "reply"),
    [
        (TLS, "STLS", "-ERR TLS already active"),
        (dataclasses.replace(CLEAR, tls_available=False), "STLS", "-ERR STLS not available"),
        (SETTINGS, "STLS now", "-ERR syntax: STLS"),
    ],
)
def test_stls_refused_rfc2595_s4(settings: POP3Settings, command: str, reply: str) -> None:
    session = Session(settings)
    assert session.send(command) == reply + "\r\n"
    assert not session.events


def test_stls_in_transaction_state_refused_rfc2595_s4() -> None:
    assert logged_in().send("STLS") == "-ERR command not valid in this state\r\n"


def test_tls_started_without_stls_is_a_programming_error() -> None:
    with pytest.raises(POP3ProtocolError):
        Session().conn.tls_started()


# --- USER / PASS (RFC 1939 §7, RFC 3206, RFC 2449 §8.1) ------------------------------------------------------


def test_user_pass_login_enters_transaction_rfc1939_s7() -> None:
    session = Session(TLS)
    assert session.send("USER alice") == "+OK send PASS\r\n"
    assert session.send(f"PASS {PASSWORD}") == "+OK maildrop has 3 messages (124 octets)\r\n"
    assert session.events == [LoginRequest("alice", PASSWORD, "USER")]
    assert session.conn.state is POP3State.TRANSACTION and session.conn.authenticated == "alice"


def test_pass_keeps_spaces_of_the_password_rfc1939_s7() -> None:
    session = Session()
    session.send("USER jörg", "PASS  two words ")
    event = session.events[0]
    assert isinstance(event, LoginRequest) and event.user == "jörg" and event.password == " two words "


def test_wrong_password_gets_auth_code_and_allows_retry_rfc3206_s4() -> None:
    session = Session()
    assert session.send("USER alice", "PASS wrong") == "+OK send PASS\r\n-ERR [AUTH] invalid credentials\r\n"
    assert session.conn.state is POP3State.AUTHORIZATION and session.conn.authenticated is None
    assert session.send(f"PASS {PASSWORD}") == "-ERR USER first\r\n"  # the USER was used up
    assert session.send("USER alice", f"PASS {PASSWORD}").endswith("+OK maildrop has 3 messages (124 octets)\r\n")


def test_in_use_and_sys_temp_codes_single_line_rfc2449_s8_1_2() -> None:
    session = Session()
    assert session.send("USER busy", "PASS x").endswith("-ERR [IN-USE] maildrop already locked\r\n")
    assert session.send("USER broken", "PASS x").endswith("-ERR [SYS/TEMP] store unavailable\r\n")


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        (["PASS secret"], "-ERR USER first"),
        (["USER"], "-ERR syntax: USER name"),
        (["USER a b"], "-ERR syntax: USER name"),
        (["USER alice", "PASS"], "+OK send PASS\r\n-ERR syntax: PASS password"),
        (["APOP alice 0123456789abcdef"], "-ERR APOP not supported"),
        (["STAT"], "-ERR command not valid in this state"),
        (["RETR 1"], "-ERR command not valid in this state"),
        (["XYZZY"], "-ERR unknown command"),
        ([""], "-ERR unknown command"),
    ],
)
def test_authorization_state_errors_rfc1939_s7(lines: list[str], reply: str) -> None:
    session = Session()
    assert session.send(*lines) == reply + "\r\n"
    assert session.conn.state is POP3State.AUTHORIZATION and not session.events


@pytest.mark.parametrize("command", ["USER alice", "PASS secret", "AUTH PLAIN", "AUTH"])
def test_plaintext_login_refused_before_tls_rfc2595_s2_1(command: str) -> None:
    session = Session(SETTINGS)
    assert session.send(command) == "-ERR [AUTH] plaintext authentication disallowed without TLS, use STLS first\r\n"
    assert not session.events


def test_user_disabled_rfc2449_s6_5() -> None:
    session = Session(dataclasses.replace(TLS, allow_user=False))
    assert session.send("USER alice", "PASS secret") == "-ERR USER not available, use AUTH\r\n" * 2


def test_quit_in_authorization_state_just_says_goodbye_rfc1939_s4() -> None:
    session = Session()
    assert session.send("QUIT", "NOOP") == "+OK pop.test POP3 server signing off\r\n"
    assert session.events == [Closed()] and session.removed is None


def test_login_answers_without_a_request_are_programming_errors() -> None:
    conn = Session().conn
    calls: list[Callable[[], None]] = [
        lambda: conn.accept_login([]),
        lambda: conn.reject_login("AUTH", "x"),
        lambda: conn.send_message(b""),
        lambda: conn.fail_retrieve("x"),
        lambda: conn.finish_update(True),
    ]
    for call in calls:
        with pytest.raises(POP3ProtocolError):
            call()


@pytest.mark.parametrize("messages", [[("bad uid", 1)], [("a", 1), ("a", 2)], [("x" * 71, 1)], [("a", -1)]])
def test_accept_login_validates_the_snapshot_rfc1939_s7(messages: list[tuple[str, int]]) -> None:
    conn = POP3ServerConnection(CLEAR)
    conn.receive_data(b"USER alice\r\nPASS secret\r\n")
    assert isinstance(conn.next_event(), LoginRequest)
    with pytest.raises(POP3ProtocolError):
        conn.accept_login(messages)


# --- AUTH (RFC 5034) -----------------------------------------------------------------------------------------


def test_auth_plain_with_initial_response_rfc5034_s4() -> None:
    session = Session(TLS)
    assert session.send(f"AUTH PLAIN {plain('alice')}") == "+OK maildrop has 3 messages (124 octets)\r\n"
    assert session.events == [LoginRequest("alice", PASSWORD, "PLAIN")]


def test_auth_plain_without_initial_response_rfc5034_s4() -> None:
    session = Session(TLS)
    assert session.send("auth plain") == "+ \r\n"
    assert session.send(plain("alice", authzid="alice")) == "+OK maildrop has 3 messages (124 octets)\r\n"


def test_auth_plain_wrong_password_rfc5034_s6() -> None:
    session = Session(TLS)
    assert session.send(f"AUTH PLAIN {plain('alice', 'nope')}") == "-ERR [AUTH] invalid credentials\r\n"


def test_auth_cancelled_with_star_rfc5034_s4() -> None:
    session = Session(TLS)
    assert session.send("AUTH PLAIN", "*") == "+ \r\n-ERR authentication cancelled\r\n"
    assert session.send("NOOP") == "-ERR command not valid in this state\r\n"  # back to commands


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        (["AUTH PLAIN ="], "-ERR [AUTH] authentication failed"),  # "=" is an empty initial response
        (["AUTH PLAIN *"], "-ERR authentication cancelled"),
        (["AUTH PLAIN !!!"], "-ERR invalid base64 in authentication response"),
        (["AUTH PLAIN", "QUIT"], "+ \r\n-ERR [AUTH] authentication failed"),  # a response, not a command
        (
            [f"AUTH PLAIN {plain('alice', authzid='bob')}"],
            "-ERR [AUTH] authentication failed: acting as another user is not allowed",
        ),
        (["AUTH CRAM-MD5"], "-ERR unsupported authentication mechanism"),
        (["AUTH LOGIN"], "-ERR unsupported authentication mechanism"),
        (["AUTH PLAIN a b"], "-ERR syntax: AUTH mechanism [initial-response]"),
        (["AUTH"], "+OK\r\nPLAIN\r\n."),
    ],
)
def test_auth_errors_rfc5034_s4(lines: list[str], reply: str) -> None:
    session = Session(TLS)
    assert session.send(*lines) == reply + "\r\n"
    assert not session.events and session.conn.state is POP3State.AUTHORIZATION


def test_auth_login_when_configured_rfc5034_s4() -> None:
    session = Session(dataclasses.replace(TLS, sasl_mechanisms=("PLAIN", "LOGIN")))
    assert session.send("AUTH LOGIN") == "+ VXNlcm5hbWU6\r\n"
    assert session.send("YWxpY2U=") == "+ UGFzc3dvcmQ6\r\n"
    assert session.send("c2VjcmV0").startswith("+OK maildrop")
    assert session.events == [LoginRequest("alice", PASSWORD, "LOGIN")]


def test_sasl_response_may_be_longer_than_a_command_but_bounded_rfc5034_s4() -> None:
    session = Session(TLS)
    long_but_fine = plain("alice", PASSWORD + "x" * 3000)
    assert session.send("AUTH PLAIN", long_but_fine) == "+ \r\n-ERR [AUTH] invalid credentials\r\n"
    assert session.send("AUTH PLAIN", "A" * 9000) == "+ \r\n-ERR authentication line too long\r\n"
    assert session.send("AUTH PLAIN " + "A" * 2000) == "-ERR command line too long\r\n"


# --- TRANSACTION state (RFC 1939 §5, §7) ---------------------------------------------------------------------


def test_stat_list_uidl_rfc1939_s5() -> None:
    session = logged_in()
    assert session.send("STAT", "LIST", "list 2", "UIDL", "UIDL 3") == (
        "+OK 3 124\r\n"
        "+OK 3 messages (124 octets)\r\n1 53\r\n2 47\r\n3 24\r\n.\r\n"
        "+OK 2 47\r\n"
        "+OK unique-id listing follows\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n"
        "+OK 3 uid-3\r\n"
    )


def test_empty_maildrop_rfc1939_s5() -> None:
    conn = POP3ServerConnection(CLEAR)
    conn.receive_data(b"USER alice\r\nPASS secret\r\n")
    assert isinstance(conn.next_event(), LoginRequest)
    conn.accept_login([])
    conn.receive_data(b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n")
    assert conn.next_event() is None
    assert conn.data_to_send() == (
        b"+OK send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n+OK 0 0\r\n+OK 0 messages (0 octets)\r\n.\r\n"
        b"+OK unique-id listing follows\r\n.\r\n-ERR no such message\r\n"
    )


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("LIST 4", "-ERR no such message"),
        ("LIST 0", "-ERR no such message"),
        ("LIST -1", "-ERR invalid message number -1"),
        ("LIST x", "-ERR invalid message number x"),
        ("LIST ²", "-ERR invalid message number ²"),
        ("LIST 1 2", "-ERR syntax: LIST [message]"),
        ("UIDL 99999999999999999999", "-ERR no such message"),
        ("RETR", "-ERR syntax: RETR message"),
        ("RETR 4", "-ERR no such message"),
        ("DELE", "-ERR syntax: DELE message"),
        ("DELE 0", "-ERR no such message"),
        ("TOP 1", "-ERR syntax: TOP message lines"),
        ("TOP 1 -1", "-ERR syntax: TOP message lines (a non-negative number)"),
        ("TOP 9 1", "-ERR no such message"),
        ("USER alice", "-ERR command not valid in this state"),
        ("AUTH PLAIN", "-ERR command not valid in this state"),
        ("FOO", "-ERR unknown command"),
    ],
)
def test_transaction_errors_rfc1939_s5(command: str, reply: str) -> None:
    session = logged_in()
    assert session.send(command) == reply + "\r\n"
    assert session.conn.state is POP3State.TRANSACTION


def test_retr_sends_size_and_stuffed_message_rfc1939_s7() -> None:
    session = logged_in()
    assert session.feed(b"RETR 2\r\n") == (
        b"+OK 47 octets\r\nSubject: two\r\n\r\n..\r\n...x\r\n..last line without CRLF\r\n.\r\n"
    )
    assert session.events[-1] == RetrieveRequest(2, "uid-2", None)


def test_top_zero_lines_and_more_lines_than_exist_rfc1939_s7() -> None:
    session = logged_in()
    assert session.feed(b"TOP 1 0\r\n") == b"+OK top of message follows\r\nSubject: one\r\nFrom: a@b.c\r\n\r\n.\r\n"
    assert session.feed(b"TOP 1 2\r\n").endswith(b"\r\n\r\nline 1\r\nline 2\r\n.\r\n")
    assert session.feed(b"TOP  1  100\r\n") == b"+OK top of message follows\r\n" + MESSAGES["uid-1"] + b".\r\n"
    assert session.events[-1] == RetrieveRequest(1, "uid-1", 100)


def test_pipelined_commands_wait_for_the_retrieve_answer_rfc2449_s6_6() -> None:
    conn = logged_in().conn
    conn.receive_data(b"RETR 3\r\nNOOP\r\n")
    assert conn.next_event() == RetrieveRequest(3, "uid-3", None)
    assert conn.next_event() is None and conn.data_to_send() == b""
    conn.send_message(MESSAGES["uid-3"])
    assert conn.next_event() is None
    assert conn.data_to_send() == b"+OK 24 octets\r\nSubject: three\r\n\r\nbody\r\n.\r\n+OK\r\n"


def test_fail_retrieve_reports_sys_temp_rfc3206_s4() -> None:
    conn = logged_in().conn
    conn.receive_data(b"RETR 1\r\n")
    assert isinstance(conn.next_event(), RetrieveRequest)
    conn.fail_retrieve("message vanished")
    assert conn.data_to_send() == b"-ERR [SYS/TEMP] message vanished\r\n"


def test_deleted_message_cannot_be_used_again_rfc1939_s5() -> None:
    session = logged_in()
    assert session.send("DELE 2", "DELE 2", "RETR 2", "LIST 2", "UIDL 2", "TOP 2 0") == (
        "+OK message 2 deleted\r\n" + "-ERR message 2 already deleted\r\n" * 5
    )
    assert session.send("STAT", "LIST", "UIDL") == (
        "+OK 2 77\r\n+OK 2 messages (77 octets)\r\n1 53\r\n3 24\r\n.\r\n"
        "+OK unique-id listing follows\r\n1 uid-1\r\n3 uid-3\r\n.\r\n"
    )


def test_dele_rset_quit_update_lists_rfc1939_s6() -> None:
    session = logged_in()
    assert session.send("DELE 1", "DELE 3", "RSET", "DELE 2", "NOOP") == (
        "+OK message 1 deleted\r\n+OK message 3 deleted\r\n+OK maildrop has 3 messages (124 octets)\r\n"
        "+OK message 2 deleted\r\n+OK\r\n"
    )
    assert session.send("DELE 3", "QUIT", "NOOP") == "+OK message 3 deleted\r\n+OK pop.test POP3 server signing off\r\n"
    assert session.removed == ["uid-2", "uid-3"]
    assert session.events[-2:] == [UpdateRequest(["uid-2", "uid-3"]), Closed()]
    assert session.conn.state is POP3State.UPDATE


def test_quit_without_deletions_still_updates_rfc1939_s6() -> None:
    session = logged_in()
    session.send("QUIT")
    assert session.removed == []


def test_failed_update_rfc1939_s6() -> None:
    session = Session(update_ok=False)
    session.send("USER alice", f"PASS {PASSWORD}", "DELE 1")
    assert session.send("QUIT") == "-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert session.closed


def test_eof_in_transaction_removes_nothing_rfc1939_s6() -> None:
    session = logged_in()
    session.send("DELE 1")
    session.conn.receive_eof()
    assert session.pump() == b""
    assert session.closed and session.removed is None
    assert session.conn.next_event() is None  # Closed is reported once


# --- framing, limits and error counting (RFC 1939 §3, RFC 2449 §4) --------------------------------------------


def test_commands_are_case_insensitive_and_tolerate_spaces_rfc1939_s3() -> None:
    session = logged_in()
    assert session.send("sTaT", "list   1", "Uidl 1 ") == "+OK 3 124\r\n+OK 1 53\r\n+OK 1 uid-1\r\n"


def test_bare_lf_ends_a_command_rfc1939_s3() -> None:
    assert logged_in().feed(b"STAT\nNOOP\r\n") == b"+OK 3 124\r\n+OK\r\n"


def test_overlong_line_is_refused_and_dropped_rfc2449_s4() -> None:
    session = logged_in()
    assert session.feed(b"NOOP " + b"x" * 500 + b"\r\n") == b"+OK\r\n"  # over 255, within the tolerance
    session.conn.receive_data(b"LIST " + b"1" * 100_000)
    assert session.pump() == b"" and session.conn.buffered < 1024
    assert session.feed(b"1\r\nSTAT\r\n") == b"-ERR command line too long\r\n+OK 3 124\r\n"


@pytest.mark.parametrize("line", [b"NOOP\x00", b"NO\rOP", b"NOOP \xff"])
def test_nul_bare_cr_and_bad_utf8_refused_rfc1939_s3(line: bytes) -> None:
    assert logged_in().feed(line + b"\r\n").startswith(b"-ERR ")


def test_too_many_errors_close_the_connection() -> None:
    session = logged_in(dataclasses.replace(CLEAR, max_errors=2))
    session.send("DELE 1")
    out = session.send("BAD", "BAD", "BAD", "NOOP")
    assert out == "-ERR unknown command\r\n" * 3 + "-ERR [SYS/PERM] too many errors, closing connection\r\n"
    assert session.closed and session.removed is None
    session.conn.receive_data(b"NOOP\r\n")
    assert session.pump() == b""


def test_maildrop_snapshot_matches_harness() -> None:
    assert MAILDROP == [("uid-1", 53), ("uid-2", 47), ("uid-3", 24)]


@pytest.mark.parametrize(
    "kwargs",
    [{"hostname": ""}, {"hostname": "a\r\nb"}, {"greeting": "x\n"}, {"max_line": 100}, {"sasl_mechanisms": ("X",)}],
)
def test_settings_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(CLEAR, **kwargs)  # type: ignore[arg-type]
