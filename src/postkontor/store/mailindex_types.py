"""The values the mail index hands to IMAP (RFC 9051) and POP3 (RFC 1939) sessions, and its one error type.

Re-exported by `postkontor.store.mailindex`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MailboxError(Exception):
    """A refused mailbox operation; `code` is the IMAP response code the session sends (RFC 5530 and friends):
    "NONEXISTENT", "ALREADYEXISTS", "CANNOT", "OVERQUOTA", "TOOBIG", "INUSE", "LIMIT", "USEATTR" (RFC 6154 §3)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"[{code}] {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """One LIST entry (RFC 9051 §6.3.9), with its RFC 6154 special use."""

    name: str
    special_use: str | None
    subscribed: bool
    has_children: bool
    exists: bool = True  # False: only a subscription outlives the mailbox (RFC 5258 §3.1 \NonExistent)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    uid: int
    flags: frozenset[str]  # system flags canonical ("\\Seen"), keywords as first written in the mailbox
    internal_date: float  # epoch seconds (the file's mtime, as Dovecot keeps it)
    size: int  # octets of the stored file
    modseq: int
    path: Path  # where the file is now (absolute)


@dataclass(frozen=True, slots=True)
class MailboxState:
    name: str
    uidvalidity: int
    uidnext: int
    highest_modseq: int
    messages: list[MessageInfo]  # ascending uid; sequence number n = messages[n-1]
    recent: frozenset[int]  # uids this call claimed as \Recent (first session to see them)
    keywords: frozenset[str]  # keywords ever used in this mailbox (for FLAGS / PERMANENTFLAGS)


@dataclass(frozen=True, slots=True)
class Changes:
    """What happened since a (uidnext, modseq) point (RFC 7162 CONDSTORE/QRESYNC)."""

    state: MailboxState
    expunged: list[int]  # uids (below the old uidnext) expunged after `modseq`, ascending
    changed: list[MessageInfo]  # messages whose modseq > `modseq` (flag changes, new messages)
