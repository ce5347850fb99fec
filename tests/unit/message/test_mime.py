"""MIME structure with byte offsets (RFC 2045, RFC 2046, RFC 2231, RFC 2047) and its robustness bounds."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from postkontor.message.mime import MAX_DEPTH, Part, find_part, parse_structure, split_multipart
from postkontor.message.mimeheader import (
    b64decode_lenient,
    decode_transfer,
    decode_words,
    parse_content_type,
    split_header,
    unfold,
)

PLAIN = b"From: a@example.com\r\nSubject: hi\r\n\r\nHello\r\n"

ALTERNATIVE = (
    b"From: a@example.com\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"This is a preamble.\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def _check_offsets(part: Part, lo: int, hi: int) -> None:
    assert lo <= part.header_start <= part.header_end <= part.body_start <= part.body_end <= hi
    for child in part.children:
        _check_offsets(child, part.body_start, part.body_end)
    if part.message is not None:
        _check_offsets(part.message, part.body_start, part.body_end)


def test_rfc5322_s2_1_header_body_split_crlf_and_bare_lf() -> None:
    assert split_header(PLAIN) == (PLAIN.index(b"\r\n\r\n") + 2, PLAIN.index(b"Hello"))
    lf = b"Subject: x\n\nbody\n"
    assert split_header(lf) == (11, 12)
    assert split_header(b"\r\nbody") == (0, 2)  # no header fields at all
    assert split_header(b"Subject: only header\r\n") == (22, 22)


def test_rfc2045_s5_2_defaults_text_plain() -> None:
    root = parse_structure(PLAIN)
    assert (root.maintype, root.subtype, root.params, root.encoding) == ("text", "plain", [], "7bit")
    assert PLAIN[root.body_start : root.body_end] == b"Hello\r\n"
    bad = parse_structure(b"Content-Type: garbage\r\n\r\nx")  # invalid: the default is assumed
    assert (bad.maintype, bad.subtype) == ("text", "plain")


def test_rfc2046_s5_1_1_boundaries_preamble_epilogue() -> None:
    root = parse_structure(ALTERNATIVE)
    assert (root.maintype, root.subtype, root.param("boundary")) == ("multipart", "alternative", "b1")
    assert len(root.children) == 2
    first, second = root.children
    # The CRLF before a delimiter belongs to the delimiter, not to the part.
    assert ALTERNATIVE[first.body_start : first.body_end] == b"plain"
    assert ALTERNATIVE[second.body_start : second.body_end] == b"<p>html</p>"
    assert ALTERNATIVE[first.header_start : first.body_start] == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert second.subtype == "html" and second.param("charset") == "utf-8"
    _check_offsets(root, 0, len(ALTERNATIVE))


def test_rfc2046_s5_1_1_missing_close_delimiter_runs_to_end() -> None:
    data = b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\none\r\n--zz\r\n\r\ntwo\r\n"
    root = parse_structure(data)
    assert [data[c.body_start : c.body_end] for c in root.children] == [b"one", b"two\r\n"]


def test_rfc2046_s5_1_1_longer_boundary_is_not_a_delimiter() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n"
        b"Content-Type: multipart/alternative; boundary=ab\r\n\r\n--ab\r\n\r\ninner\r\n--ab--\r\n"
        b"--a  \r\n\r\nsecond\r\n--a--\r\n"
    )
    root = parse_structure(data)
    assert len(root.children) == 2
    inner = root.children[0]
    assert inner.is_multipart and len(inner.children) == 1
    assert data[inner.children[0].body_start : inner.children[0].body_end] == b"inner"
    assert data[root.children[1].body_start : root.children[1].body_end] == b"second"


def test_rfc2046_bare_lf_message() -> None:
    data = b"Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\nlf body\n--q--\n"
    root = parse_structure(data)
    (child,) = root.children
    assert data[child.body_start : child.body_end] == b"lf body"
    assert child.header_end - child.header_start == len(b"Content-Type: text/plain\n")


def test_rfc2046_s5_1_5_digest_children_default_to_message_rfc822() -> None:
    data = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--d--\r\n"
    (child,) = parse_structure(data).children
    assert (child.maintype, child.subtype) == ("message", "rfc822")
    assert child.message is not None
    assert data[child.message.body_start : child.message.body_end] == b"inner body"


def test_rfc2046_s5_2_1_message_rfc822_is_parsed() -> None:
    inner = b"Subject: inner\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nx\r\n--i--\r\n"
    data = b"Content-Type: message/rfc822\r\n\r\n" + inner
    root = parse_structure(data)
    assert root.message is not None and root.message.is_multipart
    assert root.message.header_start == root.body_start
    assert len(root.message.children) == 1
    _check_offsets(root, 0, len(data))


def test_rfc2045_s5_1_parameters_quoted_comments_and_rfc2231() -> None:
    parsed = parse_content_type(
        b'Text/HTML (a comment) ; Charset="iso-8859-1" (c); name="a \\"b\\"; c"; '
        b"title*0*=utf-8''%C3%A4; title*1=\"bc\"; x=unquoted value "
    )
    assert parsed == (
        "text",
        "html",
        [("charset", "iso-8859-1"), ("name", 'a "b"; c'), ("title", "äbc"), ("x", "unquoted value")],
    )
    assert parse_content_type(b"text") is None
    assert parse_content_type(None) is None


def test_rfc2047_encoded_words_decoded_and_joined() -> None:
    assert decode_words(b"=?utf-8?q?Gr=C3=BC=C3=9Fe_aus?= Berlin") == "Grüße aus Berlin"
    # Adjacent words: the white space between them is dropped, a split multi-byte character is rejoined.
    assert decode_words(b"=?UTF-8?B?w6Q=?= =?UTF-8?B?w7Y=?=") == "äö"
    assert decode_words(b"=?utf-8?q?=C3?=\r\n =?utf-8?q?=A4?=") == "ä"
    assert decode_words(b"=?x-unknown?q?abc?=") == "abc"
    assert decode_words("Schön".encode("latin-1")) == "Schön"  # raw 8-bit, not UTF-8


def test_rfc5322_s2_2_3_unfold() -> None:
    assert unfold(b" a\r\n\tb\r\n c \r\n") == b"a\tb c"


def test_rfc2045_s6_transfer_decoding_is_lenient() -> None:
    assert b64decode_lenient(b"aGVs\r\nbG8\r\n") == b"hello"
    assert b64decode_lenient(b"aGVsbG8") == b"hello"  # missing padding
    assert b64decode_lenient(b"a") == b""  # a dangling sextet is dropped, not an error
    assert decode_transfer(b"a=3Db=\r\nc", "quoted-printable") == b"a=bc"
    assert decode_transfer(b"x", "x-uuencode") is None


def test_find_part_rfc9051_s6_4_5_numbering() -> None:
    single = parse_structure(PLAIN)
    assert find_part(single, (1,)) is single  # a non-multipart message has part 1 = its body
    assert find_part(single, (2,)) is None
    multi = parse_structure(ALTERNATIVE)
    assert find_part(multi, (2,)) is multi.children[1]
    assert find_part(multi, (1, 1)) is None
    assert find_part(multi, (0,)) is None


def test_depth_cap_makes_an_opaque_leaf() -> None:
    data = b""
    for _ in range(100):
        data = b"Content-Type: message/rfc822\r\n\r\n" + data
    root = parse_structure(data)
    depth = 0
    part: Part | None = root
    while part is not None and part.message is not None:
        part = part.message
        depth += 1
    assert depth == MAX_DEPTH
    assert part is not None and part.truncated and (part.maintype, part.subtype) == ("application", "octet-stream")


def test_part_cap() -> None:
    body = b"".join(b"--b\r\n\r\n%d\r\n" % i for i in range(100)) + b"--b--\r\n"
    root = parse_structure(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body, max_parts=10)
    assert len(root.children) == 9 and root.truncated


def test_multipart_without_boundary_has_no_children() -> None:
    root = parse_structure(b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n")
    assert root.is_multipart and root.children == []


def test_split_multipart_empty_parts() -> None:
    data = b"--b\r\n--b\r\n\r\nx\r\n--b--"
    assert split_multipart(data, 0, len(data), b"b") == [(5, 5), (10, 13)]


def test_performance_large_single_part_and_many_parts() -> None:
    """Boundary scans use bytes.find: 20 MB and 2,000 parts parse far below a second (asserted generously)."""
    big = b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + (
        b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3\r\n" * 250_000
    )
    assert len(big) > 20_000_000
    start = time.perf_counter()
    root = parse_structure(big)
    assert root.body_end == len(big)
    wrapped = b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n" + big + b"\r\n--outer--\r\n"
    assert len(parse_structure(wrapped).children) == 1
    many = b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"".join(
        b"--p\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-ID: <%d@x>\r\n\r\npart %d\r\n" % (i, i)
        for i in range(2000)
    )
    assert len(parse_structure(many + b"--p--\r\n").children) == 2000
    assert time.perf_counter() - start < 5


@given(st.binary(max_size=2000))
def test_hypothesis_any_bytes_parse_with_nested_offsets(data: bytes) -> None:
    _check_offsets(parse_structure(data), 0, len(data))


_PIECES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b'Content-Type: multipart/digest; boundary="b"\n',
        b"Content-Type: text/plain; charset*0*=utf-8''%C3; charset*1=x\r\n",
        b"\r\n",
        b"\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"--b",
        b"text\r\n",
        b"Subject: x\r\n ",
    ]
)


@given(st.lists(_PIECES, max_size=40))
def test_hypothesis_mime_shaped_input_offsets_nested(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    root = parse_structure(data)
    _check_offsets(root, 0, len(data))
    assert len(root.walk()) <= 5000
