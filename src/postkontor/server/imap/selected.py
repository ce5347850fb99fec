"""The selected mailbox as one IMAP session sees it (RFC 9051 §2.3.1, §7.4, §7.5).

A session's view lags the index on purpose: message sequence numbers may only change when the session reports
it, so expunges by other sessions are held back while a command that uses sequence numbers runs (FETCH, STORE,
SEARCH: RFC 9051 §7.5.1) and reported at the next point that allows it, after which the view catches up.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from postkontor.protocol.imap.commands import SequenceSet
from postkontor.store.mailindex import Changes, MailboxState, MessageInfo


def flag_list(flags: frozenset[str] | set[str], recent: bool = False) -> bytes:
    items = sorted(flags)
    if recent:
        items.append("\\Recent")
    return b"(" + " ".join(items).encode("utf-8") + b")"


@dataclass
class SelectedMailbox:
    name: str
    readonly: bool
    uidvalidity: int
    uids: list[int]
    messages: dict[int, MessageInfo]
    recent: set[int]
    uidnext: int
    highest_modseq: int
    keywords: frozenset[str]
    condstore: bool = False
    pending_expunged: set[int] = field(default_factory=set)

    @classmethod
    def open(cls, state: MailboxState, *, readonly: bool, condstore: bool) -> SelectedMailbox:
        return cls(
            name=state.name,
            readonly=readonly,
            uidvalidity=state.uidvalidity,
            uids=[message.uid for message in state.messages],
            messages={message.uid: message for message in state.messages},
            recent=set(state.recent),
            uidnext=state.uidnext,
            highest_modseq=state.highest_modseq,
            keywords=state.keywords,
            condstore=condstore,
        )

    # --- numbers ------------------------------------------------------------------------------------------------
    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        position = bisect.bisect_left(self.uids, uid)
        if position < len(self.uids) and self.uids[position] == uid:
            return position + 1
        return None

    def resolve(self, numbers: SequenceSet, *, uid: bool) -> list[tuple[int, MessageInfo]]:
        """(sequence number, message) for each message the set names, ascending. For UID sets "*" is the largest
        UID in use, and UIDs that do not exist are skipped (RFC 9051 §6.4.8); a sequence number beyond the last
        message is the caller's error (checked with `valid_sequence_set`)."""
        uids = self.uids
        if not uids:
            return []
        out: list[tuple[int, MessageInfo]] = []
        if uid:
            largest = uids[-1]
            for low, high in numbers.ranges:
                a = largest if low is None else low
                b = largest if high is None else high
                if a > b:
                    a, b = b, a
                start = bisect.bisect_left(uids, a)
                stop = bisect.bisect_right(uids, b)
                out.extend((index + 1, self.messages[uids[index]]) for index in range(start, stop))
            if len(numbers.ranges) > 1:
                out = sorted(dict(out).items())
            return out
        for seq in numbers.resolve(len(uids)):
            out.append((seq, self.messages[uids[seq - 1]]))
        return out

    def valid_sequence_set(self, numbers: SequenceSet) -> bool:
        """RFC 9051 §9: a message sequence number above the number of messages is invalid (BAD); "*" is always
        fine, even in an empty mailbox."""
        count = len(self.uids)
        for low, high in numbers.ranges:
            for value in (low, high):
                if value is not None and (value > count or value < 1):
                    return False
        return True

    # --- updates ------------------------------------------------------------------------------------------------
    def apply(self, changes: Changes, *, allow_expunge: bool, utf8: bool, rev2: bool) -> list[bytes]:
        """Untagged responses bringing the client to `changes`; updates the view."""
        out: list[bytes] = []
        state = changes.state
        quiet = not changes.expunged and not changes.changed and state.keywords == self.keywords
        if quiet and state.uidnext == self.uidnext and not (allow_expunge and self.pending_expunged):
            return out
        self.pending_expunged.update(uid for uid in changes.expunged if uid in self.messages)
        current = {message.uid for message in state.messages} if self.pending_expunged or changes.expunged else None
        if current is not None:
            # An expunge may also be seen only as a missing row (the index forgot it before we asked).
            self.pending_expunged.update(uid for uid in self.uids if uid not in current)
        if allow_expunge and self.pending_expunged:
            out.extend(self._expunge_responses(sorted(self.pending_expunged)))
            self.pending_expunged.clear()
        first_new = bisect.bisect_left(state.messages, self.uidnext, key=lambda message: message.uid)
        new = [message for message in state.messages[first_new:] if message.uid not in self.messages]
        if new:
            for message in new:
                self.uids.append(message.uid)
                self.messages[message.uid] = message
            self.uids.sort()
            self.recent.update(uid for uid in state.recent if uid in self.messages)
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            if not rev2:
                out.append(b"* %d RECENT\r\n" % len(self.recent))
        if state.keywords != self.keywords:
            self.keywords = state.keywords
            out.extend(self.flags_responses())
        for message in changes.changed:
            known = self.messages.get(message.uid)
            if known is None or message.uid in self.pending_expunged:
                continue
            self.messages[message.uid] = message
            if known.flags != message.flags:
                out.append(self.fetch_flags(message, with_uid=True))
        self.uidnext = max(self.uidnext, state.uidnext)
        self.highest_modseq = max(self.highest_modseq, state.highest_modseq)
        return out

    def _expunge_responses(self, uids: list[int]) -> list[bytes]:
        out: list[bytes] = []
        for uid in uids:
            seq = self.seq_of(uid)
            if seq is None:
                continue
            del self.uids[seq - 1]
            del self.messages[uid]
            self.recent.discard(uid)
            out.append(b"* %d EXPUNGE\r\n" % seq)
        return out

    def expunged_by_us(self, uids: list[int]) -> list[bytes]:
        self.pending_expunged.difference_update(uids)
        return self._expunge_responses(uids)

    def update(self, message: MessageInfo) -> None:
        # highest_modseq moves only with `apply`: bumping it here could skip another session's earlier change.
        if message.uid in self.messages:
            self.messages[message.uid] = message

    def fetch_flags(self, message: MessageInfo, *, with_uid: bool) -> bytes:
        seq = self.seq_of(message.uid)
        parts = [b"FLAGS " + flag_list(message.flags, message.uid in self.recent)]
        if with_uid:
            parts.append(b"UID %d" % message.uid)
        if self.condstore:
            parts.append(b"MODSEQ (%d)" % message.modseq)
        return b"* %d FETCH (%s)\r\n" % (seq or 0, b" ".join(parts))

    def flags_responses(self) -> list[bytes]:
        system = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
        keywords = sorted(self.keywords)
        flags = " ".join(system + keywords).encode("utf-8")
        permanent = " ".join([*system, *keywords, "\\*"]).encode("utf-8")
        out = [b"* FLAGS (" + flags + b")\r\n"]
        if self.readonly:
            out.append(b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n")
        else:
            out.append(b"* OK [PERMANENTFLAGS (" + permanent + b")] Flags permitted\r\n")
        return out
