"""IMAP commands as typed values (RFC 9051 §6, RFC 3501 §6 and the extensions we offer).

`protocol.imap.parser` turns a framed command into one of these; the session in `server.imap` acts on them.
Mailbox names here are already decoded (modified UTF-7 of IMAP4rev1 clients, or UTF-8) and use "/" as the
hierarchy separator; "INBOX" in any case is normalised to "INBOX".
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal, TypeAlias


# --- sequence sets (RFC 9051 §9 "sequence-set") ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SequenceSet:
    """Ranges of message numbers or UIDs; None stands for "*" (the largest number in use). A range may be written
    backwards ("5:2"); `resolve` orders it. `saved` is the "$" of RFC 5182 (the last SEARCH result)."""

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False

    def resolve(self, largest: int) -> list[int]:
        """Sorted, unique numbers in 1..largest that the set names (for UIDs: filter the result by existence)."""
        out: set[int] = set()
        for low, high in self.ranges:
            a = largest if low is None else low
            b = largest if high is None else high
            if a > b:
                a, b = b, a
            out.update(range(max(a, 1), min(b, largest) + 1))
        return sorted(out)

    def contains(self, number: int, largest: int) -> bool:
        for low, high in self.ranges:
            a = largest if low is None else low
            b = largest if high is None else high
            if a > b:
                a, b = b, a
            if a <= number <= b:
                return True
        return False


# --- FETCH items (RFC 9051 §6.4.5) ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Section:
    """A body section: `part` is the part path (empty for the whole message), `text` one of None (the whole part),
    "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"; `fields` upper-cased for the field lists."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """A simple FETCH item: FLAGS, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE, BODY (the non-extensible
    BODYSTRUCTURE), UID, RFC822, RFC822.HEADER, RFC822.TEXT, MODSEQ (RFC 7162)."""

    name: str


@dataclass(frozen=True, slots=True)
class FetchBody:
    """BODY[section]<partial>, BODY.PEEK[...], BINARY[...] / BINARY.PEEK[...] (RFC 3516, `binary`)."""

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None  # (offset, count)
    binary: bool = False


@dataclass(frozen=True, slots=True)
class FetchBinarySize:
    """BINARY.SIZE[part] (RFC 3516)."""

    part: tuple[int, ...]


FetchItem: TypeAlias = FetchAttribute | FetchBody | FetchBinarySize


# --- SEARCH keys (RFC 9051 §6.4.4) ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """SEEN/UNSEEN, ANSWERED/UNANSWERED, DELETED/UNDELETED, FLAGGED/UNFLAGGED, DRAFT/UNDRAFT, RECENT,
    KEYWORD/UNKEYWORD: `flag` is the flag as written ("\\Seen", "\\Recent", or a keyword), `present` False for the
    UN- forms. NEW is And(RECENT, UNSEEN) and OLD is Not(RECENT), built by the parser."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """FROM, TO, CC, BCC, SUBJECT and HEADER field string: `field` upper-cased; an empty value matches every
    message that has the field (RFC 9051 §6.4.4 HEADER)."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    """BODY string (`where` "BODY": the text after the header) and TEXT string ("TEXT": header and body)."""

    where: Literal["BODY", "TEXT"]
    value: str


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (the Date: header), dates only."""

    which: Literal["internal", "sent"]
    op: Literal["before", "on", "since"]
    date: datetime.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    op: Literal["larger", "smaller"]
    size: int


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A bare sequence set (`uid` False) or UID set."""

    set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModSeq:
    """MODSEQ n (RFC 7162 §3.1.5); the optional entry name/type are parsed and ignored."""

    modseq: int


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    keys: tuple[SearchKey, ...]


SearchKey: TypeAlias = (
    SearchAll
    | SearchFlag
    | SearchHeader
    | SearchText
    | SearchDate
    | SearchSize
    | SearchSet
    | SearchModSeq
    | SearchNot
    | SearchOr
    | SearchAnd
)


# --- commands ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Command:
    tag: str


@dataclass(frozen=True, slots=True)
class Capability(Command):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True)
class Check(Command):  # IMAP4rev1 only; acts as NOOP
    pass


@dataclass(frozen=True, slots=True)
class Logout(Command):
    pass


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    pass


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """`initial` is the SASL-IR initial response (RFC 4959), base64-decoded; b"" for "=", None when absent."""

    mechanism: str  # upper-cased
    initial: bytes | None = None


@dataclass(frozen=True, slots=True)
class Login(Command):
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Enable(Command):
    capabilities: tuple[str, ...]  # upper-cased


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT, or EXAMINE when `readonly`; `condstore` for the (CONDSTORE) parameter (RFC 7162 §3.2.5)."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False


@dataclass(frozen=True, slots=True)
class Create(Command):
    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE ... (USE (\Sent)) of RFC 6154 §3


@dataclass(frozen=True, slots=True)
class Delete(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST with RFC 5258 LIST-EXTENDED: `select_options` upper-cased (SUBSCRIBED, REMOTE, RECURSIVEMATCH,
    SPECIAL-USE), `return_options` upper-cased (SUBSCRIBED, CHILDREN, SPECIAL-USE), `return_status` the STATUS items
    of RETURN (STATUS (...)) (RFC 5819), None when absent. Patterns keep "%" and "*" as written."""

    reference: str
    patterns: tuple[str, ...]
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    return_status: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Lsub(Command):  # IMAP4rev1 only
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    pass


@dataclass(frozen=True, slots=True)
class Status(Command):
    """Items upper-cased: MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN, DELETED, SIZE, RECENT, HIGHESTMODSEQ."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    internal_date: datetime.datetime | None  # timezone-aware
    message: bytes
    utf8: bool = False  # APPEND ... UTF8 (~{n}) of RFC 6855


@dataclass(frozen=True, slots=True)
class Idle(Command):
    pass


@dataclass(frozen=True, slots=True)
class Close(Command):
    pass


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    pass


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE set (RFC 4315 §2.1) when `uids` is given."""

    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True)
class Search(Command):
    """`return_options` upper-cased (MIN, MAX, ALL, COUNT, SAVE of RFC 4731/5182/9051); None when no RETURN was
    given, which an IMAP4rev1 session answers with an untagged SEARCH and IMAP4rev2 with ESEARCH."""

    key: SearchKey
    uid: bool = False
    charset: str | None = None
    return_options: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """Macros (ALL, FAST, FULL) are expanded by the parser. `changed_since` is the CHANGEDSINCE modifier and
    `vanished` the VANISHED one (RFC 7162)."""

    set: SequenceSet
    items: tuple[FetchItem, ...]
    uid: bool = False
    changed_since: int | None = None


@dataclass(frozen=True, slots=True)
class Store(Command):
    """`mode` "+" adds, "-" removes, "" replaces; `silent` for .SILENT; `unchanged_since` (RFC 7162 §3.1.3)."""

    set: SequenceSet
    mode: Literal["+", "-", ""]
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class Copy(Command):
    set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move(Command):
    set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: field/value pairs, or None for "ID NIL"."""

    parameters: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(Command):
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    root: str
    limits: tuple[tuple[str, int], ...] = field(default_factory=tuple)


AnyCommand: TypeAlias = (
    Capability
    | Noop
    | Check
    | Logout
    | StartTLS
    | Authenticate
    | Login
    | Enable
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Namespace
    | Status
    | Append
    | Idle
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
    | Id
    | GetQuota
    | GetQuotaRoot
    | SetQuota
)
