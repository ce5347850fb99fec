"""IMAP views of a message: ENVELOPE and BODY/BODYSTRUCTURE (RFC 9051 §7.5.2), BODY[section] (§6.4.5), BINARY
(RFC 3516) and the SEARCH helpers (§6.4.4). Expected values are written by hand in the shape Dovecot returns
(with type/subtype/encoding upper-cased as in the RFC examples)."""

from __future__ import annotations

import datetime

from hypothesis import given
from hypothesis import strategies as st

from postkontor.message.imapview import (
    binary_section,
    binary_size,
    find_part,
    header_block,
    header_matches,
    parse_structure,
    partial,
    section_bytes,
    sent_date,
    text_matches,
)
from postkontor.message.imapview import bodystructure as raw_bodystructure
from postkontor.message.imapview import envelope as raw_envelope
from postkontor.protocol.imap.commands import Section
from postkontor.protocol.imap.response import render
from postkontor.protocol.imap.values import Concat, IMAPValue


def flat(value: IMAPValue) -> IMAPValue:
    """The value with every Concat spliced into its parent list: the shape the RFC examples are written in."""
    if isinstance(value, list):
        out: list[IMAPValue] = []
        for item in value:
            if isinstance(item, Concat):
                out.extend(flat(inner) for inner in item)
            else:
                out.append(flat(item))
        return out
    return value


def envelope(data: bytes) -> IMAPValue:
    return flat(raw_envelope(data))


def bodystructure(data: bytes, part: object, extensible: bool) -> IMAPValue:
    return flat(raw_bodystructure(data, part, extensible))  # type: ignore[arg-type]


def test_rfc9051_s9_bodies_and_addresses_are_written_back_to_back() -> None:
    """RFC 9051 §9: body-type-mpart is 1*body SP subtype, an address list "(" 1*address ")": no SP between."""
    data = (
        b"From: a@x.test, b@y.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\n"
    )
    assert b'((NIL NIL "a" "x.test")(NIL NIL "b" "y.test"))' in render(raw_envelope(data))
    structure = render(raw_bodystructure(data, parse_structure(data), False))
    assert structure.startswith(b'(("TEXT" "PLAIN"') and b' 1)("TEXT" "PLAIN"' in structure
    assert structure.endswith(b') "MIXED")')



# The message of the RFC 9051 §8 / RFC 3501 §8 FETCH example.
RFC_EXAMPLE_HEADER = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US,\r\n"
    b"    John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
)

MIXED = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: report\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="==outer=="\r\n'
    b"\r\n"
    b"--==outer==\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Gr=FC=DFe\r\n"
    b"line two\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<b>Gr\xc3\xbc\xc3\x9fe</b>\r\n"
    b"--inner--\r\n"
    b"\r\n"
    b"--==outer==\r\n"
    b'Content-Type: application/pdf; name="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="report.pdf"\r\n'
    b"Content-ID: <pdf@example.com>\r\n"
    b"Content-Description: The report\r\n"
    b"Content-Language: en, de\r\n"
    b"Content-Location: http://example.com/report.pdf\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--==outer==\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: carol@example.net\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner text\r\n"
    b"--==outer==--\r\n"
)


def _sec(part: tuple[int, ...] = (), text: str | None = None, fields: tuple[str, ...] = ()) -> Section:
    return Section(part, text, fields)


# --- ENVELOPE -------------------------------------------------------------------------------------------------------
def test_rfc9051_s7_5_2_envelope_of_the_rfc_example() -> None:
    terry: IMAPValue = [["Terry Gray", None, "gray", "cac.washington.edu"]]
    assert envelope(RFC_EXAMPLE_HEADER + b"body\r\n") == [
        "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
        "IMAP4rev1 WG mtg summary and minutes",
        terry,
        terry,  # Sender and Reply-To default to From
        terry,
        [[None, None, "imap", "cac.washington.edu"]],
        [[None, None, "minutes", "CNRI.Reston.VA.US"], ["John Klensin", None, "KLENSIN", "MIT.EDU"]],
        None,
        None,
        "<B27397-0100000@cac.washington.edu>",
    ]


