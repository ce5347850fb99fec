"""SASL step machines: PLAIN (RFC 4616), LOGIN, and response decoding (RFC 4954 §4, RFC 9051 §6.2.2)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.protocol.sasl import (
    Challenge,
    Credentials,
    LoginMechanism,
    PlainMechanism,
    SASLFailure,
    SASLFailureKind,
    decode_response,
    encode_challenge,
    server_mechanism,
    supported_mechanisms,
)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_rfc4616_s2_plain_with_initial_response() -> None:
    step = PlainMechanism().start(b"\x00alice\x00s3cret")
    assert step == Credentials("", "alice", "s3cret")
    assert "s3cret" not in repr(step)


def test_rfc4616_s2_plain_authzid_equal_to_authcid_is_accepted() -> None:
    assert PlainMechanism().start(b"alice\x00alice\x00pw") == Credentials("alice", "alice", "pw")


def test_rfc4616_s2_plain_authzid_different_from_authcid_is_reported_for_the_protocol_to_refuse() -> None:
    step = PlainMechanism().start(b"root\x00alice\x00pw")
    assert step == Credentials("root", "alice", "pw") and step.acts_as_other
    assert not Credentials("Alice@X.test", "alice@x.test", "pw").acts_as_other
    assert not Credentials("", "alice", "pw").acts_as_other


def test_rfc4616_s2_plain_empty_challenge_without_initial_response() -> None:
    mechanism = PlainMechanism()
    assert mechanism.start(None) == Challenge(b"")
    assert not mechanism.finished
    assert mechanism.step(b"\x00bob\x00pw") == Credentials("", "bob", "pw")
    assert mechanism.finished


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"alice",
        b"\x00alice",
        b"\x00\x00pw",  # empty authcid
        b"\x00alice\x00",  # empty password
        b"\x00u\x00p\x00x",  # SECURITY-CASES 22: extra NUL
        b"\x00\x00\x00",
        b"\x00al\xffice\x00pw",  # not UTF-8
        b"\x00alice\x00p\xc3",
        b"\xc0\xaf\x00alice\x00pw",
    ],
)
def test_rfc4616_s2_malformed_plain_messages_fail(message: bytes) -> None:
    step = PlainMechanism().start(message)
    assert isinstance(step, SASLFailure)
    assert step.kind is SASLFailureKind.MALFORMED


def test_rfc4616_utf8_identities() -> None:
    message = "\x00jörg\x00pässwörd".encode()
    assert PlainMechanism().start(message) == Credentials("", "jörg", "pässwörd")


def test_login_prompts_username_then_password() -> None:
    """draft-murchison-sasl-login §2: prompts "Username:" and "Password:", base64 per RFC 4954 §4."""
    mechanism = LoginMechanism()
    first = mechanism.start(None)
    assert first == Challenge(b"Username:")
    assert isinstance(first, Challenge) and encode_challenge(first.data) == "VXNlcm5hbWU6"
    second = mechanism.step(b"alice")
    assert second == Challenge(b"Password:")
    assert isinstance(second, Challenge) and encode_challenge(second.data) == "UGFzc3dvcmQ6"
    assert mechanism.step(b"pw") == Credentials("", "alice", "pw")
    assert mechanism.finished


def test_login_initial_response_is_the_username() -> None:
    """draft-murchison-sasl-login §2.1: an initial response carries the user name."""
    mechanism = LoginMechanism()
    assert mechanism.start(b"alice") == Challenge(b"Password:")
    assert mechanism.step(b"pw") == Credentials("", "alice", "pw")


@pytest.mark.parametrize(("user", "password"), [(b"", b"pw"), (b"alice", b""), (b"a\x00b", b"pw"), (b"\xff", b"pw")])
def test_login_malformed_fields_fail(user: bytes, password: bytes) -> None:
    """RFC 4422 §3.7: an invalid response ends the exchange; empty, NUL or non-UTF-8 fields fail."""
    mechanism = LoginMechanism()
    mechanism.start(None)
    step = mechanism.step(user)
    if isinstance(step, Challenge):
        step = mechanism.step(password)
    assert isinstance(step, SASLFailure) and step.kind is SASLFailureKind.MALFORMED


def test_steps_after_the_end_fail() -> None:
    """RFC 4422 §3: after the outcome no further step is possible."""
    for mechanism in (PlainMechanism(), LoginMechanism()):
        if isinstance(mechanism, LoginMechanism):
            mechanism.start(b"u")
        outcome = mechanism.step(b"\x00u\x00p") if isinstance(mechanism, PlainMechanism) else mechanism.step(b"p")
        assert isinstance(outcome, Credentials)
        again = mechanism.step(b"\x00u\x00p")
        assert isinstance(again, SASLFailure)
        assert isinstance(mechanism.start(None), SASLFailure)


def test_rfc4954_s4_star_cancels_distinct_from_bad_base64() -> None:
    cancelled = decode_response(b"*")
    assert isinstance(cancelled, SASLFailure) and cancelled.kind is SASLFailureKind.CANCELLED
    for bad in (b"!!!notbase64", b"QQ", b"QQ==QQ==", b"Q Q==", b"QUJD\n", "Zm9v\u00e9"):
        failure = decode_response(bad)
        assert isinstance(failure, SASLFailure) and failure.kind is SASLFailureKind.BAD_ENCODING


def test_rfc4954_s4_equals_is_an_empty_initial_response_only() -> None:
    assert decode_response(b"=", initial=True) == b""
    assert isinstance(decode_response(b"="), SASLFailure)
    assert decode_response(b"") == b""
    assert decode_response("Zm9v") == b"foo"


def test_step_line_decodes_and_ends_on_cancel() -> None:
    """RFC 4954 §4: base64 response lines, "*" cancels."""
    mechanism = LoginMechanism()
    mechanism.start(None)
    assert mechanism.step_line(_b64(b"alice")) == Challenge(b"Password:")
    outcome = mechanism.step_line(b"*")
    assert isinstance(outcome, SASLFailure) and outcome.kind is SASLFailureKind.CANCELLED
    assert mechanism.finished


def test_rfc4422_s3_1_mechanism_names_are_case_insensitive() -> None:
    assert isinstance(server_mechanism("plain"), PlainMechanism)
    assert isinstance(server_mechanism("Login"), LoginMechanism)
    assert server_mechanism("CRAM-MD5") is None
    assert set(supported_mechanisms()) == {"PLAIN", "LOGIN"}
    assert server_mechanism("PLAIN") is not server_mechanism("PLAIN")


@given(st.binary(max_size=200))
def test_rfc4616_any_plain_message_gives_credentials_or_failure(message: bytes) -> None:
    outcome = PlainMechanism().start(message)
    assert isinstance(outcome, Credentials | SASLFailure)
    if isinstance(outcome, Credentials):
        assert outcome.authcid and outcome.password
        assert outcome.acts_as_other == (outcome.authzid.strip().lower() not in ("", outcome.authcid.strip().lower()))


@given(st.one_of(st.binary(max_size=100), st.text(max_size=100)))
def test_rfc4954_s4_any_response_line_decodes_or_fails_cleanly(line: bytes | str) -> None:
    for initial in (False, True):
        outcome = decode_response(line, initial=initial)
        assert isinstance(outcome, bytes | SASLFailure)


@given(st.lists(st.binary(max_size=30), max_size=4))
def test_login_any_response_sequence_is_handled(responses: list[bytes]) -> None:
    """RFC 4422 §3: any response sequence ends in a challenge, credentials or a failure."""
    mechanism = LoginMechanism()
    mechanism.start(None)
    for response in responses:
        outcome = mechanism.step_line(_b64(response))
        assert isinstance(outcome, Challenge | Credentials | SASLFailure)
