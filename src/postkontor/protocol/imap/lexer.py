"""Tokens of IMAP commands (RFC 9051 §9 formal syntax): the cursor the command parser reads a framed command
with. Every token is one precompiled regular expression matched at the cursor; a literal is taken from the frame
where the framer left its marker (at the end of a line piece), so the parser never sees a literal's octets as
syntax.
"""

from __future__ import annotations

import codecs
import datetime
import re
from collections.abc import Callable

from postkontor.protocol.imap import commands as c
from postkontor.protocol.imap.framing import RawCommand
from postkontor.protocol.imap.mailboxname import decode_mutf7

__all__ = ["MAX_SEARCH_DEPTH", "Cursor", "IMAPParseError", "normalise_inbox", "parse_sequence_set"]

MAX_SEARCH_DEPTH = 50  # nested parentheses/NOT/OR in SEARCH: bounds the recursion an attacker can cause

TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")
ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")  # 1*ATOM-CHAR
ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")  # 1*ASTRING-CHAR
LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){\"\\]+")  # 1*list-char (adds % * ])
QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
UNESCAPE = re.compile(rb"\\([\"\\])")
LITERAL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}")
NUMBER = re.compile(rb"[0-9]+")
SEQSET = re.compile(rb"\$|(?:\*|[1-9][0-9]*)(?::(?:\*|[1-9][0-9]*))?(?:,(?:\*|[1-9][0-9]*)(?::(?:\*|[1-9][0-9]*))?)*")
FLAG = re.compile(rb"\\?[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")  # "\" atom (system/extension flag) or keyword
FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
PART = re.compile(rb"[1-9][0-9]*(?:\.[1-9][0-9]*)*")
PARTIAL = re.compile(rb"<([0-9]+)\.([0-9]+)>")
BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
MONTHS = {
    m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}
DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
DATE_TIME = re.compile(
    rb'"( [0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
CTL = re.compile(r"[\x00-\x1f\x7f]")
MAX32 = 0xFFFFFFFF
MAX63 = 0x7FFFFFFFFFFFFFFF

SYSTEM_FLAGS = {f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}


class IMAPParseError(Exception):
    """A syntax error. `tag` is None when the tag itself could not be read (answer `* BAD`)."""

    def __init__(self, tag: str | None, text: str) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text


class Cursor:
    """Position in a framed command: line piece `k`, offset `i`; literal k follows piece k."""

    __slots__ = ("charset", "i", "k", "lits", "s", "segs", "tag", "utf8")

    def __init__(self, raw: RawCommand, utf8: bool) -> None:
        self.segs = raw.segments
        self.lits = raw.literals
        self.k = 0
        self.s = raw.segments[0] if raw.segments else b""
        self.i = 0
        self.tag: str | None = None
        self.utf8 = utf8
        self.charset: str | None = None

    def fail(self, text: str) -> IMAPParseError:
        return IMAPParseError(self.tag, text)

    def peek(self) -> int:
        return self.s[self.i] if self.i < len(self.s) else -1

    def at_end(self) -> bool:
        return self.i >= len(self.s) and self.k >= len(self.segs) - 1

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("unexpected characters at end of command")

    def take(self, octets: bytes) -> bool:
        if self.s.startswith(octets, self.i):
            self.i += len(octets)
            return True
        return False

    def expect(self, octets: bytes, what: str) -> None:
        if not self.take(octets):
            raise self.fail(f"expected {what}")

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def match(self, regex: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        m = regex.match(self.s, self.i)
        if m is None:
            raise self.fail(f"expected {what}")
        self.i = m.end()
        return m

    def word(self) -> str:
        """An atom, upper-cased (command names, keywords of the grammar)."""
        return self.match(ATOM, "an atom").group().decode("ascii").upper()

    def number(self, limit: int = MAX32, nonzero: bool = False) -> int:
        digits = self.match(NUMBER, "a number").group()
        value = int(digits) if len(digits) <= 20 else limit + 1
        if value > limit or (nonzero and value == 0):
            raise self.fail("number out of range")
        return value

    # --- strings ---------------------------------------------------------------------------------------------
    def literal(self, allow8: bool = False) -> tuple[bytes, bool]:
        m = self.match(LITERAL, "a literal")
        if m.end() != len(self.s) or self.k >= len(self.lits):
            raise self.fail("literal marker not at the end of a line")
        if m.group(1) and not allow8:
            raise self.fail("literal8 not allowed here")
        data = self.lits[self.k]
        self.k += 1
        self.s = self.segs[self.k]
        self.i = 0
        return data, bool(m.group(1))

    def string(self) -> bytes:
        ch = self.peek()
        if ch == 0x22:  # '"'
            m = self.match(QUOTED, "a complete quoted string")
            body = m.group(1)
            return UNESCAPE.sub(rb"\1", body) if b"\\" in body else body
        if ch == 0x7B:  # "{"
            return self.literal()[0]
        raise self.fail("expected a string")

    def astring(self) -> bytes:
        ch = self.peek()
        if ch in (0x22, 0x7B):
            return self.string()
        return self.match(ASTRING_ATOM, "an astring").group()

    def nstring(self) -> bytes | None:
        if self.s[self.i : self.i + 3].upper() == b"NIL" and not ATOM.match(self.s, self.i + 3):
            self.i += 3
            return None
        return self.string()

    def text(self, data: bytes) -> str:
        """Strings are UTF-8 (RFC 9051 §4.3, RFC 6855); NUL is never text."""
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("string is not valid UTF-8") from None
        if "\x00" in value:
            raise self.fail("NUL in a string")
        return value

    def search_text(self, data: bytes) -> str:
        """A SEARCH string in the command's CHARSET. Charsets Python does not know are left for the session to
        answer NO [BADCHARSET] (RFC 9051 §6.4.4): the value is then decoded leniently and not meant to be used."""
        cs = self.charset
        if cs is None or cs in ("UTF-8", "US-ASCII"):
            return self.text(data)
        try:
            codecs.lookup(cs)
            return data.decode(cs)
        except LookupError:  # unknown, or not a text encoding ("rot13", "hex")
            return data.decode("utf-8", "replace")
        except (UnicodeError, ValueError):  # some codecs ("idna") raise plain UnicodeError
            raise self.fail(f"string is not valid {cs[:20]}") from None

    # --- mailbox names ---------------------------------------------------------------------------------------
    def mailbox(self) -> str:
        return normalise_inbox(self.mailbox_text(self.astring()))

    def mailbox_text(self, data: bytes) -> str:
        if self.utf8:
            name = self.text(data)
        else:
            try:
                name = decode_mutf7(data)
            except ValueError as exc:
                raise self.fail(f"bad mailbox name: {exc}") from None
        if CTL.search(name):
            raise self.fail("control characters in a mailbox name")
        return name

    def list_mailbox(self) -> str:
        ch = self.peek()
        data = self.string() if ch in (0x22, 0x7B) else self.match(LIST_ATOM, "a mailbox pattern").group()
        return self.mailbox_text(data)

    # --- structured values ---------------------------------------------------------------------------------
    def paren_list(self, item: Callable[[], object], empty_ok: bool = True) -> None:
        """ "(" item *(SP item) ")"; `item` stores what it reads."""
        self.expect(b"(", '"("')
        if self.take(b")"):
            if not empty_ok:
                raise self.fail("empty list")
            return
        item()
        while self.take(b" "):
            item()
        self.expect(b")", '")"')

    def atoms_upper(self, empty_ok: bool = True) -> list[str]:
        out: list[str] = []
        self.paren_list(lambda: out.append(self.word()), empty_ok)
        return out

    def flag(self) -> str:
        raw = self.match(FLAG, "a flag").group().decode("ascii")
        if raw.startswith("\\"):
            return SYSTEM_FLAGS.get(raw.upper(), raw)
        return raw

    def flag_list(self) -> tuple[str, ...]:
        out: list[str] = []
        self.paren_list(lambda: out.append(self.flag()))
        return tuple(out)

    def seqset(self) -> c.SequenceSet:
        return seqset_from(self.match(SEQSET, "a sequence set").group(), self)

    def search_date(self) -> datetime.date:
        quoted = self.take(b'"')
        m = self.match(DATE, "a date")
        if quoted:
            self.expect(b'"', "a closing quote")
        month = MONTHS.get(m.group(2).decode("ascii").upper())
        try:
            if month is None:
                raise ValueError
            return datetime.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise self.fail("invalid date") from None


def normalise_inbox(name: str) -> str:
    # RFC 9051 §5.1: INBOX is case-insensitive, also as the first level of a hierarchy ("inbox/x").
    if len(name) >= 5 and name[:5].upper() == "INBOX" and (len(name) == 5 or name[5] == "/"):
        return "INBOX" + name[5:]
    return name


def seqset_from(text: bytes, cur: Cursor | None = None) -> c.SequenceSet:
    if text == b"$":
        return c.SequenceSet((), saved=True)
    ranges: list[tuple[int | None, int | None]] = []
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        a = None if low == b"*" else int(low)
        b = a if not high else (None if high == b"*" else int(high))
        if (a is not None and a > MAX32) or (b is not None and b > MAX32):
            raise (cur.fail("sequence number out of range") if cur else ValueError("sequence number out of range"))
        ranges.append((a, b))
    return c.SequenceSet(tuple(ranges))


def parse_sequence_set(text: bytes) -> c.SequenceSet:
    """A sequence set on its own (RFC 9051 §9 sequence-set); ValueError if `text` is not one."""
    if len(text) > 1_000_000 or not SEQSET.fullmatch(text):
        raise ValueError("not a sequence set")
    return seqset_from(text)
