"""RFC 5321 §4.1.2 paths and mailboxes, §4.5.3.1 limits, RFC 6531 UTF-8 addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.message.address import Address, AddressError, parse_path, parse_reverse_path


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("<user@example.org>", "user", "example.org"),
        ("<User.Name+tag@Example.ORG>", "User.Name+tag", "example.org"),
        ("<a!#$%&'*+-/=?^_`{|}~@x.y>", "a!#$%&'*+-/=?^_`{|}~", "x.y"),
        ("<u@x-1.example>", "u", "x-1.example"),
        ("<u@localhost>", "u", "localhost"),
        ("<u@1.2.3.example>", "u", "1.2.3.example"),
    ],
)
def test_rfc5321_s4_1_2_dot_string_mailboxes(text: str, local: str, domain: str) -> None:
    address = parse_path(text, smtputf8=False)
    assert (address.localpart, address.domain) == (local, domain)
    assert not address.is_literal and not address.is_utf8


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ('<"john doe"@x.y>', "john doe"),
        ('<"a\\"b"@x.y>', 'a"b'),
        ('<"a\\\\b"@x.y>', "a\\b"),
        ('<"a>b"@x.y>', "a>b"),
        ('<"u@remote.test"@x.y>', "u@remote.test"),
        ('<"plain"@x.y>', "plain"),
    ],
)
def test_rfc5321_s4_1_2_quoted_string_local_part_is_unescaped(text: str, local: str) -> None:
    assert parse_path(text, smtputf8=False).localpart == local


def test_rfc5321_s4_1_2_str_quotes_only_when_needed() -> None:
    assert str(Address("john doe", "x.y")) == '"john doe"@x.y'
    assert str(Address('a"b\\c', "x.y")) == '"a\\"b\\\\c"@x.y'
    assert str(Address("plain", "x.y")) == "plain@x.y"
    assert str(Address("a..b", "x.y")) == '"a..b"@x.y'
    assert str(Address(".a", "x.y")) == '".a"@x.y'
    assert str(Address("jörg", "bücher.test")) == "jörg@bücher.test"
    assert str(parse_path('<"plain"@X.Y>', smtputf8=False)) == "plain@x.y"


def test_rfc5321_s4_1_2_str_round_trips_through_the_parser() -> None:
    for local in ("john doe", 'a"b', "x\\y", "a..b", "normal.name", "q@r"):
        address = Address(local, "example.org")
        assert parse_path(f"<{address}>", smtputf8=False) == address


def test_rfc5321_s2_4_domain_is_lower_cased_local_part_kept() -> None:
    address = parse_path("<MiXeD@ExAmPlE.OrG>", smtputf8=False)
    assert address == Address("MiXeD", "example.org")
    assert address.normalized == "mixed@example.org"


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("<u@[127.0.0.1]>", "[127.0.0.1]"),
        ("<u@[IPv6:::1]>", "[IPv6:::1]"),
        ("<u@[ipv6:2001:DB8::1]>", "[IPv6:2001:db8::1]"),
        ("<u@[IPv6:::ffff:192.0.2.1]>", "[IPv6:::ffff:c000:201]"),
    ],
)
def test_rfc5321_s4_1_3_address_literals_keep_brackets(text: str, domain: str) -> None:
    address = parse_path(text, smtputf8=False)
    assert address.domain == domain
    assert address.is_literal
    assert str(address) == f"u@{domain}"


@pytest.mark.parametrize(
    "text",
    [
        "<u@[256.0.0.1]>",
        "<u@[1.2.3]>",
        "<u@[01.2.3.4]>",
        "<u@[IPv6:::1%eth0]>",
        "<u@[IPv6:zz::1]>",
        "<u@[IPv6:]>",
        "<u@[x:y]>",
        "<u@[127.0.0.1>",
        "<u@[]>",
    ],
)
def test_rfc5321_s4_1_3_invalid_address_literals(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_path(text, smtputf8=False)
    assert info.value.kind == "syntax"


def test_rfc5321_s4_1_2_source_route_is_accepted_and_ignored() -> None:
    """RFC 5321 §4.1.2 and Appendix C: A-d-l is parsed, then discarded."""
    assert parse_path("<@a.example,@b.example:u@d.example>", smtputf8=False) == Address("u", "d.example")
    assert parse_reverse_path("<@a.example:u@d.example>", smtputf8=False) == Address("u", "d.example")
    for bad in ("<@a.example u@d>", "<@:u@d.example>", "<@a,b:u@d.example>", "<@a..b:u@d.example>"):
        with pytest.raises(AddressError):
            parse_path(bad, smtputf8=False)


def test_rfc5321_s4_5_1_postmaster_without_domain_for_rcpt_only() -> None:
    for text in ("<Postmaster>", "<postmaster>", "<POSTMASTER>"):
        assert parse_path(text, smtputf8=False) == Address("postmaster", "")
    assert str(Address("postmaster", "")) == "postmaster"
    with pytest.raises(AddressError):
        parse_reverse_path("<Postmaster>", smtputf8=False)
    with pytest.raises(AddressError):
        parse_path("<webmaster>", smtputf8=False)


def test_rfc5321_s4_5_5_null_reverse_path() -> None:
    assert parse_reverse_path("<>", smtputf8=False) is None
    with pytest.raises(AddressError):
        parse_path("<>", smtputf8=False)


@pytest.mark.parametrize(
    "text",
    [
        "user@example.org",  # no brackets
        "<user@example.org",
        "user@example.org>",
        "<user>",
        "<@example.org>",
        "<user@>",
        "<user@example..org>",
        "<user@.example.org>",
        "<user@example.org.>",
        "<user@-example.org>",
        "<user@example-.org>",
        "<user@exa_mple.org>",
        "<us er@example.org>",
        "<.user@example.org>",
        "<user.@example.org>",
        "<us..er@example.org>",
        '<"unterminated@example.org>',
        '<"a"b@example.org>',
        '<""@example.org>',
        "<u@remote.test@example.org>",
        "<remote.test!u>",
        "<u%remote.test>",
        "< user@example.org>",
        "<user@example.org >",
        "<<user@example.org>>",
    ],
)
def test_rfc5321_s4_1_2_syntax_errors(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_path(text, smtputf8=True)
    assert info.value.kind == "syntax"


@pytest.mark.parametrize("text", ["<a\x00@b.c>", "<a@b\x00.c>", "<a\r\n@b.c>", "<a\x7f@b.c>", "<a\x85@b.c>"])
def test_rfc5321_nul_and_control_characters_rejected(text: str) -> None:
    """SECURITY-CASES 34: `MAIL FROM:<a\\0@b>` is refused, never truncated at the NUL."""
    with pytest.raises(AddressError):
        parse_path(text, smtputf8=True)
    with pytest.raises(AddressError):
        parse_reverse_path(text, smtputf8=True)


def test_rfc5321_s4_5_3_1_1_local_part_of_64_octets_ok_65_too_long() -> None:
    assert parse_path(f"<{'a' * 64}@x.y>", smtputf8=False).localpart == "a" * 64
    with pytest.raises(AddressError) as info:
        parse_path(f"<{'a' * 65}@x.y>", smtputf8=False)
    assert info.value.kind == "too_long"
    # Octets, not characters: 33 two-octet characters are 66 octets.
    with pytest.raises(AddressError) as info:
        parse_path(f"<{'ü' * 33}@x.y>", smtputf8=True)
    assert info.value.kind == "too_long"


def test_rfc5321_s4_5_3_1_2_and_3_domain_and_path_limits() -> None:
    label = "a" * 63
    domain = ".".join([label] * 3) + ".bb"
    assert parse_path(f"<u@{domain}>", smtputf8=False).domain == domain
    with pytest.raises(AddressError) as info:
        parse_path(f"<u@{'a' * 64}.example>", smtputf8=False)
    assert info.value.kind == "too_long"
    long_domain = ".".join([label] * 4) + ".x"  # 257 octets
    with pytest.raises(AddressError) as info:
        parse_path(f"<u@{long_domain}>", smtputf8=False)
    assert info.value.kind == "too_long"
    # A path over 256 octets including the brackets.
    exact = f"<{'a' * 60}@{'.'.join(['b' * 60] * 3)}.{'c' * 10}>"
    assert len(exact) == 256
    assert parse_path(exact, smtputf8=False).localpart == "a" * 60
    with pytest.raises(AddressError) as info:
        parse_path(exact.replace("c>", "cc>"), smtputf8=False)
    assert info.value.kind == "too_long"


def test_rfc6531_s3_3_utf8_addresses_need_smtputf8() -> None:
    for text in ("<jörg@bücher.test>", "<jörg@example.org>", "<user@bücher.test>", '<"jörg x"@example.org>'):
        with pytest.raises(AddressError) as info:
            parse_path(text, smtputf8=False)
        assert info.value.kind == "needs_smtputf8"
        with pytest.raises(AddressError) as info:
            parse_reverse_path(text, smtputf8=False)
        assert info.value.kind == "needs_smtputf8"
        assert parse_path(text, smtputf8=True).is_utf8


def test_rfc6531_u_labels_and_utf8_local_parts() -> None:
    address = parse_path("<用户@例子.广告>", smtputf8=True)
    assert address == Address("用户", "例子.广告")
    assert address.is_utf8
    assert parse_path("<δοκιμή@ΠΑΡΆΔΕΙΓΜΑ.ΔΟΚΙΜΉ>", smtputf8=True).domain == "παράδειγμα.δοκιμή"
    for bad in ("<u@bü cher.test>", "<u@bü\u200bcher.test>", "<u@bü!cher.test>", "<u@\u3002x.test>"):
        with pytest.raises(AddressError):
            parse_path(bad, smtputf8=True)


def test_address_is_frozen_and_hashable() -> None:
    """RFC 5321 §2.4: addresses compare by local part and case-insensitive domain."""
    address = Address("u", "X.Y")
    assert address.domain == "x.y"
    assert {address, Address("u", "x.y")} == {address}
    with pytest.raises(AttributeError):
        address.localpart = "v"  # type: ignore[misc]


@given(st.text(max_size=300), st.booleans())
def test_rfc5321_s4_1_2_any_text_parses_or_raises_address_error(text: str, smtputf8: bool) -> None:
    for parser in (parse_path, parse_reverse_path):
        try:
            result = parser(text, smtputf8=smtputf8)
        except AddressError as exc:
            assert exc.kind in ("syntax", "too_long", "needs_smtputf8")
            continue
        if result is not None:
            assert smtputf8 or not result.is_utf8
            assert "\x00" not in result.localpart and "\r" not in str(result) and "\n" not in str(result)


_ATEXT = st.sampled_from(list("abcXYZ019!#$%&'*+-/=?^_`{|}~"))
_LABEL = st.text(alphabet="abcxyz019-", min_size=1, max_size=12).filter(lambda s: s[0] != "-" and s[-1] != "-")


@given(
    st.lists(st.text(alphabet=_ATEXT, min_size=1, max_size=8), min_size=1, max_size=4),
    st.lists(_LABEL, min_size=1, max_size=4),
)
def test_rfc5321_s4_1_2_generated_valid_mailboxes_round_trip(atoms: list[str], labels: list[str]) -> None:
    local, domain = ".".join(atoms), ".".join(labels)
    address = parse_path(f"<{local}@{domain}>", smtputf8=False)
    assert address == Address(local, domain.lower())
    assert parse_path(f"<{address}>", smtputf8=False) == address


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_rfc5321_s4_1_2_any_quoted_local_part_round_trips(local: str) -> None:
    if not local:
        return
    address = Address(local, "example.org")
    assert parse_path(f"<{address}>", smtputf8=False) == address
