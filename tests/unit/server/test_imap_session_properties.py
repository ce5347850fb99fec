"""Property: random STORE/EXPUNGE/APPEND/FETCH/SEARCH/NOOP on two sessions of one user (plus another process
writing to the same maildir) never raise, every response obeys the sequence-number rules of RFC 9051 §7.5.1 /
§7.4.1 (no EXPUNGE during non-UID FETCH/STORE/SEARCH, EXPUNGE and FETCH numbers within what the client knows,
EXISTS never shrinking the count), and after a final NOOP each client's count matches the index."""

from __future__ import annotations

import asyncio
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imap_session_harness import Client, Reply, World, message

_EXPUNGE = re.compile(r"\* (\d+) EXPUNGE")
_EXISTS = re.compile(r"\* (\d+) EXISTS")
_FETCH = re.compile(r"\* (\d+) FETCH ")
_FLAGS_ITEM = re.compile(r"FLAGS \(([^)]*)\)")
_FETCH_FLAGS = re.compile(r"\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\)\)")
_FLAG_SETS = ("(\\Deleted)", "(\\Seen \\Deleted)", "(\\Flagged)", "($Work)", "()")


@dataclass(frozen=True)
class Op:
    who: int  # 0 or 1: a session; 2: another process (its own MailIndex) or SMTP delivery
    kind: str
    low: int = 1
    span: int = 0
    mode: str = "+"
    flags: str = "(\\Deleted)"
    silent: bool = False
    uid: bool = False


_SESSION_KINDS = ("store", "store", "expunge", "append", "noop", "fetch", "search", "move")
_OTHER_KINDS = ("append", "deliver", "store", "expunge")

ops = st.one_of(
    st.builds(
        Op,
        who=st.sampled_from((0, 1)),
        kind=st.sampled_from(_SESSION_KINDS),
        low=st.integers(1, 6),
        span=st.integers(0, 3),
        mode=st.sampled_from(("+", "-", "")),
        flags=st.sampled_from(_FLAG_SETS),
        silent=st.booleans(),
        uid=st.booleans(),
    ),
    st.builds(Op, who=st.just(2), kind=st.sampled_from(_OTHER_KINDS), low=st.integers(1, 8)),
)


class ClientView:
    """What a client knows: the message count, moved only by EXISTS and EXPUNGE responses, and the flags of each
    message number as its FETCH responses last told (None: not told, or changed by a .SILENT STORE)."""

    def __init__(self, client: Client, count: int) -> None:
        self.client = client
        self.count = count
        self.flags: list[set[str] | None] = [None] * count

    def forget_flags(self) -> None:
        self.flags = [None] * self.count

    async def run(self, command: str | bytes, *, expunge_allowed: bool) -> Reply:
        reply = await self.client(command)
        assert reply.tagged.startswith(f"{reply.tag} "), reply.lines
        status = reply.status
        assert status in ("OK", "NO", "BAD"), reply.lines
        if status == "BAD":
            assert reply.tagged.endswith("Invalid message sequence number"), reply.lines
        for line in reply.lines[:-1]:
            if match := _EXPUNGE.fullmatch(line):
                assert expunge_allowed, (command, reply.lines)
                assert 1 <= int(match[1]) <= self.count, (command, reply.lines)
                self.count -= 1
                del self.flags[int(match[1]) - 1]
            elif match := _EXISTS.fullmatch(line):
                assert int(match[1]) >= self.count, (command, reply.lines)
                self.flags.extend([None] * (int(match[1]) - self.count))
                self.count = int(match[1])
            elif match := _FETCH.match(line):
                assert 1 <= int(match[1]) <= self.count, (command, reply.lines)
                if flags := _FLAGS_ITEM.search(line):
                    self.flags[int(match[1]) - 1] = set(flags[1].split()) - {"\\Recent"}
        return reply