def test_rfc9051_s7_5_2_envelope_groups_routes_comments_and_quotes() -> None:
    header = (
        b'From: "Doe, John" <john@example.com>\r\n'
        b"Sender: (Mail Robot) robot@example.com\r\n"
        b"Reply-To:\r\n"
        b"To: undisclosed-recipients:;\r\n"
        b"Cc: Team: a@example.com, B <b@example.com>;, root, <@relay.example,@r2.example:joe@example.org>\r\n"
        b"Bcc: joe@example.org (Joe Q. Public)\r\n"
        b"In-Reply-To: <x@y>\r\n"
    )
    env = envelope(header)
    assert isinstance(env, list)
    john: IMAPValue = [["Doe, John", None, "john", "example.com"]]
    assert env[2] == john
    assert env[3] == [["Mail Robot", None, "robot", "example.com"]]
    assert env[4] == john  # present but empty: defaults to From (RFC 9051 §7.5.2)
    assert env[5] == [[None, None, "undisclosed-recipients", None], [None, None, None, None]]
    assert env[6] == [
        [None, None, "Team", None],
        [None, None, "a", "example.com"],
        ["B", None, "b", "example.com"],
        [None, None, None, None],
        [None, None, "root", ""],  # no host: "" (NIL host would mean group syntax)
        [None, "@relay.example,@r2.example", "joe", "example.org"],
    ]
    assert env[7] == [["Joe Q. Public", None, "joe", "example.org"]]
    assert env[0] is None and env[1] is None and env[9] is None
    assert env[8] == "<x@y>"


def test_rfc9051_s7_5_2_envelope_raw_encoded_words_8bit_and_folding() -> None:
    header = (
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\tand more\r\n"
        b"From: =?iso-8859-1?q?J=F6rg?= <j@example.de>\r\n"
        b"To: \xc3\x84nne <a@example.de>\r\n"
        b"Cc: \xc4nne <a@example.de>\r\n"
        b"Message-ID: \xff\r\n"
    )
    env = envelope(header)
    assert isinstance(env, list)
    assert env[1] == "=?utf-8?q?Gr=C3=BC=C3=9Fe?=\tand more"  # unfolded, not decoded
    assert env[2] == [["=?iso-8859-1?q?J=F6rg?=", None, "j", "example.de"]]
    assert env[5] == [["Änne", None, "a", "example.de"]]
    assert env[6] == [[b"\xc4nne", None, "a", "example.de"]]  # not UTF-8: the raw bytes
    assert env[9] == b"\xff"


def test_envelope_bare_lf_and_first_occurrence() -> None:
    env = envelope(b"Subject: one\nSubject: two\nFrom: a@b\n\nSubject: body\n")
    assert isinstance(env, list)
    assert env[1] == "one"
    assert env[2] == [[None, None, "a", "b"]]


# --- BODY / BODYSTRUCTURE -----------------------------------------------------------------------------------------
def test_rfc9051_s7_5_2_body_of_the_rfc_example() -> None:
    body = b"x" * 10 + b"\r\n" + b"y\r\n"
    data = RFC_EXAMPLE_HEADER + body
    root = parse_structure(data)
    assert bodystructure(data, root, False) == ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 15, 2]
    assert bodystructure(data, root, True) == [
        *["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 15, 2],
        *[None, None, None, None],
    ]


def test_rfc2045_s5_2_default_charset_added_and_lines_of_unterminated_text() -> None:
    data = b"Subject: x\r\n\r\nab\r\ncd"
    assert bodystructure(data, parse_structure(data), False) == [
        *["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 6, 2]
    ]


def test_rfc9051_s7_5_2_bodystructure_nested_multipart_attachment_and_message() -> None:
    root = parse_structure(MIXED)
    inner_envelope: IMAPValue = [
        None,
        "inner",
        [[None, None, "carol", "example.net"]],
        [[None, None, "carol", "example.net"]],
        [[None, None, "carol", "example.net"]],
        None,
        None,
        None,
        None,
        None,
    ]
    plain: IMAPValue = ["TEXT", "PLAIN", ["CHARSET", "iso-8859-1"], None, None, "QUOTED-PRINTABLE", 19, 2]
    html: IMAPValue = ["TEXT", "HTML", ["CHARSET", "utf-8"], None, None, "7BIT", 14, 1]
    pdf: IMAPValue = [
        *["APPLICATION", "PDF", ["NAME", "report.pdf"], "<pdf@example.com>", "The report", "BASE64", 12],
    ]
    inner_body: IMAPValue = ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 10, 1]
    message: IMAPValue = ["MESSAGE", "RFC822", None, None, None, "7BIT", 53, inner_envelope, inner_body, 4]
    assert bodystructure(MIXED, root, False) == [[plain, html, "ALTERNATIVE"], pdf, message, "MIXED"]
    ext = [None, None, None, None]
    assert bodystructure(MIXED, root, True) == [
        [[*plain, *ext], [*html, *ext], "ALTERNATIVE", ["BOUNDARY", "inner"], None, None, None],
        [
            *pdf,
            None,
            ["ATTACHMENT", ["FILENAME", "report.pdf"]],
            ["en", "de"],
            "http://example.com/report.pdf",
        ],
        [*message[:8], [*inner_body, *ext], 4, *ext],
        "MIXED",
        ["BOUNDARY", "==outer=="],
        None,
        None,
        None,
    ]


def test_multipart_without_parts_gets_one_empty_text_body() -> None:
    data = b"Content-Type: multipart/mixed; boundary=none\r\n\r\nno delimiters here\r\n"
    empty: IMAPValue = ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 0, 0]
    assert bodystructure(data, parse_structure(data), False) == [empty, "MIXED"]


