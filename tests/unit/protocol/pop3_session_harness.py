"""A scripted adapter around `POP3ServerConnection` for the unit tests: feeds bytes, answers decision events
from a fixed maildrop and records the events and the removed UIDLs."""

from __future__ import annotations

import base64
import dataclasses

from postkontor.protocol.pop3 import (
    Closed,
    Event,
    LoginRequest,
    POP3ServerConnection,
    POP3Settings,
    RetrieveRequest,
    StartTLSRequested,
    UpdateRequest,
)

PASSWORD = "secret"
SETTINGS = POP3Settings(hostname="pop.test", tls_available=True)
CLEAR = dataclasses.replace(SETTINGS, require_tls_for_auth=False)
TLS = dataclasses.replace(SETTINGS, tls_active=True)

MESSAGES: dict[str, bytes] = {
    "uid-1": b"Subject: one\r\nFrom: a@b.c\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
    "uid-2": b"Subject: two\r\n\r\n.\r\n..x\r\n.last line without CRLF",
    "uid-3": b"Subject: three\r\n\r\nbody\r\n",
}
MAILDROP = [(uidl, len(data)) for uidl, data in MESSAGES.items()]


def plain(user: str, password: str = PASSWORD, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


class Session:
    def __init__(self, settings: POP3Settings = CLEAR, *, auto_tls: bool = True, update_ok: bool = True) -> None:
        self.conn = POP3ServerConnection(settings)
        self.auto_tls = auto_tls
        self.update_ok = update_ok
        self.events: list[Event] = []
        self.removed: list[str] | None = None
        self.conn.start()
        self.greeting = self.conn.data_to_send()

    def answer(self, event: Event) -> None:
        conn = self.conn
        if isinstance(event, LoginRequest):
            if event.user == "busy":
                conn.reject_login("IN-USE", "maildrop already locked")
            elif event.user == "broken":
                conn.reject_login("SYS/TEMP", "store\r\nunavailable")
            elif event.password == PASSWORD and event.user in ("alice", "jörg"):
                conn.accept_login(MAILDROP)
            else:
                conn.reject_login("AUTH", "invalid credentials")
        elif isinstance(event, RetrieveRequest):
            conn.send_message(MESSAGES[event.uidl])
        elif isinstance(event, UpdateRequest):
            self.removed = event.deleted_uidls
            conn.finish_update(self.update_ok)
        elif isinstance(event, StartTLSRequested) and self.auto_tls:
            conn.tls_started()

    def feed(self, data: bytes) -> bytes:
        """Feed `data`, answer every event, return all output."""
        self.conn.receive_data(data)
        return self.pump()

    def pump(self) -> bytes:
        out = bytearray()
        while True:
            event = self.conn.next_event()
            out += self.conn.data_to_send()
            if event is None:
                return bytes(out)
            self.events.append(event)
            self.answer(event)
            out += self.conn.data_to_send()
            if isinstance(event, Closed):
                return bytes(out)

    def send(self, *lines: str) -> str:
        """Send command lines (CRLF added) in one pipelined write; the reply text, CRLF ends kept."""
        return self.feed("".join(f"{line}\r\n" for line in lines).encode()).decode()

    @property
    def closed(self) -> bool:
        return any(isinstance(e, Closed) for e in self.events)


def logged_in(settings: POP3Settings = CLEAR) -> Session:
    session = Session(settings)
    assert session.send("USER alice", f"PASS {PASSWORD}").endswith("+OK maildrop has 3 messages (124 octets)\r\n")
    return session
