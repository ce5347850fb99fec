"""Authentication-Results (RFC 8601): composing our field and removing forged ones (§5)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.mailauth.results import MethodResult, arc, compose, dkim, dmarc, spf, strip_forged


def unfold(field: bytes) -> str:
    return re.sub(r"\r\n(?=[ \t])", "", field.decode("utf-8"))


def assert_one_safe_field(field: bytes) -> None:
    """One field: CRLF only at the end or before folding whitespace, every line under 78 characters."""
    assert field.endswith(b"\r\n")
    lines = field[:-2].split(b"\r\n")
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])
    assert b"\r" not in field.replace(b"\r\n", b"") and b"\n" not in field.replace(b"\r\n", b"")


def test_rfc8601_s2_2_compose_all_methods() -> None:
    """§2.2 syntax, §2.7 methods: spf with smtp.mailfrom/smtp.helo, dkim header.d/s/b, dmarc header.from, arc."""
    field = compose(
        "mx.example.org",
        [
            spf("pass", mailfrom="sender@example.com"),
            spf("none", helo="helo.example.com"),
            dkim("pass", domain="example.com", selector="s2024", signature="AbCdEfGhIjKl"),
            dmarc("fail", header_from="example.com", policy="reject", disposition="quarantine"),
            arc("pass", oldest_pass=0, remote_ip="192.0.2.1"),
        ],
    )
    assert_one_safe_field(field)
    assert all(len(line) < 78 for line in field.split(b"\r\n"))
    assert unfold(field) == (
        "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=sender@example.com; "
        "spf=none smtp.helo=helo.example.com; dkim=pass header.d=example.com header.s=s2024 header.b=AbCdEfGh; "
        "dmarc=fail (p=reject dis=quarantine) header.from=example.com; "
        "arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1\r\n"
    )


def test_rfc8601_s2_2_no_results_is_none() -> None:
    """§2.2: a field with no results says "none"."""
    assert compose("mx.example.org", []) == b"Authentication-Results: mx.example.org; none\r\n"


def test_rfc8601_s2_2_values_are_quoted_when_not_tokens() -> None:
    """§2.2 pvalue: a token or [local-part]@domain as is, anything else as a quoted-string, escapes included."""
    field = unfold(
        compose(
            "mx.example.org",
            [
                dkim("fail", domain="example.com", selector="a b", signature="ab/+=cdefgh", reason='bad "sig" \\'),
                spf("softfail", mailfrom="@example.com"),
            ],
        )
    )
    assert 'header.s="a b"' in field
    assert 'header.b="ab/+=cde"' in field
    assert 'reason="bad \\"sig\\" \\\\"' in field
    assert "smtp.mailfrom=@example.com" in field


@pytest.mark.parametrize(
    "hostile",
    [
        "evil.example\r\nX-Injected: yes",
        "evil.example\nX-Injected: yes",
        "evil.example\rX-Injected: yes",
        "evil.example\r\n\r\nbody",
        "x\u2028X-Injected: yes",
        '"; dkim=pass header.d=paypal.com',
        "a" * 1000,
    ],
)
def test_rfc8601_hostile_values_cannot_add_header_lines(hostile: str) -> None:
    """A CRLF (or any control) in a MAIL FROM domain, HELO or reason never starts a field of its own."""
    field = compose(
        "mx.example.org",
        [spf("fail", mailfrom=hostile, helo=hostile, reason=hostile), dmarc("fail", header_from=hostile)],
    )
    assert_one_safe_field(field)
    text = unfold(field)
    assert text.count("\r\n") == 1
    assert "X-Injected" not in text.split(";")[0]
    # The quote cannot close the value early: its escaped form is what the reader sees.
    assert "dkim=pass" not in text.replace('\\"; dkim=pass', "")


def test_rfc8601_invalid_results_and_authserv_id_are_refused() -> None:
    """§2.7: only the registered result values; the authserv-id is ours and must be a token."""
    with pytest.raises(ValueError):
        spf("maybe")
    with pytest.raises(ValueError):
        MethodResult("dkim", "softfail")
    with pytest.raises(ValueError):
        compose("mx.example.org\r\nX: y", [])
    with pytest.raises(ValueError):
        MethodResult("spf", "pass", (("smtp mailfrom", "x"),))


@given(st.lists(st.text(max_size=120), min_size=1, max_size=4))
def test_rfc8601_any_values_give_one_safe_field(values: list[str]) -> None:
    """Whatever the values, the result is exactly one field, properly folded."""
    results = [spf("pass", mailfrom=value, helo=value) for value in values]
    results.append(dkim("pass", domain=values[0], selector=values[-1], signature=values[0], reason=values[-1]))
    assert_one_safe_field(compose("mx.example.org", results))


BLOCK = (
    b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=forged.test\r\n"
    b"Authentication-Results: other.example.net; dkim=pass\r\n header.d=example.net\r\n"
    b"authentication-results : (a (nested) comment) MX.Example.ORG. 1;\r\n\tdkim=pass header.d=paypal.com\r\n"
    b'Authentication-Results: "mx.example.org"; dmarc=pass\r\n'
    b"Authentication-Results: mx.example.org.evil.test; none\r\n"
    b"Authentication-Results-Extra: mx.example.org; x\r\n"
    b"Subject: Authentication-Results: mx.example.org; none\r\n"
    b"\r\n"
    b"Authentication-Results: mx.example.org; in the body\r\n"
)


def test_rfc8601_s5_strip_forged_removes_only_fields_claiming_our_id() -> None:
    """§5: fields with our authserv-id (any case, comments, quoted) go; others and the body stay byte for byte."""
    assert strip_forged(BLOCK, "mx.example.org") == (
        b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Authentication-Results: other.example.net; dkim=pass\r\n header.d=example.net\r\n"
        b"Authentication-Results: mx.example.org.evil.test; none\r\n"
        b"Authentication-Results-Extra: mx.example.org; x\r\n"
        b"Subject: Authentication-Results: mx.example.org; none\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.org; in the body\r\n"
    )


def test_rfc8601_s5_strip_forged_lf_only_and_untouched_blocks() -> None:
    """Bare-LF header blocks work too; a block without any such field is returned as the same object."""
    block = b"A: b\nAuthentication-Results: MX.EXAMPLE.ORG; none\n\tcont\nC: d\n"
    assert strip_forged(block, "mx.example.org") == b"A: b\nC: d\n"
    plain = b"A: b\r\nC: d\r\n\r\nbody"
    assert strip_forged(plain, "mx.example.org") is plain
    assert strip_forged(b"Authentication-Results: (unterminated mx.example.org; x\r\n", "mx.example.org") == (
        b"Authentication-Results: (unterminated mx.example.org; x\r\n"
    )


def test_rfc8601_s5_our_own_field_is_stripped_from_a_relayed_copy() -> None:
    """What compose() writes, strip_forged() recognises (a message that comes back to us)."""
    field = compose("mx.example.org", [spf("pass", mailfrom="example.com")])
    assert strip_forged(field + b"Subject: x\r\n\r\n", "mx.example.org") == b"Subject: x\r\n\r\n"


@given(st.binary(max_size=400))
def test_rfc8601_strip_forged_any_block(block: bytes) -> None:
    """Any block: the result is the block or a shorter one, and only ever loses whole fields."""
    stripped = strip_forged(block, "mx.example.org")
    assert len(stripped) <= len(block)
    assert stripped == block or b"uthentication-" in block.lower()
