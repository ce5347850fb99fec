"""RFC 5322 §3.4 address lists as IMAP ENVELOPE address structures (RFC 9051 §7.5.2): ((name adl mailbox host)
...), with a group as (NIL NIL "group" NIL) ... (NIL NIL NIL NIL).

Values are raw (encoded words are not decoded, as the ENVELOPE is); a display name falls back to a comment after
the address ("user@host (Real Name)"), as Dovecot does. A missing host is "" rather than NIL, because NIL host
marks group syntax. Never raises: whatever cannot be parsed is taken as well as it can be.
"""

from __future__ import annotations

import re

from postkontor.protocol.imap.values import Concat, IMAPValue

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
    |(?P<qs>"(?:[^"\\]|\\.)*"?)
    |(?P<dl>\[(?:[^\[\]\\]|\\.)*\]?)
    |(?P<cm>\()
    |(?P<sp>[<>@,;:.])
    |(?P<atom>[^ \t\r\n"\[\]()<>@,;:.]+)
    |(?P<other>.)""",
    re.X | re.S,
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_MAX_ADDRESSES = 10000  # a bound on the work one header can cause

# A token: (kind, text, preceded by white space). Kinds: "w" word (atom, quoted string, domain literal), "c"
# comment, or the special character itself.
_Tok = tuple[str, str, bool]


def _comment(text: str, pos: int) -> tuple[str, int]:
    """The text of the comment opening at text[pos] ("(") and the index after it; nested comments are kept."""
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return _QUOTED_PAIR.sub(r"\1", text[pos + 1 : i]), i + 1
        i += 1
    return _QUOTED_PAIR.sub(r"\1", text[pos + 1 :]), n


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    space = False
    n = len(text)
    while pos < n:
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - "other" matches any character
            break
        kind = match.lastgroup
        value = match.group()
        pos = match.end()
        if kind == "ws":
            space = True
            continue
        if kind == "cm":
            comment, pos = _comment(text, match.start())
            out.append(("c", comment.strip(), space))
        elif kind == "qs":
            inner = value[1:-1] if len(value) > 1 and value.endswith('"') and _closed(value) else value[1:]
            out.append(("w", _QUOTED_PAIR.sub(r"\1", inner), space))
        elif kind == "sp":
            out.append((value, value, space))
        else:
            out.append(("w", value, space))
        space = False
    return out


def _closed(quoted: str) -> bool:
    backslashes = len(quoted[:-1]) - len(quoted[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def _phrase(tokens: list[_Tok]) -> str:
    """Words and dots of a display name, separated by one space where the source had white space."""
    out: list[str] = []
    for kind, text, space in tokens:
        if kind == "c":
            continue
        if out and space:
            out.append(" ")
        out.append(text)
    return "".join(out)


def _addr_spec(tokens: list[_Tok]) -> tuple[str, str]:
    """(local part, domain) split at the last "@"; white space and comments inside are dropped."""
    words = [(kind, text) for kind, text, _ in tokens if kind != "c"]
    at = max((i for i, (kind, _) in enumerate(words) if kind == "@"), default=-1)
    local = words if at < 0 else words[:at]
    domain = [] if at < 0 else words[at + 1 :]
    return "".join(text for _, text in local), "".join(text for _, text in domain)


def _wire(text: str | None) -> IMAPValue:
    """str, or the raw bytes when the header was not UTF-8 (decoded with surrogate escapes)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _address(name: str | None, route: str | None, mailbox: str, host: str) -> list[IMAPValue]:
    return [_wire(name), _wire(route), _wire(mailbox), _wire(host)]


def _first_comment(tokens: list[_Tok]) -> str | None:
    for kind, text, _ in tokens:
        if kind == "c" and text:
            return text
    return None


def parse_address_list(raw: bytes) -> list[IMAPValue] | None:
    """The ENVELOPE address list of a raw (unfolded) field value; None (NIL) when it holds no address."""
    tokens = _tokens(raw.decode("utf-8", "surrogateescape"))
    out: list[IMAPValue] = []
    pending: list[_Tok] = []
    in_group = False
    i = 0
    n = len(tokens)

    def flush() -> None:
        if any(kind != "c" for kind, _, _ in pending):
            local, domain = _addr_spec(pending)
            out.append(_address(_first_comment(pending), None, local, domain))
        pending.clear()

    while i < n and len(out) < _MAX_ADDRESSES:
        kind = tokens[i][0]
        if kind == "<":
            i = _angle(tokens, i, pending, out)
            continue
        if kind == ":" and not in_group and pending:
            out.append([None, None, _wire(_phrase(pending)), None])
            pending.clear()
            in_group = True
        elif kind == ";":
            flush()
            if in_group:
                out.append([None, None, None, None])
                in_group = False
        elif kind == ",":
            flush()
        else:
            pending.append(tokens[i])
        i += 1
    flush()
    if in_group:
        out.append([None, None, None, None])
    # RFC 9051 §9: "(" 1*address ")", the addresses back to back.
    return [Concat(out)] if out else None


def _angle(tokens: list[_Tok], i: int, phrase: list[_Tok], out: list[IMAPValue]) -> int:
    """Parses "<[route:]addr-spec>" at tokens[i] with the display name gathered so far; returns the index of the
    token after the address (the "," or ";" that ends it is left for the caller)."""
    n = len(tokens)
    j = i + 1
    inner: list[_Tok] = []
    while j < n and tokens[j][0] != ">":
        inner.append(tokens[j])
        j += 1
    j += 1  # past ">" (or the end)
    trailing: list[_Tok] = []
    while j < n and tokens[j][0] not in (",", ";"):
        trailing.append(tokens[j])
        j += 1
    route: str | None = None
    words = [t for t in inner if t[0] != "c"]
    if words and words[0][0] == "@":
        colon = next((k for k, t in enumerate(words) if t[0] == ":"), -1)
        if colon >= 0:
            route = "".join(text for _, text, _ in words[:colon])
            words = words[colon + 1 :]
    local, domain = _addr_spec(words)
    name: str | None = _phrase(phrase) or _first_comment(trailing) or None
    out.append(_address(name, route, local, domain))
    phrase.clear()
    return j


__all__ = ["parse_address_list"]
