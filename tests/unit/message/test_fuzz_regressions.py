"""Regression tests for parser bugs found by the fuzz targets in fuzz/ (one test per finding, each named after the
RFC rule the input exercised)."""

from __future__ import annotations

from postkontor.message.mime import parse_structure
from postkontor.message.mimeheader import parse_content_type, parse_disposition


def test_rfc2231_s3_star_parameter_without_section_number_is_ignored() -> None:
    """RFC 2231 §3: `name*N` needs a decimal section number. `boundary*x=...` (fuzz/mime.py) made the parameter
    joiner list the name without any value and raise KeyError, so FETCH BODYSTRUCTURE failed on the message."""
    parsed = parse_content_type(b"multipart/mixed; boundary*x=b")
    assert parsed == ("multipart", "mixed", [])
    message = b"Content-Type: \x9d\x9d\x9dmultapart/mixed; bound\\a/boundary*+=xry=? (\n"
    assert parse_structure(message).params == []


def test_rfc2231_s3_section_number_must_be_ascii_digits() -> None:
    """A superscript "²" passes str.isdigit() but not int(); an enormous number passes neither int() limit. Both
    are not continuations: the parameter is skipped, the valid ones are kept."""
    assert parse_disposition("attachment; filename*\u00b2=x; size=3".encode()) == (
        "attachment",
        [("size", "3")],
    )
    huge = b"text/plain; name*" + b"9" * 5000 + b"=x; charset=utf-8"
    assert parse_content_type(huge) == ("text", "plain", [("charset", "utf-8")])
    assert parse_content_type(b"text/plain; name*0=a; name*1=b") == ("text", "plain", [("name", "ab")])
