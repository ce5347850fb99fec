"""Commands on the selected mailbox's messages: FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT and
IDLE (RFC 9051 §6.4, RFC 2177, RFC 6851 MOVE, RFC 4315 UIDPLUS, RFC 7162 CONDSTORE, RFC 4731 ESEARCH)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from postkontor.protocol.imap import commands as c
from postkontor.server.imap.fetch import FetchRenderer, Target, sets_seen
from postkontor.server.imap.search import Searcher
from postkontor.server.imap.selected import SelectedMailbox
from postkontor.store.mailindex import MessageInfo

if TYPE_CHECKING:
    from postkontor.server.imap.session import IMAPSession

_SYSTEM_FLAGS = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged", "\\deleted": "\\Deleted"}
_SYSTEM_FLAGS["\\draft"] = "\\Draft"
_BATCH_MESSAGES = 100
_BATCH_OCTETS = 4 * 1024 * 1024


def sequence_set_text(numbers: list[int]) -> str:
    """Compact "1:3,7,9:10" form of ascending numbers (RFC 9051 §9 sequence-set)."""
    parts: list[str] = []
    start = previous = None
    for number in numbers:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}:{previous}")
        start = previous = number
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}:{previous}")
    return ",".join(parts)


class MessageCommands:
    def __init__(self, session: IMAPSession) -> None:
        self.session = session
        self.saved: list[int] = []  # RFC 5182 SEARCHRES: the UIDs of the last SEARCH ... RETURN (SAVE)

    def _selected(self) -> SelectedMailbox:
        selected = self.session.selected
        assert selected is not None
        return selected

    def storable_flags(self, flags: tuple[str, ...]) -> list[str] | None:
        """Canonical flags for STORE/APPEND; None if one is an unknown system flag (or \\Recent, RFC 9051 §2.3.2)."""
        out: list[str] = []
        for flag in flags:
            if flag.startswith("\\"):
                canonical = _SYSTEM_FLAGS.get(flag.lower())
                if canonical is None:
                    return None
                out.append(canonical)
            else:
                out.append(flag)
        return out

    def _targets(
        self, command: c.Fetch | c.Store | c.Copy | c.Move, numbers: c.SequenceSet
    ) -> list[tuple[int, MessageInfo]] | None:
        selected = self._selected()
        if numbers.saved:
            uids = set(self.saved)
            return [(seq, selected.messages[uid]) for seq, uid in enumerate(selected.uids, 1) if uid in uids]
        if not command.uid and not selected.valid_sequence_set(numbers):
            self.session.tagged(command.tag, "BAD", "Invalid message sequence number")
            return None
        return selected.resolve(numbers, uid=command.uid)

    async def _finish(self, command: c.Command, text: str, code: str | None = None, *, uid: bool = True) -> None:
        # Non-UID FETCH, STORE and SEARCH must not report expunges (RFC 9051 §7.5.1).
        await self.session.sync(allow_expunge=uid)
        self.session.tagged(command.tag, "OK", text, code)

    # --- FETCH --------------------------------------------------------------------------------------------------
    async def fetch(self, command: c.Fetch) -> None:
        session = self.session
        selected = self._selected()
        targets = self._targets(command, command.set)
        if targets is None:
            return
        items = command.items
        wants_modseq = command.changed_since is not None or any(
            isinstance(item, c.FetchAttribute) and item.name == "MODSEQ" for item in items
        )
        if wants_modseq:
            session.condstore = selected.condstore = True
        if command.uid and not any(isinstance(item, c.FetchAttribute) and item.name == "UID" for item in items):
            items = (c.FetchAttribute("UID"), *items)
        if wants_modseq and not any(isinstance(i, c.FetchAttribute) and i.name == "MODSEQ" for i in items):
            items = (*items, c.FetchAttribute("MODSEQ"))  # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ
        if command.changed_since is not None:
            targets = [(seq, message) for seq, message in targets if message.modseq > command.changed_since]
        index = session._index()
        if sets_seen(items) and not selected.readonly:
            unseen = [message.uid for _, message in targets if "\\Seen" not in message.flags]
            if unseen:
                changed, _ = await session.hub.run(index.store_flags, selected.name, unseen, "+", ["\\Seen"])
                for message in changed:
                    selected.update(message)
                targets = [(seq, selected.messages.get(message.uid, message)) for seq, message in targets]
                if not any(isinstance(item, c.FetchAttribute) and item.name == "FLAGS" for item in items):
                    items = (*items, c.FetchAttribute("FLAGS"))  # RFC 9051 §6.4.5: report the new \Seen
                if selected.condstore and not any(
                    isinstance(item, c.FetchAttribute) and item.name == "MODSEQ" for item in items
                ):
                    items = (*items, c.FetchAttribute("MODSEQ"))  # RFC 7162 §3.1: an implicit \Seen has a modseq
                session.changed(selected.name)
        renderer = FetchRenderer(index, selected.name, items, condstore=selected.condstore)
        batch: list[Target] = []
        octets = 0
        for seq, message in targets:
            batch.append(Target(seq, message, message.uid in selected.recent))
            octets += message.size if renderer.needs_data else 200
            if len(batch) >= _BATCH_MESSAGES or octets >= _BATCH_OCTETS:
                await self._render(renderer, batch)
                batch, octets = [], 0
        if batch:
            await self._render(renderer, batch)
        if renderer.unknown_cte:
            await session.sync(allow_expunge=command.uid)
            session.tagged(command.tag, "NO", "Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")
            return
        await self._finish(command, "FETCH completed", uid=command.uid)

    async def _render(self, renderer: FetchRenderer, batch: list[Target]) -> None:
        session = self.session
        for line in await session.hub.run(renderer.render_batch, batch):
            session.io.write(line)
        await session.io.drain()

    # --- STORE --------------------------------------------------------------------------------------------------
    async def store(self, command: c.Store) -> None:
        session = self.session
        selected = self._selected()
        if selected.readonly:
            session.tagged(command.tag, "NO", "Mailbox is read-only", "READ-ONLY")
            return
        flags = self.storable_flags(command.flags)
        if flags is None:
            session.tagged(command.tag, "BAD", "Invalid flag")
            return
        targets = self._targets(command, command.set)
        if targets is None:
            return
        if command.unchanged_since is not None:
            session.condstore = selected.condstore = True
        uids = [message.uid for _, message in targets]
        changed, failed = await session.hub.run(
            session._index().store_flags, selected.name, uids, command.mode, flags, command.unchanged_since
        )
        for message in changed:
            selected.update(message)
        if changed:
            session.changed(selected.name)
        failed_set = set(failed)
        changed_uids = {message.uid for message in changed}
        for _, message in targets:
            if message.uid in failed_set:
                continue
            current = selected.messages.get(message.uid)
            if current is None:
                continue
            if not command.silent or (selected.condstore and current.uid in changed_uids):
                if command.silent:
                    seq = selected.seq_of(current.uid)
                    uid_part = b" UID %d" % current.uid if command.uid else b""
                    session.io.write(b"* %d FETCH (MODSEQ (%d)%s)\r\n" % (seq or 0, current.modseq, uid_part))
                else:
                    session.io.write(selected.fetch_flags(current, with_uid=command.uid))
        code = None
        if failed:
            numbers = failed if command.uid else [selected.seq_of(uid) or 0 for uid in failed]
            code = "MODIFIED " + sequence_set_text(sorted(numbers))
        await self._finish(command, "STORE completed", code, uid=command.uid)

    # --- SEARCH -------------------------------------------------------------------------------------------------
    async def search(self, command: c.Search) -> None:
        session = self.session
        selected = self._selected()
        if command.charset is not None and command.charset.upper() not in ("UTF-8", "US-ASCII"):
            session.tagged(command.tag, "NO", "Only UTF-8 and US-ASCII searches", "BADCHARSET (UTF-8 US-ASCII)")
            return
        targets = [(seq, selected.messages[uid]) for seq, uid in enumerate(selected.uids, 1)]
        searcher = Searcher(session._index(), selected.name, targets, recent=selected.recent, saved=self.saved)
        matches = await session.hub.run(searcher.run, command.key)
        uses_modseq = _uses_modseq(command.key)
        if uses_modseq:
            session.condstore = selected.condstore = True
        numbers = [message.uid if command.uid else seq for seq, message in matches]
        options = command.return_options
        if options is not None and "SAVE" in options:
            self.saved = _saved_uids(options, [message.uid for _, message in matches])
        if options is None and not session.rev2:
            line = "SEARCH" + "".join(f" {number}" for number in numbers)
            if uses_modseq and matches:
                line += f" (MODSEQ {max(message.modseq for _, message in matches)})"
            session.untagged(line)
        elif options != ("SAVE",):
            chosen = set(options or ()) - {"SAVE"} or {"ALL"}
            parts = [f'(TAG "{command.tag}")']
            if command.uid:
                parts.append("UID")
            if numbers:
                if "MIN" in chosen:
                    parts.append(f"MIN {numbers[0]}")
                if "MAX" in chosen:
                    parts.append(f"MAX {numbers[-1]}")
                if "ALL" in chosen:
                    parts.append(f"ALL {sequence_set_text(numbers)}")
            if "COUNT" in chosen:
                parts.append(f"COUNT {len(numbers)}")
            if uses_modseq and matches:
                parts.append(f"MODSEQ {max(message.modseq for _, message in matches)}")
            session.untagged("ESEARCH " + " ".join(parts))
        await self._finish(command, "SEARCH completed", uid=command.uid)

    # --- COPY / MOVE --------------------------------------------------------------------------------------------
    async def copy(self, command: c.Copy) -> None:
        await self._transfer(command, move=False)

    async def move(self, command: c.Move) -> None:
        await self._transfer(command, move=True)

    async def _transfer(self, command: c.Copy | c.Move, *, move: bool) -> None:
        session = self.session
        selected = self._selected()
        index = session._index()
        if move and selected.readonly:
            session.tagged(command.tag, "NO", "Mailbox is read-only", "READ-ONLY")
            return
        targets = self._targets(command, command.set)
        if targets is None:
            return
        if not await session.hub.run(index.exists, command.mailbox):
            session.tagged(command.tag, "NO", "No such mailbox", "TRYCREATE")
            return
        uids = [message.uid for _, message in targets]
        verb = "MOVE" if move else "COPY"
        if not uids:
            await self._finish(command, f"{verb} completed (no messages)")
            return
        operation = index.move if move else index.copy
        uidvalidity, pairs = await session.hub.run(operation, selected.name, uids, command.mailbox)
        session.changed(command.mailbox)
        code = None
        if pairs:
            # Source UIDs ascend and the new UIDs are given in the same order, so both compress alike.
            sources = sequence_set_text([source for source, _ in pairs])
            code = f"COPYUID {uidvalidity} {sources} {sequence_set_text([new for _, new in pairs])}"
        if move:
            session.changed(selected.name)
            if code is not None:
                session.untagged(f"OK [{code}] Moved")  # RFC 6851 §4.3: before the EXPUNGEs
            for line in selected.expunged_by_us([a for a, _ in pairs]):
                session.io.write(line)
            await self._finish(command, "MOVE completed")
            return
        await self._finish(command, "COPY completed", code)

    # --- EXPUNGE, CLOSE, UNSELECT -----------------------------------------------------------------------------------
    async def expunge(self, command: c.Expunge) -> None:
        session = self.session
        selected = self._selected()
        if selected.readonly:
            session.tagged(command.tag, "NO", "Mailbox is read-only", "READ-ONLY")
            return
        uids = None
        if command.uids is not None:
            uids = [message.uid for _, message in selected.resolve(command.uids, uid=True)]
        expunged = await session.hub.run(session._index().expunge, selected.name, uids)
        if expunged:
            session.changed(selected.name)
        for line in selected.expunged_by_us(expunged):
            session.io.write(line)
        await self._finish(command, "EXPUNGE completed")

    async def close(self, command: c.Close) -> None:
        session = self.session
        selected = self._selected()
        if not selected.readonly:
            expunged = await session.hub.run(session._index().expunge, selected.name, None)
            if expunged:
                session.changed(selected.name)
        session.deselect()
        session.tagged(command.tag, "OK", "CLOSE completed")

    async def unselect(self, command: c.Unselect) -> None:
        self.session.deselect()
        self.session.tagged(command.tag, "OK", "UNSELECT completed")

    # --- IDLE ---------------------------------------------------------------------------------------------------
    async def idle(self, command: c.Idle) -> None:
        """RFC 2177: report changes as they happen until the client sends DONE."""
        session = self.session
        session.io.write(b"+ idling\r\n")
        await session.sync()
        while not session.finished:  # a sync that found the mailbox gone sent BYE: no DONE to wait for
            await session.io.drain()
            line = await session.io.idle_wait()
            if line is None:
                if session.io.closed:
                    return
                await session.sync()
                continue
            if line.strip().upper() == b"DONE":
                session.tagged(command.tag, "OK", "IDLE terminated")
                return
            session.tagged(command.tag, "BAD", "Expected DONE")
            return


def _saved_uids(options: tuple[str, ...], uids: list[int]) -> list[int]:
    """RFC 5182 §2.4: SAVE with MIN and/or MAX (and neither ALL nor COUNT) saves only those messages."""
    chosen = set(options)
    if not uids or not chosen & {"MIN", "MAX"} or chosen & {"ALL", "COUNT"}:
        return uids
    kept: set[int] = set()
    if "MIN" in chosen:
        kept.add(uids[0])
    if "MAX" in chosen:
        kept.add(uids[-1])
    return sorted(kept)


def _uses_modseq(key: c.SearchKey) -> bool:
    if isinstance(key, c.SearchModSeq):
        return True
    if isinstance(key, c.SearchNot):
        return _uses_modseq(key.key)
    if isinstance(key, c.SearchOr):
        return _uses_modseq(key.left) or _uses_modseq(key.right)
    if isinstance(key, c.SearchAnd):
        return any(_uses_modseq(inner) for inner in key.keys)
    return False
