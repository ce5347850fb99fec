"""A scripted harness around `IMAPSession` for the engine tests: bytes in, response lines out.

Commands go through the real `CommandFramer` and `parse_command` (as `server.imap.connection` does them) into
`IMAPSession.execute`; the session talks to a real `MailboxHub` over a `MaildirStore` in a temporary directory and
logs in against a real `SQLiteAccountStore` (cheap argon2 parameters). `FakeIO` records what the session writes and
answers `read_line` / `idle_wait` from a script.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from postkontor.auth.passwords import PasswordHasher
from postkontor.policy.throttle import FailureThrottle
from postkontor.protocol.imap.framing import CommandFramer, FramingError, NeedContinuation, RawCommand
from postkontor.protocol.imap.parser import IMAPParseError, parse_command
from postkontor.server.imap.session import IMAPSession
from postkontor.server.mailboxes import MailboxHub, mailbox_of
from postkontor.server.session import Services
from postkontor.store.maildir import MaildirStore
from postkontor.store.mailindex import MailIndex
from postkontor.store.sqlite_accounts import SQLiteAccountStore

HOST = "mx.example.test"
ALICE = "alice@example.test"
ALICE_PW = "alice-pw"
BOB = "bob@example.test"  # has a quota
BOB_PW = "bob-pw"
BOB_QUOTA = 10 * 1024 * 1024
HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

WAKE = object()  # in an IDLE script: `idle_wait` returns None (a mailbox change woke the session)


def message(subject: str = "Hello", body: str = "Hello world.\r\n", **headers: str) -> bytes:
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return (
        f"From: Someone <someone@remote.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@remote.test>\r\n{extra}\r\n{body}"
    ).encode()


class FakeIO:
    """`SessionIO` for tests: `out` collects writes; `script` feeds `read_line` and `idle_wait` (bytes = a client
    line, WAKE = a wake-up, a callable = run it then wake up). An exhausted script means the client is gone."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.script: list[object] = []
        self.wakes = 0
        self.gone = False

    def write(self, data: bytes) -> None:
        self.out += data

    async def drain(self) -> None:
        return None

    async def read_line(self) -> bytes | None:
        if not self.script:
            self.gone = True
            return None
        item = self.script.pop(0)
        assert isinstance(item, bytes), item
        return item

    async def idle_wait(self) -> bytes | None:
        if not self.script:
            self.gone = True
            return None
        item = self.script.pop(0)
        if isinstance(item, bytes):
            return item
        if callable(item):
            result = item()
            if asyncio.iscoroutine(result):
                await result
        return None

    def wake(self) -> None:
        self.wakes += 1

    @property
    def closed(self) -> bool:
        return self.gone


@dataclass
class Reply:
    raw: bytes
    tag: str

    @property
    def lines(self) -> list[str]:
        return [line.decode("utf-8", "replace") for line in self.raw.split(b"\r\n")[:-1]]

    @property
    def untagged(self) -> list[str]:
        return [line for line in self.lines if line.startswith("* ")]

    @property
    def tagged(self) -> str:
        return self.lines[-1]

    @property
    def ok(self) -> bool:
        return self.tagged.startswith(f"{self.tag} OK")

    @property
    def status(self) -> str:
        return self.tagged.split(" ", 2)[1]


@dataclass
class Client:
    """One IMAP session driven like a client: `await client("SELECT INBOX")` returns the `Reply`."""

    session: IMAPSession
    io: FakeIO
    framer: CommandFramer = field(default_factory=lambda: CommandFramer(max_line=64 * 1024, max_literal=1 << 20))
    counter: int = 0

    async def __call__(self, text: str | bytes, *, tag: str | None = None) -> Reply:
        if tag is None:
            self.counter += 1
            tag = f"a{self.counter}"
        data = text.encode("utf-8") if isinstance(text, str) else text
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        return await self.send(tag.encode() + b" " + data, tag)

    async def send(self, data: bytes, tag: str) -> Reply:
        """Feed raw bytes (one command, literals included) and run what the framer makes of them."""
        start = len(self.io.out)
        self.framer.feed(data)
        while True:
            event = self.framer.next_event()
            if event is None:
                break
            if isinstance(event, NeedContinuation):
                self.io.write(b"+ Ready for literal data\r\n")
            elif isinstance(event, FramingError):
                self.io.write(f"{event.tag or '*'} {event.status} {event.text}\r\n".encode())
            elif isinstance(event, RawCommand):
                try:
                    command = parse_command(event, utf8=self.session.utf8)
                except IMAPParseError as exc:
                    self.io.write(f"{exc.tag or '*'} BAD {exc.text}\r\n".encode())
                    continue
                await self.session.execute(command)
        return Reply(bytes(self.io.out[start:]), tag)

    async def login(self, user: str = ALICE, password: str = ALICE_PW) -> Reply:
        reply = await self(f'LOGIN "{user}" "{password}"')
        assert reply.ok, reply.lines
        return reply


class World:
    """Accounts, the maildir store and one hub, as one server process would have them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.accounts = SQLiteAccountStore(root / "accounts.sqlite3", hasher=HASHER)
        self.accounts.add_domain("example.test")
        self.accounts.add_user(ALICE, ALICE_PW)
        self.accounts.add_user(BOB, BOB_PW, quota=BOB_QUOTA)
        self.maildir = MaildirStore(root / "mail", HOST)
        self.hub = MailboxHub(self.maildir, HOST, threads=2)
        self.services = Services(
            config=cast(Any, None),
            accounts=self.accounts,
            maildir=self.maildir,
            spool=cast(Any, None),
            hasher=HASHER,
            password_slots=asyncio.Semaphore(4),
            ip_throttle=FailureThrottle(limit=1000, window=60),
            account_throttle=FailureThrottle(limit=1000, window=60),
            postmaster_domain="example.test",
        )
        self.sessions: list[IMAPSession] = []
        self._indexes: list[MailIndex] = []

    def client(self, *, tls_active: bool = True, tls_available: bool = True) -> Client:
        io = FakeIO()
        session = IMAPSession(
            self.services, self.hub, io, "192.0.2.7", tls_active=tls_active, tls_available=tls_available
        )
        self.sessions.append(session)
        return Client(session, io)

    async def logged_in(self, user: str = ALICE, password: str = ALICE_PW, *, rev2: bool = False) -> Client:
        client = self.client()
        await client.login(user, password)
        if rev2:
            assert (await client("ENABLE IMAP4rev2")).ok
        return client

    def other_index(self, user: str = ALICE) -> MailIndex:
        """A second MailIndex on the same maildir: what another worker process would use."""
        index = MailIndex(self.maildir.path_for(mailbox_of(user)), hostname=HOST)
        self._indexes.append(index)
        return index

    def deliver(self, data: bytes, user: str = ALICE) -> Path:
        """Drop a message into INBOX's new/ as SMTP delivery does (the index adopts it at its next refresh)."""
        new = self.maildir.path_for(mailbox_of(user)) / "new"
        new.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.P{os.getpid()}.{HOST},S={len(data)}"
        tmp = new.parent / "tmp" / name
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_bytes(data)
        os.rename(tmp, new / name)
        # Make sure the directory mtime moves even within one clock tick of an earlier listing.
        future = time.time() + 5
        os.utime(new, (future, future))
        return new / name

    async def close(self) -> None:
        for session in self.sessions:
            session.close()
        for index in self._indexes:
            index.close()
        await self.hub.close()
        self.accounts.close()


def plain(user: str = ALICE, password: str = ALICE_PW, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
