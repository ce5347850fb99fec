"""SEARCH (RFC 9051 §6.4.4) evaluated on a pool thread over the session's view of the mailbox.

Flags, sizes, dates and numbers come from the index; header keys read the header block, cached in the index
after the first search; only BODY and TEXT read whole message files (as Dovecot does without a full-text index).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from postkontor.message import imapview
from postkontor.protocol.imap.commands import (
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModSeq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
)
from postkontor.store.mailindex import MailboxError, MailIndex, MessageInfo

_HEADER_CACHE = "header"  # the same cache FETCH fills (server.imap.fetch.HEADER_CACHE)


def _needs_headers(key: SearchKey) -> bool:
    if isinstance(key, SearchHeader):
        return True
    if isinstance(key, SearchDate):
        return key.which == "sent"
    if isinstance(key, SearchNot):
        return _needs_headers(key.key)
    if isinstance(key, SearchOr):
        return _needs_headers(key.left) or _needs_headers(key.right)
    if isinstance(key, SearchAnd):
        return any(_needs_headers(k) for k in key.keys)
    return False


def _compare(op: str, value: datetime.date, wanted: datetime.date) -> bool:
    if op == "before":
        return value < wanted
    if op == "on":
        return value == wanted
    return value >= wanted


class Searcher:
    """One SEARCH over `targets` [(seq, message)]; `recent` and `saved` (the $ of RFC 5182) are session state."""

    def __init__(
        self,
        index: MailIndex,
        mailbox: str,
        targets: list[tuple[int, MessageInfo]],
        *,
        recent: set[int],
        saved: list[int],
    ) -> None:
        self.index = index
        self.mailbox = mailbox
        self.targets = targets
        self.recent = recent
        self.saved = set(saved)
        self.largest_seq = len(targets)
        self.largest_uid = targets[-1][1].uid if targets else 0
        self._headers: dict[int, bytes] = {}
        self._data: dict[int, bytes | None] = {}

    def run(self, key: SearchKey) -> list[tuple[int, MessageInfo]]:
        if _needs_headers(key):
            self._load_headers()
        matches: list[tuple[int, MessageInfo]] = []
        for seq, message in self.targets:
            if self._match(key, seq, message):
                matches.append((seq, message))
            self._data.pop(message.uid, None)  # keep at most one message body in memory
        return matches

    def _load_headers(self) -> None:
        uids = [message.uid for _, message in self.targets]
        self._headers = self.index.cached(self.mailbox, uids, _HEADER_CACHE)
        fresh: dict[int, bytes] = {}
        for uid in uids:
            if uid not in self._headers:
                data = self._read(uid)
                header = imapview.header_block(data) if data is not None else b""
                self._headers[uid] = fresh[uid] = header
        if fresh:
            self.index.cache(self.mailbox, fresh, _HEADER_CACHE)

    def _read(self, uid: int) -> bytes | None:
        if uid not in self._data:
            try:
                self._data[uid] = self.index.read(self.mailbox, uid)
            except (MailboxError, OSError):
                self._data[uid] = None
        return self._data[uid]

    def _match(self, key: SearchKey, seq: int, message: MessageInfo) -> bool:
        match_key: Callable[[SearchKey], bool] = lambda inner: self._match(inner, seq, message)  # noqa: E731
        if isinstance(key, SearchAll):
            return True
        if isinstance(key, SearchFlag):
            if key.flag.lower() == "\\recent":
                has = message.uid in self.recent
            else:
                wanted = key.flag.lower()
                has = any(flag.lower() == wanted for flag in message.flags)
            return has == key.present
        if isinstance(key, SearchAnd):
            return all(match_key(inner) for inner in key.keys)
        if isinstance(key, SearchOr):
            return match_key(key.left) or match_key(key.right)
        if isinstance(key, SearchNot):
            return not match_key(key.key)
        if isinstance(key, SearchSet):
            if key.set.saved:
                return message.uid in self.saved
            if key.uid:
                return key.set.contains(message.uid, self.largest_uid)
            return key.set.contains(seq, self.largest_seq)
        if isinstance(key, SearchSize):
            return message.size > key.size if key.op == "larger" else message.size < key.size
        if isinstance(key, SearchModSeq):
            return message.modseq >= key.modseq
        if isinstance(key, SearchDate):
            if key.which == "internal":
                # RFC 9051 §6.4.4: internal dates compare in the server's idea of the date; we keep UTC.
                day = datetime.datetime.fromtimestamp(message.internal_date, datetime.UTC).date()
            else:
                sent = imapview.sent_date(self._headers.get(message.uid, b""))
                if sent is None:
                    return False
                day = sent
            return _compare(key.op, day, key.date)
        if isinstance(key, SearchHeader):
            return imapview.header_matches(self._headers.get(message.uid, b""), key.field, key.value)
        if isinstance(key, SearchText):
            data = self._read(message.uid)
            if data is None:
                return False
            return imapview.text_matches(data, key.value, include_header=key.where == "TEXT")
        raise TypeError(f"unknown search key {key!r}")
