"""The IMAP command parser: RFC 9051 §9 formal syntax for every command we accept, plus RFC 3501 (IMAP4rev1,
modified UTF-7 names), RFC 2971, 3516, 4315, 4731, 4959, 5182, 5258, 5819, 6154, 6855, 7162, 9208."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.protocol.imap import commands as c
from postkontor.protocol.imap.framing import CommandFramer, RawCommand
from postkontor.protocol.imap.parser import MAX_SEARCH_DEPTH, IMAPParseError, parse_command, parse_sequence_set
from postkontor.protocol.imap.response import astring, literal, quoted


def parse(data: bytes, utf8: bool = False) -> c.AnyCommand:
    """Frame `data` (CRLF added) as a client would send it and parse the one command."""
    framer = CommandFramer()
    framer.feed(data + b"\r\n")
    while (event := framer.next_event()) is not None:
        if isinstance(event, RawCommand):
            return parse_command(event, utf8)
    raise AssertionError("no command framed")


def bad(data: bytes, utf8: bool = False) -> IMAPParseError:
    with pytest.raises(IMAPParseError) as info:
        parse(data, utf8)
    return info.value


def S(*ranges: tuple[int | None, int | None]) -> c.SequenceSet:
    return c.SequenceSet(tuple(ranges))


# --- any state ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"a CAPABILITY", c.Capability("a")),
        (b"a noop", c.Noop("a")),
        (b"a Check", c.Check("a")),
        (b"a LOGOUT", c.Logout("a")),
        (b"a STARTTLS", c.StartTLS("a")),
        (b"a IDLE", c.Idle("a")),
        (b"a CLOSE", c.Close("a")),
        (b"a UNSELECT", c.Unselect("a")),
        (b"a NAMESPACE", c.Namespace("a")),
        (b"a EXPUNGE", c.Expunge("a")),
        (b"A0001] noop", c.Noop("A0001]")),
    ],
)
def test_rfc9051_s9_commands_without_arguments_case_insensitive(line: bytes, command: c.AnyCommand) -> None:
    assert parse(line) == command


def test_rfc9051_s9_tag_errors_have_no_tag() -> None:
    for line in (b"", b"* NOOP", b"+x NOOP", b"a", b"a{ NOOP", b"\x00 NOOP", b"(a) NOOP"):
        assert bad(line).tag is None


def test_rfc9051_s9_unknown_command_and_trailing_garbage_are_tagged() -> None:
    assert bad(b"x1 FROB").tag == "x1"
    assert bad(b"x2 NOOP extra").tag == "x2"
    assert bad(b"x3 NOOP ").tag == "x3"
    assert bad(b"x4  NOOP").tag == "x4"


# --- authentication -----------------------------------------------------------------------------------------------
def test_rfc9051_s6_2_3_login_astrings_quoted_and_literal() -> None:
    assert parse(b'a LOGIN fred "p \\"w\\" \\\\"') == c.Login("a", "fred", 'p "w" \\')
    assert parse(b"a login {4+}\r\nfred {6}\r\nsecr\xc3\xa9") == c.Login("a", "fred", "secré")


def test_rfc9051_s4_3_strings_must_be_utf8() -> None:
    assert "UTF-8" in bad(b'a LOGIN "\xff\xfe" x').text
    assert bad(b"a LOGIN {2}\r\n\xc3( x").tag == "a"


def test_rfc9051_s4_3_quoted_string_hostile_inputs() -> None:
    bad(b'a LOGIN "unterminated')
    bad(b'a LOGIN "nul\x00" x')
    bad(b'a LOGIN "cr\rx" x')
    bad(b'a LOGIN "bad \\escape" x')
    bad(b"a LOGIN fr\x00ed x")
    bad(b"a LOGIN {3}\r\nx\x00y x")  # NUL is never text


def test_rfc4959_authenticate_with_and_without_initial_response() -> None:
    assert parse(b"a AUTHENTICATE plain") == c.Authenticate("a", "PLAIN")
    assert parse(b"a AUTHENTICATE PLAIN AGZyZWQAcHc=") == c.Authenticate("a", "PLAIN", b"\x00fred\x00pw")
    assert parse(b"a AUTHENTICATE PLAIN =") == c.Authenticate("a", "PLAIN", b"")
    bad(b"a AUTHENTICATE PLAIN AGZyZWQAcHc")  # RFC 4648 padding is not optional
    bad(b"a AUTHENTICATE PLAIN =abc")
    bad(b"a AUTHENTICATE PLAIN !!")


def test_rfc5161_enable_upper_cases() -> None:
    assert parse(b"a ENABLE utf8=accept CONDSTORE") == c.Enable("a", ("UTF8=ACCEPT", "CONDSTORE"))
    bad(b"a ENABLE")


def test_rfc2971_id() -> None:
    assert parse(b'a ID ("name" "Mutt" "os" NIL)') == c.Id("a", (("name", "Mutt"), ("os", None)))
    assert parse(b"a ID NIL") == c.Id("a", None)
    assert parse(b"a ID ()") == c.Id("a", ())
    bad(b'a ID ("name")')


# --- mailboxes -----------------------------------------------------------------------------------------------------
def test_rfc9051_s5_1_inbox_is_case_insensitive_also_as_first_level() -> None:
    assert parse(b"a SELECT inbox") == c.Select("a", "INBOX")
    assert parse(b'a SELECT "InBox/Sub"') == c.Select("a", "INBOX/Sub")
    assert parse(b"a SELECT inboxes") == c.Select("a", "inboxes")


def test_rfc7162_s3_2_5_select_condstore_and_examine() -> None:
    assert parse(b"a SELECT x (CONDSTORE)") == c.Select("a", "x", condstore=True)
    assert parse(b"a EXAMINE x") == c.Select("a", "x", readonly=True)
    bad(b"a SELECT x (QRESYNC (1 2))")
    bad(b"a SELECT x ()")


def test_rfc3501_s5_1_3_imap4rev1_names_are_modified_utf7() -> None:
    assert parse(b"a CREATE Entw&APw-rfe") == c.Create("a", "Entwürfe")
    assert parse(b'a DELETE "a&-b"') == c.Delete("a", "a&b")
    bad(b"a CREATE &AGE-")  # non-canonical
    bad(b"a CREATE &Jjo")  # unterminated
    bad(b'a CREATE "Entw\xc3\xbcrfe"')  # 8-bit in IMAP4rev1


def test_rfc6855_s3_utf8_names_taken_as_is_after_enable() -> None:
    assert parse(b'a CREATE "Entw\xc3\xbcrfe"', utf8=True) == c.Create("a", "Entwürfe")
    assert parse(b"a CREATE a&b", utf8=True) == c.Create("a", "a&b")
    bad(b'a CREATE "\xff"', utf8=True)


def test_mailbox_names_with_control_characters_are_refused() -> None:
    bad(b"a CREATE {3}\r\na\nb")
    bad(b"a CREATE &AAA-")


def test_rfc6154_s3_create_with_use() -> None:
    assert parse(b"a CREATE Sent (USE (\\sent \\Archive))") == c.Create("a", "Sent", ("\\Sent", "\\Archive"))
    # A well-formed but unknown attribute parses; the session answers NO [USEATTR] (RFC 6154 §3).
    assert parse(b"a CREATE x (USE (\\Bogus))") == c.Create("a", "x", ("\\Bogus",))
    bad(b"a CREATE x (FOO)")


def test_rfc9051_s6_3_rename_subscribe_unsubscribe() -> None:
    assert parse(b'a RENAME old "new one"') == c.Rename("a", "old", "new one")
    assert parse(b"a SUBSCRIBE x") == c.Subscribe("a", "x")
    assert parse(b"a UNSUBSCRIBE x") == c.Unsubscribe("a", "x")


def test_rfc9051_s6_3_9_list_basic_and_wildcards() -> None:
    assert parse(b'a LIST "" *') == c.List("a", "", ("*",))
    assert parse(b"a LIST ~/Mail/ %]") == c.List("a", "~/Mail/", ("%]",))


def test_rfc5258_list_extended_select_patterns_return() -> None:
    cmd = parse(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" foo/%) RETURN (CHILDREN special-use)')
    assert cmd == c.List("a", "", ("INBOX", "foo/%"), ("SUBSCRIBED", "RECURSIVEMATCH"), ("CHILDREN", "SPECIAL-USE"))
    bad(b'a LIST (RECURSIVEMATCH) "" *')  # RFC 5258 §3.1
    bad(b'a LIST (BOGUS) "" *')
    bad(b'a LIST "" ()')
    bad(b'a LIST "" * RETURN (BOGUS)')


def test_rfc5819_list_return_status() -> None:
    cmd = parse(b'a LIST "" % RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))')
    assert cmd == c.List("a", "", ("%",), (), ("SUBSCRIBED",), ("MESSAGES", "UNSEEN"))
    bad(b'a LIST "" % RETURN (STATUS (BOGUS))')


def test_rfc3501_lsub() -> None:
    assert parse(b'a LSUB "" *') == c.Lsub("a", "", "*")


def test_rfc9051_s6_3_11_status_items() -> None:
    assert parse(b"a STATUS x (messages UIDNEXT size)") == c.Status("a", "x", ("MESSAGES", "UIDNEXT", "SIZE"))
    bad(b"a STATUS x ()")
    bad(b"a STATUS x (FOO)")


# --- APPEND ----------------------------------------------------------------------------------------------------
def test_rfc9051_s6_3_12_append_with_flags_and_date() -> None:
    cmd = parse(b'a APPEND INBOX (\\Seen $Label) "27-Nov-2026 10:00:00 +0100" {5}\r\nhello')
    zone = datetime.timezone(datetime.timedelta(hours=1))
    assert cmd == c.Append(
        "a", "INBOX", ("\\Seen", "$Label"), datetime.datetime(2026, 11, 27, 10, 0, tzinfo=zone), b"hello"
    )


def test_rfc9051_s9_append_date_day_fixed_and_negative_zone() -> None:
    cmd = parse(b'a APPEND x " 7-jan-2025 23:59:59 -0330" {0}\r\n')
    assert isinstance(cmd, c.Append) and cmd.internal_date is not None
    assert cmd.internal_date.utcoffset() == -datetime.timedelta(hours=3, minutes=30)
    assert cmd.message == b""


def test_append_invalid_dates_and_missing_literal() -> None:
    bad(b'a APPEND x "31-Feb-2025 10:00:00 +0000" {1}\r\nx')
    bad(b'a APPEND x "1-Jan-2025 10:00:00 +0000" {1}\r\nx')  # day must be 2 chars (SP DIGIT / 2DIGIT)
    bad(b'a APPEND x "01-Foo-2025 10:00:00 +0000" {1}\r\nx')
    bad(b'a APPEND x "01-Jan-2025 10:00:00 +0075" {1}\r\nx')
    bad(b'a APPEND x "message as quoted"')
    bad(b"a APPEND x (\\Seen")


def test_rfc3516_rfc6855_append_literal8_and_utf8() -> None:
    assert parse(b"a APPEND x ~{3}\r\na\x00b") == c.Append("a", "x", (), None, b"a\x00b")
    assert parse(b"a APPEND x () UTF8 (~{2}\r\nhi)") == c.Append("a", "x", (), None, b"hi", utf8=True)
    bad(b"a APPEND x UTF8 ({2}\r\nhi)")


def test_flags_with_atom_specials_are_refused() -> None:
    bad(b"a APPEND x (foo%bar) {1}\r\nx")
    bad(b"a APPEND x (foo]) {1}\r\nx")
    bad(b'a APPEND x ("quoted") {1}\r\nx')
    bad(b"a STORE 1 FLAGS (a\xc3\xa4)")


# --- selected state ------------------------------------------------------------------------------------------------
def test_rfc9051_s9_sequence_sets() -> None:
    cmd = parse(b"a COPY 1,3:5,7:*,* x")
    assert cmd == c.Copy("a", S((1, 1), (3, 5), (7, None), (None, None)), "x")
    assert parse(b"a MOVE $ x") == c.Move("a", c.SequenceSet((), saved=True), "x")
    for line in (b"a COPY 0 x", b"a COPY 1: x", b"a COPY 1,,2 x", b"a COPY 4294967296 x", b"a COPY 01 x"):
        bad(line)


def test_rfc4315_uid_commands() -> None:
    assert parse(b"a UID EXPUNGE 3:4") == c.Expunge("a", S((3, 4)))
    assert parse(b"a uid copy 1 x") == c.Copy("a", S((1, 1)), "x", uid=True)
    assert parse(b"a UID MOVE 1 x") == c.Move("a", S((1, 1)), "x", uid=True)
    bad(b"a UID NOOP")
    bad(b"a UID")


def test_rfc9051_s6_4_6_store_variants() -> None:
    assert parse(b"a STORE 1 FLAGS (\\deleted)") == c.Store("a", S((1, 1)), "", False, ("\\Deleted",))
    assert parse(b"a STORE 1 -FLAGS.SILENT \\Seen foo") == c.Store("a", S((1, 1)), "-", True, ("\\Seen", "foo"))
    cmd = parse(b"a UID STORE 2:* (UNCHANGEDSINCE 320162338) +FLAGS.SILENT ($Junk)")
    assert cmd == c.Store("a", S((2, None)), "+", True, ("$Junk",), uid=True, unchanged_since=320162338)
    bad(b"a STORE 1 FLAGS.LOUD (x)")
    bad(b"a STORE 1 (FOO 1) FLAGS (x)")


def test_rfc9051_s6_4_5_fetch_macros_expand() -> None:
    fast = (c.FetchAttribute("FLAGS"), c.FetchAttribute("INTERNALDATE"), c.FetchAttribute("RFC822.SIZE"))
    assert parse(b"a FETCH 1 fast") == c.Fetch("a", S((1, 1)), fast)
    assert parse(b"a FETCH 1 ALL") == c.Fetch("a", S((1, 1)), (*fast, c.FetchAttribute("ENVELOPE")))
    full = (*fast, c.FetchAttribute("ENVELOPE"), c.FetchAttribute("BODY"))
    assert parse(b"a FETCH 1 FULL") == c.Fetch("a", S((1, 1)), full)
    bad(b"a FETCH 1 (ALL)")


def test_rfc9051_s6_4_5_fetch_sections_and_partials() -> None:
    cmd = parse(b"a UID FETCH 1:* (UID BODY.PEEK[1.2.HEADER.FIELDS (From to)]<0.100> body[] BODY[TEXT] RFC822.SIZE)")
    assert cmd == c.Fetch(
        "a",
        S((1, None)),
        (
            c.FetchAttribute("UID"),
            c.FetchBody(c.Section((1, 2), "HEADER.FIELDS", ("FROM", "TO")), peek=True, partial=(0, 100)),
            c.FetchBody(c.Section()),
            c.FetchBody(c.Section((), "TEXT")),
            c.FetchAttribute("RFC822.SIZE"),
        ),
        uid=True,
    )
    assert parse(b"a FETCH 1 BODY[2.MIME]") == c.Fetch("a", S((1, 1)), (c.FetchBody(c.Section((2,), "MIME")),))
    cmd = parse(b"a FETCH 1 BODY[HEADER.FIELDS.NOT (X-A)]")
    assert cmd == c.Fetch("a", S((1, 1)), (c.FetchBody(c.Section((), "HEADER.FIELDS.NOT", ("X-A",))),))
    for line in (b"a FETCH 1 BODY[MIME]", b"a FETCH 1 BODY[0]", b"a FETCH 1 BODY[1.]", b"a FETCH 1 BODY[HEADER.FIELDS]",
                 b"a FETCH 1 BODY[]<5>", b"a FETCH 1 BODY[]<0.0>", b"a FETCH 1 BODY[FOO]", b"a FETCH 1 FROB",
                 b"a FETCH 1 ()", b"a FETCH 1 BODY[1"):  # fmt: skip
        bad(line)


def test_rfc3516_binary_fetch_items() -> None:
    cmd = parse(b"a FETCH 1 (BINARY[1.2] BINARY.PEEK[]<0.10> BINARY.SIZE[3])")
    assert cmd == c.Fetch(
        "a",
        S((1, 1)),
        (
            c.FetchBody(c.Section((1, 2)), binary=True),
            c.FetchBody(c.Section(), peek=True, partial=(0, 10), binary=True),
            c.FetchBinarySize((3,)),
        ),
    )
    bad(b"a FETCH 1 BINARY[TEXT]")


def test_rfc7162_s3_1_4_fetch_changedsince_and_modseq() -> None:
    cmd = parse(b"a FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12345)")
    assert cmd == c.Fetch("a", S((1, None)), (c.FetchAttribute("FLAGS"), c.FetchAttribute("MODSEQ")), False, 12345)
    bad(b"a FETCH 1 FLAGS (VANISHED)")
    bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 99999999999999999999)")


# --- SEARCH ------------------------------------------------------------------------------------------------------
def _key(line: bytes, utf8: bool = False) -> c.SearchKey:
    cmd = parse(b"a SEARCH " + line, utf8)
    assert isinstance(cmd, c.Search)
    return cmd.key


def test_rfc9051_s6_4_4_search_flags_new_old() -> None:
    assert _key(b"unseen") == c.SearchFlag("\\Seen", False)
    assert _key(b"NEW") == c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchFlag("\\Seen", False)))
    assert _key(b"OLD") == c.SearchNot(c.SearchFlag("\\Recent"))
    assert _key(b"KEYWORD $Junk") == c.SearchFlag("$Junk")
    assert _key(b"UNKEYWORD foo") == c.SearchFlag("foo", False)
    bad(b"a SEARCH KEYWORD \\Seen")


def test_rfc9051_s6_4_4_search_implicit_and_or_not_groups() -> None:
    key = _key(b'OR (FROM "alice" NOT SEEN) TO bob 1:5 UID 7,9')
    assert key == c.SearchAnd(
        (
            c.SearchOr(
                c.SearchAnd((c.SearchHeader("FROM", "alice"), c.SearchNot(c.SearchFlag("\\Seen")))),
                c.SearchHeader("TO", "bob"),
            ),
            c.SearchSet(S((1, 5))),
            c.SearchSet(S((7, 7), (9, 9)), uid=True),
        )
    )


def test_rfc9051_s6_4_4_search_dates_sizes_headers_text() -> None:
    assert _key(b"SENTBEFORE 1-Feb-1994") == c.SearchDate("sent", "before", datetime.date(1994, 2, 1))
    assert _key(b'SINCE "01-feb-1994"') == c.SearchDate("internal", "since", datetime.date(1994, 2, 1))
    assert _key(b"SENTON 5-Mar-2020 ON 6-Mar-2020") == c.SearchAnd(
        (
            c.SearchDate("sent", "on", datetime.date(2020, 3, 5)),
            c.SearchDate("internal", "on", datetime.date(2020, 3, 6)),
        )
    )
    assert _key(b"LARGER 100 SMALLER 2000") == c.SearchAnd((c.SearchSize("larger", 100), c.SearchSize("smaller", 2000)))
    assert _key(b'HEADER x-spam ""') == c.SearchHeader("X-SPAM", "")
    assert _key(b"BODY foo TEXT {3}\r\nbar") == c.SearchAnd((c.SearchText("BODY", "foo"), c.SearchText("TEXT", "bar")))
    bad(b"a SEARCH BEFORE 30-Feb-2020")
    bad(b"a SEARCH BEFORE 2020-02-01")
    bad(b"a SEARCH LARGER -1")
    bad(b"a SEARCH FROB")
    bad(b"a SEARCH")


def test_rfc7162_s3_1_5_search_modseq() -> None:
    assert _key(b"MODSEQ 620162338") == c.SearchModSeq(620162338)
    assert _key(b'MODSEQ "/flags/\\\\draft" all 620162338') == c.SearchModSeq(620162338)


def test_rfc4731_rfc5182_search_return_and_saved_set() -> None:
    cmd = parse(b"a UID SEARCH RETURN (MIN MAX COUNT SAVE) CHARSET utf-8 $")
    assert cmd == c.Search(
        "a", c.SearchSet(c.SequenceSet((), saved=True)), True, "UTF-8", ("MIN", "MAX", "COUNT", "SAVE")
    )
    assert parse(b"a SEARCH RETURN () ALL") == c.Search("a", c.SearchAll(), return_options=())
    bad(b"a SEARCH RETURN (BOGUS) ALL")


def test_rfc9051_s6_4_4_search_charset_decoding() -> None:
    cmd = parse(b"a SEARCH CHARSET ISO-8859-1 SUBJECT {1}\r\n\xe4")
    assert isinstance(cmd, c.Search) and cmd.key == c.SearchHeader("SUBJECT", "ä")
    cmd = parse(b"a SEARCH CHARSET X-UNKNOWN SUBJECT x")  # the session answers NO [BADCHARSET]
    assert isinstance(cmd, c.Search) and cmd.charset == "X-UNKNOWN"
    bad(b"a SEARCH SUBJECT {1}\r\n\xe4")  # default charset is UTF-8


def test_search_nesting_is_bounded() -> None:
    ok = b"(" * (MAX_SEARCH_DEPTH - 1) + b"ALL" + b")" * (MAX_SEARCH_DEPTH - 1)
    assert _key(ok) == c.SearchAll()
    assert "deeply" in bad(b"a SEARCH " + b"(" * 10000 + b"ALL" + b")" * 10000).text
    assert "deeply" in bad(b"a SEARCH " + b"NOT " * 10000 + b"ALL").text
    assert "deeply" in bad(b"a SEARCH " + b"OR ALL " * 5000 + b"ALL").text


# --- QUOTA (RFC 9208) ----------------------------------------------------------------------------------------------
def test_rfc9208_quota_commands() -> None:
    assert parse(b'a GETQUOTA ""') == c.GetQuota("a", "")
    assert parse(b"a GETQUOTAROOT inbox") == c.GetQuotaRoot("a", "INBOX")
    assert parse(b'a SETQUOTA "" (storage 512 MESSAGE 1000)') == c.SetQuota(
        "a", "", (("STORAGE", 512), ("MESSAGE", 1000))
    )
    assert parse(b'a SETQUOTA "" ()') == c.SetQuota("a", "", ())
    bad(b'a SETQUOTA "" (STORAGE)')


# --- properties ----------------------------------------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)


@settings(max_examples=300)
@given(_TEXT, st.booleans())
def test_property_rendered_strings_parse_back(value: str, as_literal: bool) -> None:
    """RFC 9051 §4.3: whatever the server's writer emits (quoted, literal or atom) parses to the same string."""
    rendered = literal(value) if as_literal or "\r" in value or "\n" in value else quoted(value)
    assert parse(b"a LOGIN " + rendered + b" " + astring(value)) == c.Login("a", value, value)


