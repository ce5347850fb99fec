"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3): the examples of the RFC, strict decoding, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.protocol.imap.mailboxname import decode_mutf7, encode_mutf7


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("", ""),
        ("&", "&-"),
        ("a&b&&", "a&-b&-&-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # the RFC 3501 §5.1.3 example
        ("😀", "&2D3eAA-"),  # outside the BMP: a UTF-16 surrogate pair
        ("tab\there", "tab&AAk-here"),
    ],
)
def test_rfc3501_s5_1_3_encode_decode(name: str, encoded: str) -> None:
    assert encode_mutf7(name) == encoded
    assert decode_mutf7(encoded) == name
    assert decode_mutf7(encoded.encode("ascii")) == name


@pytest.mark.parametrize(
    "bad",
    [
        "&Jjo",  # unterminated
        "&U,BTFw",  # unterminated
        "&Jjo!-",  # not base64
        "&AGE-",  # "a" is printable ASCII: must be written directly
        "&AOQ-&AOQ-",  # two adjacent runs must be one
        "&AOR-",  # non-zero padding bits
        "&A-",  # truncated base64
        "&AOQA-",  # odd number of UTF-16 octets
        "&2D0-",  # lone surrogate
        "a\x01b",  # control characters are never direct
        "Entw\xfcrfe",  # 8-bit
        "&ZeVnLIqe",  # missing "-"
        "&Ze/nLIqe-",  # "/" is not in modified base64 ("," is)
    ],
)
def test_rfc3501_s5_1_3_strict_decoding_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_mutf7(bad)


def test_8bit_bytes_are_refused() -> None:
    with pytest.raises(ValueError):
        decode_mutf7(b"Entw\xc3\xbcrfe")


@settings(max_examples=500)
@given(st.text(max_size=50))
def test_property_round_trip_any_unicode(name: str) -> None:
    encoded = encode_mutf7(name)
    assert encoded.isascii()
    assert all(0x20 <= ord(ch) <= 0x7E for ch in encoded)
    assert decode_mutf7(encoded) == name


@settings(max_examples=500)
@given(st.text(st.sampled_from("&-ABCDEFabcdef0123456789+,/ =a~"), max_size=30))
def test_property_decode_accepts_only_canonical_spellings(text: str) -> None:
    try:
        name = decode_mutf7(text)
    except ValueError:
        return
    assert encode_mutf7(name) == text