def _set(op: Op, largest: int) -> str:
    if op.uid:
        return f"{op.low}:{op.low + op.span}"
    low = min(op.low, max(largest, 1))  # mostly valid numbers; 1 in an empty mailbox gives the BAD path
    return str(low) if op.span == 0 else f"{low}:*"


async def _scenario(root: Path, script: list[Op]) -> None:
    world = World(root)
    try:
        for number in range(3):
            world.deliver(message(f"start{number}"))
        views: list[ClientView] = []
        for _ in range(2):
            client = await world.logged_in()
            reply = await client("SELECT INBOX")
            exists = next(int(m[1]) for line in reply.lines if (m := _EXISTS.fullmatch(line)))
            views.append(ClientView(client, exists))
        other = world.other_index()
        appended = 0
        for op in script:
            appended += 1
            if op.who == 2:
                uids = [m.uid for m in other.refresh("INBOX", claim_recent=False).messages]
                if op.kind == "append":
                    other.append("INBOX", message(f"other{appended}"))
                elif op.kind == "deliver":
                    world.deliver(message(f"smtp{appended}"))
                elif op.kind == "store" and uids:
                    other.store_flags("INBOX", uids[: op.low], "+" if op.low % 2 else "-", ["\\Deleted", "$Other"])
                elif op.kind == "expunge":
                    other.expunge("INBOX")
                continue
            view = views[op.who]
            prefix = "UID " if op.uid else ""
            if op.kind == "store":
                silent = ".SILENT" if op.silent else ""
                command = f"{prefix}STORE {_set(op, view.count)} {op.mode}FLAGS{silent} {op.flags}"
                await view.run(command, expunge_allowed=op.uid)
                if op.silent:
                    view.forget_flags()  # the client knows what it asked for; the model does not compute it
            elif op.kind == "expunge":
                command = f"UID EXPUNGE {op.low}:{op.low + op.span}" if op.uid else "EXPUNGE"
                await view.run(command, expunge_allowed=True)
            elif op.kind == "append":
                data = message(f"append{appended}")
                await view.run(b"APPEND INBOX {%d+}\r\n%s\r\n" % (len(data), data), expunge_allowed=True)
            elif op.kind == "noop":
                await view.run("NOOP", expunge_allowed=True)
            elif op.kind == "fetch":
                await view.run(f"{prefix}FETCH {_set(op, view.count)} (UID FLAGS)", expunge_allowed=op.uid)
            elif op.kind == "move":
                await view.run(f"{prefix}MOVE {_set(op, view.count)} Trash", expunge_allowed=True)
            else:
                await view.run(f"{prefix}SEARCH DELETED", expunge_allowed=op.uid)
        state = other.refresh("INBOX", claim_recent=False)
        for view in views:
            await view.run("NOOP", expunge_allowed=True)
            selected = view.client.session.selected
            assert selected is not None
            assert view.count == selected.exists == len(state.messages)
            assert selected.uids == [m.uid for m in state.messages]
            assert not selected.pending_expunged
            # Every flag change the client was not told of by itself was reported (RFC 9051 §7.5.2 FETCH).
            for known, message_info in zip(view.flags, state.messages, strict=True):
                assert known is None or known == set(message_info.flags), (view.flags, state.messages)
            if state.messages:
                # The flags the client learns from a FETCH are the index's (\Recent aside).
                reply = await view.run("UID FETCH 1:* (FLAGS)", expunge_allowed=True)
                seen = [_FETCH_FLAGS.fullmatch(line) for line in reply.lines[:-1]]
                assert all(seen), reply.lines
                got = {int(m[2]): set(m[3].split()) - {"\\Recent"} for m in seen if m}
                assert got == {message.uid: set(message.flags) for message in state.messages}
    finally:
        await world.close()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(ops, max_size=25))
def test_rfc9051_s7_5_1_two_sessions_stay_consistent(script: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as root:
        asyncio.run(_scenario(Path(root), script))
