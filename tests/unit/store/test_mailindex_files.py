"""Maildir file names: the info suffix ":2,<letters>" mirrors IMAP system flags (RFC 9051 §2.3.2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postkontor.store.mailindex_files import (
    SYSTEM_FLAGS,
    base_of,
    delivery_order,
    flags_from_name,
    name_with_flags,
    size_from_name,
    split_flags,
)


def test_examples() -> None:
    assert name_with_flags("1.M1.h,S=5", {"\\Seen", "\\Answered"}) == "1.M1.h,S=5:2,RS"
    assert name_with_flags("1.M1.h,S=5:2,PSa", {"\\Flagged"}) == "1.M1.h,S=5:2,FPa"  # unknown letters kept
    assert flags_from_name("x:2,DFPRST") == set(SYSTEM_FLAGS)
    assert flags_from_name("x") == frozenset()
    assert size_from_name("1.x.h,S=42:2,S") == 42 and size_from_name("1.x.h:2,S=4") is None
    assert delivery_order("1700.x", 5.0) == (1700.0, "1700.x") and delivery_order("abc", 5.0) == (5.0, "abc")
    assert split_flags(["\\SEEN", "\\Recent", "\\Bogus", "$Label1", "bad word", "a]"]) == ({"\\Seen"}, ["$Label1"])


@given(st.sets(st.sampled_from(SYSTEM_FLAGS)), st.text(alphabet="PRSTabcz", max_size=6))
def test_roundtrip(flags: set[str], old_info: str) -> None:
    name = name_with_flags(f"1.M2.host,S=9:2,{old_info}", flags)
    assert flags_from_name(name) == flags
    letters = name.split(":2,", 1)[1]
    assert list(letters) == sorted(set(letters))
    assert base_of(name) == "1.M2.host,S=9"


@given(st.text(max_size=40))
def test_any_name_parses(name: str) -> None:
    flags_from_name(name)
    size_from_name(name)
    assert ":" not in base_of(name)
