"""SMTP command-line parsing: RFC 5321 §4.1.1-4.1.2, RFC 1870, RFC 6152, RFC 6531, RFC 4954 §5, RFC 3461 §4,
RFC 3030 §3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.message.address import Address
from postkontor.protocol.smtp.commands import (
    Command,
    SMTPSyntaxError,
    decode_xtext,
    parse_auth,
    parse_bdat,
    parse_command,
    parse_mail,
    parse_rcpt,
)
from postkontor.protocol.smtp.events import MailParams, RcptParams


def _code(exc: pytest.ExceptionInfo[SMTPSyntaxError]) -> tuple[int, str | None]:
    return exc.value.reply.code, exc.value.reply.enhanced


def test_rfc5321_s2_4_verbs_are_case_insensitive() -> None:
    assert parse_command(b"eHlO client.example") == Command("EHLO", "client.example")
    assert parse_command(b"QUIT") == Command("QUIT", "")
    assert parse_command(b"MAIL FROM:<a@b>  SIZE=10 ") == Command("MAIL", "FROM:<a@b>  SIZE=10")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"", (500, "5.5.2")),
        (b"BOGUS", (500, "5.5.1")),
        (b"EHLO\tx", (500, "5.5.1")),
        (b"\xc3\xa9HLO x", (500, "5.5.1")),
        (b"NOOP \x00", (500, "5.5.2")),
        (b"EHLO \xff", (500, "5.5.2")),
        (b"EHLO a\x01b", (501, "5.5.2")),
        (b"MAIL FROM:<\xc3\x28@x> SMTPUTF8", (501, "5.6.7")),  # SECURITY-CASES 37
        (b"MAIL FROM:<\xc0\xaf@x> smtputf8", (501, "5.6.7")),
        (b"MAIL FROM:<\xed\xa0\x80@x> SMTPUTF8", (501, "5.6.7")),
        (b"MAIL FROM:<\xc3\x28@x>", (500, "5.5.2")),
    ],
)
def test_rfc5321_s4_1_1_command_line_errors(line: bytes, expected: tuple[int, str]) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_command(line)
    assert _code(info) == expected


def test_rfc6531_s3_2_invalid_utf8_in_smtputf8_transaction() -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_command(b"RCPT TO:<\xc3\x28@x>", smtputf8=True)
    assert _code(info) == (501, "5.6.7")


def test_rfc5321_s4_1_1_2_mail_from_basic_and_null_sender() -> None:
    assert parse_mail("FROM:<a@b.c>", esmtp=True) == (Address("a", "b.c"), MailParams())
    assert parse_mail("from:<>", esmtp=False) == (None, MailParams())
    # The common client bug of a space after the colon is tolerated (one space only).
    assert parse_mail("FROM: <a@b.c>", esmtp=True)[0] == Address("a", "b.c")
    for bad in ("FROM:  <a@b.c>", "FROM:a@b.c", "FROM <a@b.c>", "<a@b.c>", "FROM:<a@b.c", ""):
        with pytest.raises(SMTPSyntaxError) as info:
            parse_mail(bad, esmtp=True)
        assert info.value.reply.code == 501


def test_rfc5321_s4_1_2_quoted_local_part_with_space_and_bracket_then_params() -> None:
    sender, params = parse_mail('FROM:<"a> b"@x.y> SIZE=5', esmtp=True)
    assert sender == Address("a> b", "x.y")
    assert params.size == 5


def test_rfc1870_rfc6152_rfc6531_rfc4954_mail_parameters() -> None:
    _, params = parse_mail("FROM:<a@b.c> size=1000 BODY=8bitmime SMTPUTF8 AUTH=<>", esmtp=True)
    assert params == MailParams(size=1000, body="8BITMIME", smtputf8=True, auth="<>")
    _, params = parse_mail("FROM:<a@b.c> AUTH=e+3Dmc2@example.com BODY=7BIT", esmtp=True)
    assert params.auth == "e=mc2@example.com" and params.body == "7BIT"
    assert parse_mail("FROM:<a@b.c> SIZE=" + "9" * 20, esmtp=True)[1].size == 10**20 - 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("SIZE=-1", (501, "5.5.4")),
        ("SIZE=abc", (501, "5.5.4")),
        ("SIZE=" + "1" * 21, (501, "5.5.4")),
        ("SIZE", (501, "5.5.4")),
        ("SIZE=", (501, "5.5.4")),
        ("=", (501, "5.5.4")),
        ("=5", (501, "5.5.4")),
        ("SIZE==5", (501, "5.5.4")),
        ("SIZE=1 SIZE=2", (501, "5.5.4")),
        ("BODY=7BIT body=8BITMIME", (501, "5.5.4")),  # SECURITY-CASES 29: duplicate BODY=
        ("BODY=BINARYMIME", (501, "5.5.4")),
        ("SMTPUTF8=yes", (501, "5.5.4")),
        ("AUTH=a+zz", (501, "5.5.4")),
        ("AUTH=a+0D+0AX", (501, "5.5.4")),
        ("FOO=bar", (555, "5.5.4")),
        ("RET=FULL", (555, "5.5.4")),  # DSN parameters are unknown unless DSN is on
        ("ENVID=x", (555, "5.5.4")),
        (" ".join(f"X{i}=1" for i in range(11)), (501, "5.5.4")),
        (" ".join(["SIZE=1"] * 1000), (501, "5.5.4")),
    ],
)
def test_rfc5321_s4_1_2_mail_parameter_errors(params: str, expected: tuple[int, str]) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_mail(f"FROM:<a@b.c> {params}", esmtp=True)
    assert _code(info) == expected


def test_rfc1869_parameters_after_helo_are_refused() -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_mail("FROM:<a@b.c> SIZE=10", esmtp=False)
    assert _code(info) == (555, "5.5.4")
    with pytest.raises(SMTPSyntaxError) as info:
        parse_rcpt("TO:<a@b.c> NOTIFY=NEVER", esmtp=False, smtputf8=False, dsn=True)
    assert _code(info) == (555, "5.5.4")


def test_rfc3461_s4_dsn_parameters_when_enabled() -> None:
    _, params = parse_mail("FROM:<a@b.c> RET=hdrs ENVID=QQ+2B1", esmtp=True, dsn=True)
    assert params.ret == "HDRS" and params.envid == "QQ+1"
    recipient, rparams = parse_rcpt(
        "TO:<x@y.z> NOTIFY=success,delay ORCPT=rfc822;x+2Btag@y.z", esmtp=True, smtputf8=False, dsn=True
    )
    assert recipient == Address("x", "y.z")
    assert rparams == RcptParams(notify=("SUCCESS", "DELAY"), orcpt="rfc822;x+tag@y.z")
    assert parse_rcpt("TO:<x@y.z> NOTIFY=NEVER", esmtp=True, smtputf8=False, dsn=True)[1].notify == ("NEVER",)


@pytest.mark.parametrize(
    "params",
    [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=SOMETIMES",
        "NOTIFY=",
        "ORCPT=rfc822",
        "ORCPT=;x@y",
        "ORCPT=rfc822;",
        "ORCPT=rfc822;x+0D+0ABcc:+20v@ext",  # SECURITY-CASES 40: decoded CR LF
        "ORCPT=rfc822;x+00y",
        "ORCPT=rfc822;x+C3",  # not UTF-8 once decoded
        "ORCPT=rfc822;" + "a" * 600,
    ],
)
def test_rfc3461_s4_bad_rcpt_dsn_parameters(params: str) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_rcpt(f"TO:<x@y.z> {params}", esmtp=True, smtputf8=False, dsn=True)
    assert _code(info) == (501, "5.5.4")


@pytest.mark.parametrize("params", ["ENVID=a+0D+0AX:", "ENVID=" + "a" * 101, "RET=SOME", "RET"])
def test_rfc3461_s4_bad_mail_dsn_parameters(params: str) -> None:
    """SECURITY-CASES 40: no header can be injected through ENVID."""
    with pytest.raises(SMTPSyntaxError) as info:
        parse_mail(f"FROM:<a@b.c> {params}", esmtp=True, dsn=True)
    assert _code(info) == (501, "5.5.4")


def test_rfc3461_s4_xtext_decoding() -> None:
    assert decode_xtext("abc+2B+3D") == "abc+="
    assert decode_xtext("+C3+A9") == "é"
    for bad in ("a b", "a+", "a+2", "a=b", "+0A", "+7F", "é"):
        with pytest.raises(SMTPSyntaxError):
            decode_xtext(bad)


def test_rfc5321_s4_1_1_3_rcpt_to() -> None:
    assert parse_rcpt("To:<Postmaster>", esmtp=True, smtputf8=False) == (
        Address("postmaster", ""),
        RcptParams(),
    )
    assert parse_rcpt("TO: <u@x.y>", esmtp=True, smtputf8=False)[0] == Address("u", "x.y")
    with pytest.raises(SMTPSyntaxError) as info:
        parse_rcpt("TO:<u@x.y> NOTIFY=NEVER", esmtp=True, smtputf8=False)
    assert _code(info) == (555, "5.5.4")


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("TO:<a@>", (501, "5.1.3")),
        ("TO:<>", (501, "5.1.3")),
        ("TO:a@b.c", (501, "5.1.3")),
        ("FROM:<a@b.c>", (501, "5.5.4")),
        ("TO:<remote.test!u>", (554, "5.7.1")),
        ("TO:<u%remote.test>", (554, "5.7.1")),
        ("TO:<u@remote.test@example.test>", (554, "5.7.1")),
        ("TO:<remote.test!u%example.test>", (554, "5.7.1")),
        ("TO:<jörg@bücher.test>", (553, "5.6.7")),
        (f"TO:<{'a' * 65}@b.c>", (501, "5.1.3")),
    ],
)
def test_rfc5321_s4_1_1_3_rcpt_errors(arg: str, expected: tuple[int, str]) -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_rcpt(arg, esmtp=True, smtputf8=False)
    assert _code(info) == expected


def test_rfc5321_s4_1_1_2_mail_address_errors() -> None:
    with pytest.raises(SMTPSyntaxError) as info:
        parse_mail("FROM:<jörg@bücher.test>", esmtp=True)
    assert _code(info) == (553, "5.6.7")
    assert parse_mail("FROM:<jörg@bücher.test> SMTPUTF8", esmtp=True)[0] == Address("jörg", "bücher.test")
    for bad in ("FROM:<a\x00@b>", "FROM:<a@@b>", f"FROM:<{'a' * 65}@b.c>"):
        with pytest.raises(SMTPSyntaxError) as info:
            parse_mail(bad, esmtp=True)
        assert _code(info) == (501, "5.1.7")


def test_rfc3030_s3_bdat_arguments() -> None:
    assert parse_bdat("100") == (100, False)
    assert parse_bdat("0 last") == (0, True)
    assert parse_bdat("9" * 20 + " LAST") == (10**20 - 1, True)
    for bad in ("", "-1", "abc", "1" * 21, "10 NOTLAST", "10 LAST x", "10  LAST", "+5"):
        with pytest.raises(SMTPSyntaxError) as info:
            parse_bdat(bad)
        assert _code(info) == (501, "5.5.4")


def test_rfc4954_s4_auth_arguments() -> None:
    assert parse_auth("plain") == ("PLAIN", None)
    assert parse_auth("PLAIN AHUAcA==") == ("PLAIN", "AHUAcA==")
    assert parse_auth("LOGIN =") == ("LOGIN", "=")
    for bad in ("", "PLAIN a b", "PL@IN", "X" * 21):
        with pytest.raises(SMTPSyntaxError):
            parse_auth(bad)


@given(st.binary(max_size=200), st.booleans())
def test_rfc5321_s4_1_1_any_line_parses_or_raises_syntax_error(line: bytes, smtputf8: bool) -> None:
    try:
        command = parse_command(line, smtputf8=smtputf8)
    except SMTPSyntaxError as exc:
        assert exc.reply.code in (500, 501)
        return
    assert command.verb.isupper()


_ARG = st.one_of(
    st.text(max_size=120),
    st.builds(
        lambda prefix, path, params: f"{prefix}:<{path}> {params}",
        st.sampled_from(["FROM", "TO", "from", "To"]),
        st.text(max_size=60),
        st.text(alphabet="SIZEBODYNOTIFYRCPT=+0123456789;,. <>@", max_size=40),
    ),
)


@given(_ARG, st.booleans(), st.booleans(), st.booleans())
def test_rfc5321_s4_1_2_any_argument_parses_or_raises_syntax_error(
    argument: str, esmtp: bool, dsn: bool, smtputf8: bool
) -> None:
    for parse in (
        lambda: parse_mail(argument, esmtp=esmtp, dsn=dsn),
        lambda: parse_rcpt(argument, esmtp=esmtp, smtputf8=smtputf8, dsn=dsn),
        lambda: parse_bdat(argument),
        lambda: parse_auth(argument),
    ):
        try:
            parse()
        except SMTPSyntaxError as exc:
            assert 500 <= exc.reply.code <= 555
            assert exc.reply.enhanced is not None


@given(
    st.lists(
        st.sampled_from(
            ["SIZE=10", "BODY=8BITMIME", "SMTPUTF8", "AUTH=<>", "RET=FULL", "ENVID=x", "X=1", "=", "SIZE=x"]
        ),
        max_size=12,
    )
)
def test_rfc5321_s4_1_2_parameter_combinations(params: list[str]) -> None:
    try:
        _, parsed = parse_mail("FROM:<a@b.c> " + " ".join(params), esmtp=True, dsn=True)
    except SMTPSyntaxError as exc:
        assert exc.reply.code in (501, 555)
        return
    assert len(params) == len({p.split("=")[0] for p in params}) <= 10
    assert parsed.size == (10 if "SIZE=10" in params else None)