_NUM = st.integers(1, 0xFFFFFFFF)
_END = st.one_of(st.none(), _NUM)


@given(st.lists(st.tuples(_END, _END), min_size=1, max_size=8))
def test_property_sequence_sets_round_trip(ranges: list[tuple[int | None, int | None]]) -> None:
    def one(n: int | None) -> str:
        return "*" if n is None else str(n)

    text = ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in ranges)
    parsed = parse_sequence_set(text.encode())
    assert parsed == c.SequenceSet(tuple(ranges))
    assert parse(b"a FETCH " + text.encode() + b" UID") == c.Fetch("a", parsed, (c.FetchAttribute("UID"),))


@given(st.binary(max_size=40))
def test_property_parse_sequence_set_never_crashes(data: bytes) -> None:
    try:
        parse_sequence_set(data)
    except ValueError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=200), st.booleans())
def test_property_arbitrary_lines_raise_only_parse_errors(line: bytes, utf8: bool) -> None:
    prefixes: tuple[bytes, ...] = (
        b"a ",
        b"a SEARCH ",
        b"a FETCH 1 ",
        b"a LIST ",
        b"a APPEND x ",
        b"a STORE 1 ",
        b"a UID ",
    )
    charsets = (b"idna", b"punycode", b"unicode_escape", b"utf-16", b"rot13", b"hex", b"uu")
    prefixes += tuple(b"a SEARCH CHARSET " + cs + b" SUBJECT " for cs in charsets)
    for prefix in prefixes:
        try:
            parse_command(RawCommand([prefix + line]), utf8)
        except IMAPParseError as exc:
            assert exc.tag in (None, "a")