# --- BODY[section] ---------------------------------------------------------------------------------------------------
def test_rfc9051_s6_4_5_sections_of_a_multipart() -> None:
    root = parse_structure(MIXED)
    header = MIXED[: MIXED.index(b"\r\n\r\n") + 4]
    assert section_bytes(MIXED, root, _sec()) == MIXED
    assert section_bytes(MIXED, root, _sec(text="HEADER")) == header
    assert section_bytes(MIXED, root, _sec(text="TEXT")) == MIXED[len(header) :]
    assert section_bytes(MIXED, root, _sec(text="MIME")) is None
    assert section_bytes(MIXED, root, _sec((1, 1))) == b"Gr=FC=DFe\r\nline two"
    assert section_bytes(MIXED, root, _sec((1, 2), "MIME")) == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert section_bytes(MIXED, root, _sec((2,))) == b"JVBERi0xLjQK"
    assert section_bytes(MIXED, root, _sec((1, 3))) is None
    assert section_bytes(MIXED, root, _sec((4,))) is None
    assert section_bytes(MIXED, root, _sec((2,), "HEADER")) is None  # not message/rfc822
    inner = b"From: carol@example.net\r\nSubject: inner\r\n\r\ninner text"
    assert section_bytes(MIXED, root, _sec((3,))) == inner
    assert section_bytes(MIXED, root, _sec((3,), "HEADER")) == inner[: inner.index(b"inner text")]
    assert section_bytes(MIXED, root, _sec((3,), "TEXT")) == b"inner text"
    # The encapsulated message is not multipart: 3.1 is its body.
    assert section_bytes(MIXED, root, _sec((3, 1))) == b"inner text"
    assert section_bytes(MIXED, root, _sec((3,), "HEADER.FIELDS", ("SUBJECT",))) == b"Subject: inner\r\n\r\n"


def test_rfc9051_s6_4_5_single_part_message_part_1_is_the_body() -> None:
    data = RFC_EXAMPLE_HEADER + b"hello\r\n"
    root = parse_structure(data)
    assert section_bytes(data, root, _sec((1,))) == b"hello\r\n"
    assert section_bytes(data, root, _sec((1,), "MIME")) == RFC_EXAMPLE_HEADER
    assert section_bytes(data, root, _sec((2,))) is None
    assert section_bytes(data, root, _sec((1, 1))) is None


