"""IMAP response serialisation: strings as quoted/literal (RFC 9051 §4.3, §9 quoted/literal), NIL, numbers and
lists (§4.4, §4.5), status responses (§7.1), continuation requests (§7.5), mailbox names (§5.1, RFC 3501
§5.1.3 for IMAP4rev1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.protocol.imap import commands as c
from postkontor.protocol.imap.framing import CommandFramer, RawCommand
from postkontor.protocol.imap.parser import parse_command
from postkontor.protocol.imap.response import (
    QUOTED_MAX,
    astring,
    continuation,
    encode_mailbox,
    literal,
    nstring,
    quoted,
    render,
    string,
    tagged,
    untagged,
    untagged_status,
)
from postkontor.protocol.imap.values import Atom, IMAPValue


def test_rfc9051_s4_5_nil_numbers_atoms_lists() -> None:
    assert render(None) == b"NIL"
    assert render(42) == b"42"
    assert render(Atom("\\Seen")) == b"\\Seen"
    assert render([]) == b"()"
    assert render([Atom("\\Seen"), [1, None], "7BIT"]) == b'(\\Seen (1 NIL) "7BIT")'


def test_rfc9051_s4_3_quoted_escapes_backslash_and_dquote() -> None:
    assert render('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert quoted(b"") == b'""'


def test_rfc9051_s4_3_cr_lf_nul_force_a_literal() -> None:
    assert render("a\r\nb") == b"{4}\r\na\r\nb"
    assert render(b"nul\x00") == b"{4}\r\nnul\x00"
    with pytest.raises(ValueError):
        quoted("a\nb")


def test_long_strings_become_literals() -> None:
    value = "x" * (QUOTED_MAX + 1)
    assert render(value) == literal(value)
    assert render("x" * QUOTED_MAX) == b'"' + b"x" * QUOTED_MAX + b'"'


def test_rfc3501_imap4rev1_8bit_strings_are_literals_rfc9051_quoted() -> None:
    assert render("Grüße", utf8=False) == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"
    assert render("Grüße", utf8=True) == b'"Gr\xc3\xbc\xc3\x9fe"'
    assert render(b"\xff\xfe", utf8=True) == b"{2}\r\n\xff\xfe"  # not UTF-8: never quoted


def test_rfc3516_literal8() -> None:
    assert literal(b"\x00\x01", literal8=True) == b"~{2}\r\n\x00\x01"


def test_bool_and_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError):
        render(True)
    with pytest.raises(TypeError):
        render([object()])  # type: ignore[list-item]


def test_rfc9051_s9_astring_and_nstring() -> None:
    assert astring("INBOX") == b"INBOX"
    assert astring("a]b") == b"a]b"
    assert astring("") == b'""'
    assert astring("two words") == b'"two words"'
    assert astring("nil") == b'"nil"'
    assert astring("a%") == b'"a%"'
    assert nstring(None) == b"NIL"
    assert nstring("NIL") == b'"NIL"'
    assert string("x") == b'"x"'


def test_rfc9051_s7_1_tagged_and_untagged_status() -> None:
    assert tagged("a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert tagged("a2", "NO", "too big", "TOOBIG") == b"a2 NO [TOOBIG] too big\r\n"
    assert tagged("a3", "OK", "", "READ-WRITE") == b"a3 OK [READ-WRITE] OK\r\n"
    assert tagged("a4", "BAD", "evil\r\n* OK injected") == b"a4 BAD evil * OK injected\r\n"
    assert untagged_status("BYE", "bye") == b"* BYE bye\r\n"
    assert untagged(b"3 EXISTS") == b"* 3 EXISTS\r\n"


def test_rfc9051_s7_5_continuation() -> None:
    assert continuation() == b"+ Ready for literal data\r\n"
    assert continuation("") == b"+ \r\n"
    assert continuation(b"dXNlcg==") == b"+ dXNlcg==\r\n"


def test_rfc3501_s5_1_3_rfc6855_mailbox_encoding() -> None:
    assert encode_mailbox("Entwürfe", utf8=False) == b"Entw&APw-rfe"
    assert encode_mailbox("Entwürfe", utf8=True) == b'"Entw\xc3\xbcrfe"'
    assert encode_mailbox("a b&c", utf8=False) == b'"a b&-c"'
    assert encode_mailbox("INBOX", utf8=False) == b"INBOX"


# --- properties -------------------------------------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)
_VALUES: st.SearchStrategy[IMAPValue] = st.recursive(
    st.one_of(st.none(), st.integers(0, 2**63), _TEXT, st.binary(max_size=20)),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=20,
)


def _parse_login(rendered_user: bytes, utf8: bool) -> c.AnyCommand:
    framer = CommandFramer()
    framer.feed(b"a LOGIN " + rendered_user + b" x\r\n")
    while (event := framer.next_event()) is not None:
        if isinstance(event, RawCommand):
            return parse_command(event, utf8)
    raise AssertionError("no command")


@settings(max_examples=300)
@given(_TEXT, st.booleans())
def test_property_rendered_strings_read_back_by_the_parser(value: str, utf8: bool) -> None:
    """Quoted or literal, as render chose: our own parser reads the same string back (RFC 9051 §4.3)."""
    for rendered in (render(value, utf8), astring(value, utf8), literal(value)):
        assert _parse_login(rendered, utf8) == c.Login("a", value, "x")


@settings(max_examples=200)
@given(_VALUES, st.booleans())
def test_property_render_never_emits_bare_line_ends_outside_literals(value: IMAPValue, utf8: bool) -> None:
    out = render(value, utf8)
    # Every CRLF must be the end of a literal announcement: strip literals and none may remain.
    framer = CommandFramer(max_literal=1 << 20)
    framer.feed(b"a X " + out + b"\r\n")
    events = []
    while (event := framer.next_event()) is not None:
        events.append(event)
    commands = [e for e in events if isinstance(e, RawCommand)]
    assert len(commands) == 1
    assert not any(b"\r" in s or b"\n" in s for s in commands[0].segments)
    if not utf8:
        assert all(s.isascii() for s in commands[0].segments)
