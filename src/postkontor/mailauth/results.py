"""The Authentication-Results header field (RFC 8601): composing ours, removing forged ones.

Every value that comes from the sender (MAIL FROM and HELO domains, d=, s=, b=, From domains, reasons) goes out
either as a bare token or address when it is one, or as a quoted-string with every control character (CR and LF
included) removed: nothing a client sends can end our header line and start one of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["MethodResult", "arc", "compose", "dkim", "dmarc", "spf", "strip_forged"]

HEADER_NAME: Final = "Authentication-Results"
MAX_LINE: Final = 77  # RFC 5322 §2.1.1: lines SHOULD be under 78 characters, CRLF not counted
_FOLD: Final = "\r\n "  # folding before a space: unfolding leaves exactly that space (RFC 5322 §3.2.2)

# RFC 8601 §2.7 (and RFC 8617 §8 for arc): the results each method may report.
RESULTS: Final[dict[str, frozenset[str]]] = {
    "spf": frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror", "policy"}),
    "dkim": frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}),
    "dmarc": frozenset({"none", "pass", "fail", "temperror", "permerror"}),
    "arc": frozenset({"none", "pass", "fail"}),
    "iprev": frozenset({"pass", "fail", "temperror", "permerror"}),
    "auth": frozenset({"none", "pass", "fail", "temperror", "permerror"}),
}

# RFC 2045 token: printable ASCII but SP and tspecials.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+"
# pvalue's [ [local-part] "@" ] domain-name (RFC 8601 §2.2), dot-atom forms only.
_ADDRESS_RE: Final = re.compile(rf"(?:{_ATOM}(?:\.{_ATOM})*)?@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.?")
_CONTROLS_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MAX_VALUE: Final = 320  # a local-part, "@" and a domain at their longest; anything longer is cut


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One resinfo: `method=result`, an optional comment and reason, then ptype.property=value pairs."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    comment: str = ""

    def __post_init__(self) -> None:
        allowed = RESULTS.get(self.method)
        if not _TOKEN_RE.fullmatch(self.method) or not (
            self.result in allowed if allowed is not None else _TOKEN_RE.fullmatch(self.result)
        ):
            raise ValueError(f"invalid result {self.method}={self.result}")
        for name, _ in self.properties:
            if not re.fullmatch(r"[a-z]+\.[A-Za-z0-9\-_]+", name):
                raise ValueError(f"invalid property {name!r}")


def spf(result: str, *, mailfrom: str | None = None, helo: str | None = None, reason: str = "") -> MethodResult:
    """RFC 8601 §2.7.2: smtp.mailfrom (the domain or address checked), smtp.helo for a HELO check."""
    properties = [("smtp.mailfrom", mailfrom)] if mailfrom is not None else []
    if helo is not None:
        properties.append(("smtp.helo", helo))
    return MethodResult("spf", result, tuple(properties), reason)


def dkim(result: str, *, domain: str = "", selector: str = "", signature: str = "", reason: str = "") -> MethodResult:
    """RFC 8601 §2.7.1 / RFC 6008: header.d, header.s, and the first 8 characters of b= to tell signatures
    apart (RFC 6008 §4: enough to be unique in practice, short enough for the header)."""
    properties = [("header.d", domain), ("header.s", selector), ("header.b", re.sub(r"\s+", "", signature)[:8])]
    return MethodResult("dkim", result, tuple((name, value) for name, value in properties if value), reason)


def dmarc(
    result: str, *, header_from: str = "", policy: str = "", disposition: str = "", reason: str = ""
) -> MethodResult:
    """RFC 7489 §11.2: header.from; the published policy and what was done go in a comment."""
    words = [f"p={policy}"] if policy else []
    if disposition:
        words.append(f"dis={disposition}")
    properties = (("header.from", header_from),) if header_from else ()
    return MethodResult("dmarc", result, properties, reason, " ".join(words))


def arc(result: str, *, oldest_pass: int | None = None, remote_ip: str = "", reason: str = "") -> MethodResult:
    """RFC 8617 §8: header.oldest-pass and smtp.remote-ip."""
    properties = [("header.oldest-pass", str(oldest_pass))] if oldest_pass is not None else []
    if remote_ip:
        properties.append(("smtp.remote-ip", remote_ip))
    return MethodResult("arc", result, tuple(properties), reason)


def _words(text: str) -> list[str]:
    """Sender-influenced text as space-separated words, with no control characters left in it."""
    return _CONTROLS_RE.sub(" ", text[:_MAX_VALUE]).split()


def _quoted(text: str) -> list[str]:
    """A quoted-string as tokens joined by single spaces (so it can be folded between words)."""
    words = [word.replace("\\", "\\\\").replace('"', '\\"') for word in _words(text)] or [""]
    words[0] = '"' + words[0]
    words[-1] += '"'  # (the same element as words[0] for a single word)
    return words


def _value(text: str) -> list[str]:
    text = _CONTROLS_RE.sub("", text[:_MAX_VALUE]).strip()
    if _TOKEN_RE.fullmatch(text) or _ADDRESS_RE.fullmatch(text):
        return [text]
    return _quoted(text)


def _resinfo(result: MethodResult) -> list[str]:
    tokens = [f"{result.method}={result.result}"]
    if result.comment:
        words = [re.sub(r"[()\\]", "", word) for word in _words(result.comment)]
        words = [word for word in words if word]
        if words:
            words[0] = "(" + words[0]
            words[-1] += ")"
            tokens.extend(words)
    if result.reason:
        reason = _quoted(result.reason)
        reason[0] = "reason=" + reason[0]
        tokens.extend(reason)
    for name, text in result.properties:
        value = _value(text)
        value[0] = f"{name}={value[0]}"
        tokens.extend(value)
    return tokens


def compose(authserv_id: str, results: Iterable[MethodResult]) -> bytes:
    """One Authentication-Results field, CRLF-terminated, folded so that lines stay under 78 characters
    (a single token longer than that, such as a 250-character domain, gets a line of its own).

    With no results the field says "none" (RFC 8601 §2.2). Raises ValueError for an authserv-id that is not a
    token or domain name (it is our own configuration, never the sender's).
    """
    if not _TOKEN_RE.fullmatch(authserv_id):
        raise ValueError(f"invalid authserv-id {authserv_id!r}")
    infos = [_resinfo(result) for result in results]
    tokens = [f"{HEADER_NAME}: {authserv_id};"]
    if not infos:
        tokens.append("none")
    for index, info in enumerate(infos):
        if index < len(infos) - 1:
            info[-1] += ";"
        tokens.extend(info)
    lines = [tokens[0]]
    for token in tokens[1:]:
        if len(lines[-1]) + 1 + len(token) <= MAX_LINE:
            lines[-1] += " " + token
        else:
            lines.append(token)
    return (_FOLD.join(lines) + "\r\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ forged fields (§5)

_END_OF_HEADER_RE: Final = re.compile(rb"(?:\A|\n)(\r?\n)")
_AR_FIELD_RE: Final = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
_ID_RE: Final = re.compile(rb'"((?:[^"\\]|\\.)*)"|([^\s;()"]+)', re.DOTALL)


def _skip_cfws(value: bytes) -> bytes:
    """`value` without leading whitespace and (nested) comments."""
    while True:
        value = value.lstrip(b" \t\r\n")
        if not value.startswith(b"("):
            return value
        depth, escaped, end = 0, False, -1
        for index, char in enumerate(value):  # comments are short, and this runs only on A-R fields
            if escaped:
                escaped = False
            elif char == 0x5C:  # backslash: a quoted-pair
                escaped = True
            elif char == 0x28:
                depth += 1
            elif char == 0x29:
                depth -= 1
                if depth == 0:
                    end = index
                    break
        if end < 0:
            return b""  # an unterminated comment: no authserv-id at all
        value = value[end + 1 :]


def _claims(field: bytes, authserv_id: bytes) -> bool:
    match = _AR_FIELD_RE.match(field)
    if match is None:
        return False
    found = _ID_RE.match(_skip_cfws(field[match.end() :]))
    if found is None:
        return False
    claimed = found.group(1) if found.group(1) is not None else found.group(2)
    claimed = re.sub(rb"\\(.)", rb"\1", claimed, flags=re.DOTALL)
    return claimed.lower().rstrip(b".") == authserv_id


def strip_forged(header_block: bytes, authserv_id: str) -> bytes:
    """The header block without Authentication-Results fields that name `authserv_id` (case-insensitively),
    as RFC 8601 §5 requires of a border MTA; everything else, body included if present, is kept byte for byte."""
    if b"authentication-results" not in header_block.lower():
        return header_block  # the common case: one scan, no copy
    end = _END_OF_HEADER_RE.search(header_block)
    head, tail = (header_block[: end.start(1)], header_block[end.start(1) :]) if end else (header_block, b"")
    ours = authserv_id.lower().rstrip(".").encode("utf-8")
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line  # a continuation line belongs to the field above
        elif line:
            fields.append(line)
    return b"".join(field for field in fields if not _claims(field, ours)) + tail
