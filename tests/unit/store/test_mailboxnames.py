"""Mailbox names (RFC 9051 §5.1) to Maildir++ directories and back; hostile names refused with CANNOT."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.store.mailboxnames import from_dirname, normalize, parent_names, to_dirname
from postkontor.store.mailindex_types import MailboxError

HOSTILE = [
    "../x",
    "a/../../etc",
    "a/./b",
    "..",
    ".",
    "/etc",
    "a/",
    "a//b",
    "",
    "~root",
    "a/~b",
    "a\x00b",
    "a\r\nb",
    "a\nb",
    "a\x7fb",
    "a\x85b",
    "x" * 10_000,
    "x" * 256,
    "/".join(["a"] * 17),
    "a*",
    "a%",
    "%",
    "*",
    "\ud800",
    "é" * 100,  # 255 characters allowed, but "%"-free UTF-8 ok; checked below for the octet limit
]


@pytest.mark.parametrize("name", [n for n in HOSTILE if n != "é" * 100])
def test_hostile_names_cannot(name: str) -> None:
    """RFC 9051 §5.1 leaves names to the server; every one of these could escape or confuse the layout."""
    with pytest.raises(MailboxError) as info:
        normalize(name)
    assert info.value.code == "CANNOT"


def test_examples() -> None:
    """RFC 9051 §5.1: INBOX is case-insensitive, also as the first level of its children."""
    assert to_dirname("inbox") == ""
    assert normalize("iNbOx/Sub") == "INBOX/Sub"
    assert to_dirname("INBOX/x") == ".INBOX.x"
    assert to_dirname("A/B") == ".A.B"
    assert to_dirname("a.b") == ".a%2Eb"
    assert to_dirname("Entwürfe") == ".Entwürfe"
    assert to_dirname("a b") == ".a b"
    assert to_dirname("zw\u200bsp") == ".zw%E2%80%8Bsp"  # a format character is escaped, not refused
    assert normalize("é" * 100) == "é" * 100
    assert parent_names("a/b/c") == ["a", "a/b"]
    with pytest.raises(MailboxError):
        normalize("\u200b" * 100)  # 900 octets escaped: over NAME_MAX


@pytest.mark.parametrize(
    "dirname", ["..x", ".a..b", ".a.", ".INBOX", ".inbox.x", ".a%2eb", ".a%41", ".a%", ".a%ZZ", ".%FF", "x", "."]
)
def test_foreign_dirnames_not_adopted(dirname: str) -> None:
    assert from_dirname(dirname) is None


_component = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/*%"), min_size=1, max_size=20
).filter(lambda part: part not in (".", "..") and not part.startswith("~"))


@given(st.lists(_component, min_size=1, max_size=5))
def test_roundtrip(parts: list[str]) -> None:
    """Every valid name maps to one safe directory name, and back to itself."""
    name = "/".join(parts)
    try:
        normalized = normalize(name)
    except MailboxError:
        return  # too long for NAME_MAX once escaped
    dirname = to_dirname(normalized)
    if normalized == "INBOX":
        assert dirname == ""
        return
    assert dirname.startswith(".") and not dirname.startswith("..")
    assert "/" not in dirname and "\x00" not in dirname and dirname.isprintable()
    assert len(dirname.encode()) <= 255
    assert from_dirname(dirname) == normalized


@given(st.text(max_size=40))
def test_any_text_is_valid_or_cannot(name: str) -> None:
    try:
        normalized = normalize(name)
    except MailboxError as error:
        assert error.code == "CANNOT"
        return
    dirname = to_dirname(normalized)
    assert "/" not in dirname and ".." not in dirname.replace("%2E", "")


@given(st.text(max_size=30))
def test_any_dirname_decodes_or_none(dirname: str) -> None:
    name = from_dirname(dirname)
    if name is not None:
        assert to_dirname(name) == dirname