def test_rfc9051_s6_4_5_header_fields_keep_folding_and_end_with_blank_line() -> None:
    data = RFC_EXAMPLE_HEADER + b"x"
    root = parse_structure(data)
    assert section_bytes(data, root, _sec(text="HEADER.FIELDS", fields=("CC", "FROM"))) == (
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"cc: minutes@CNRI.Reston.VA.US,\r\n    John Klensin <KLENSIN@MIT.EDU>\r\n\r\n"
    )
    assert section_bytes(data, root, _sec(text="HEADER.FIELDS", fields=("X-NONE",))) == b"\r\n"
    not_fields = section_bytes(data, root, _sec(text="HEADER.FIELDS.NOT", fields=("CC", "DATE", "MIME-VERSION")))
    assert not_fields is not None
    assert not_fields.startswith(b"From: ") and b"cc:" not in not_fields and b"Date:" not in not_fields
    assert not_fields.endswith(b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n")
    # A last field without a line ending (no body at all) still gets one.
    assert section_bytes(
        b"Subject: x", parse_structure(b"Subject: x"), _sec(text="HEADER.FIELDS", fields=("SUBJECT",))
    ) == (b"Subject: x\r\n\r\n")


def test_partial_rfc9051_s6_4_5() -> None:
    assert partial(b"0123456789", 2, 3) == b"234"
    assert partial(b"0123456789", 8, 10) == b"89"
    assert partial(b"0123456789", 20, 1) == b""


# --- BINARY (RFC 3516) -----------------------------------------------------------------------------------------------
def test_rfc3516_binary_decodes_and_reports_unknown_encodings() -> None:
    root = parse_structure(MIXED)
    assert binary_section(MIXED, root, (2,)) == b"%PDF-1.4\n"
    assert binary_size(MIXED, root, (2,)) == 9
    assert binary_section(MIXED, root, (1, 1)) == b"Gr\xfc\xdfe\r\nline two"
    assert binary_section(MIXED, root, ()) == MIXED
    assert binary_section(MIXED, root, (9,)) == b"" and find_part(root, (9,)) is None
    odd = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    assert binary_section(odd, parse_structure(odd), (1,)) is None
    assert binary_size(odd, parse_structure(odd), (1,)) is None


# --- SEARCH helpers (RFC 9051 §6.4.4) --------------------------------------------------------------------------------
def test_rfc9051_s6_4_4_header_search_decodes_and_ignores_case() -> None:
    header = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus\r\n Berlin\r\nX-Empty:\r\nTo: Bob <bob@example.org>\r\n\r\n"
    assert header_matches(header, "SUBJECT", "GRÜSSE AUS BERLIN")
    assert header_matches(header, "TO", "BOB@EXAMPLE")
    assert not header_matches(header, "TO", "alice")
    assert header_matches(header, "X-EMPTY", "")  # empty string: the field is present
    assert not header_matches(header, "CC", "")
    assert not header_matches(header + b"Cc: in body\r\n", "CC", "")


def test_rfc9051_s6_4_4_body_and_text_search() -> None:
    assert text_matches(MIXED, "grüße", False)  # quoted-printable ISO-8859-1 part decoded
    assert text_matches(MIXED, "LINE TWO", False)
    assert text_matches(MIXED, "inner text", False)  # text inside the encapsulated message
    assert not text_matches(MIXED, "%PDF", False)  # non-text parts are not searched
    assert not text_matches(MIXED, "report", False)  # only in headers
    assert text_matches(MIXED, "REPORT", True)
    assert text_matches(MIXED, "", False)
    b64 = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nw6TDtsO8\r\n"
    assert text_matches(b64, "ÄÖÜ", False)
    assert text_matches(b64, "ÄÖÜ", False, structure=parse_structure(b64))


def test_rfc9051_s6_4_4_sent_date_in_the_fields_own_zone() -> None:
    assert sent_date(b"Date: Wed, 17 Jul 1996 23:59:00 -0700\r\n\r\n") == datetime.date(1996, 7, 17)
    assert sent_date(b"Date: 1 Jan 2024 00:30:00 +1400\r\n") == datetime.date(2024, 1, 1)
    assert sent_date(b"Date: not a date\r\n") is None
    assert sent_date(b"Subject: none\r\n") is None


def test_header_block_includes_the_blank_line() -> None:
    assert header_block(RFC_EXAMPLE_HEADER + b"body") == RFC_EXAMPLE_HEADER
    assert header_block(b"Subject: x") == b"Subject: x"


# --- robustness ------------------------------------------------------------------------------------------------------
_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename*=utf-8''%FF\r\n",
        b"Content-Language: (x)\r\n",
        b"From: a <b@c>, g: d@e;\r\n",
        b'To: "unterminated <\r\n',
        b"Date: Mon, 99 Foo 1996\r\n",
        b"\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"=?utf-8?b?w6Q?= =?x?q?=ZZ?=\r\n",
        b"\xff\xfe(\\",
    ]
)
_SECTIONS = st.builds(
    Section,
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.sampled_from([None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"]),
    st.one_of(st.just(("FROM", "CONTENT-TYPE")), st.lists(st.text(max_size=5), max_size=3).map(tuple)),
)


@given(st.one_of(st.binary(max_size=1500), st.lists(_PIECES, max_size=30).map(b"".join)), _SECTIONS)
def test_hypothesis_views_never_raise(data: bytes, section: Section) -> None:
    root = parse_structure(data)
    envelope(data)
    bodystructure(data, root, True)
    bodystructure(data, root, False)
    got = section_bytes(data, root, section)
    if got is not None and section.text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        assert got in data  # every other section is a slice of the message
    binary_section(data, root, section.part)
    header_matches(data, "FROM", "a")
    text_matches(data, "x", True, structure=root)
    sent_date(data)
