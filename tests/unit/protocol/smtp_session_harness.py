"""A scripted adapter around `SMTPServerConnection` for the unit tests: feeds bytes, answers decision events
with a fixed policy, collects events and parses the engine's output with the client `ReplyParser`."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

from postkontor.protocol.smtp import (
    AuthRequest,
    Event,
    MailFrom,
    MessageReceived,
    RcptTo,
    Reply,
    ReplyParser,
    ServerSettings,
    SMTPServerConnection,
    StartTLSRequested,
)

SETTINGS = ServerSettings(hostname="mx.test", max_message_size=10_000)
SUBMISSION = dataclasses.replace(SETTINGS, starttls=True, auth_mechanisms=("PLAIN", "LOGIN"), auth_required=True)
PASSWORD = "secret"


def default_policy(event: Event) -> Reply | None:
    if isinstance(event, MailFrom):
        return Reply(250, "2.1.0", "Sender ok")
    if isinstance(event, RcptTo):
        if event.recipient.localpart.startswith("unknown"):
            return Reply(550, "5.1.1", "No such user")
        return Reply(250, "2.1.5", "Recipient ok")
    if isinstance(event, MessageReceived):
        return Reply(250, "2.0.0", "Ok: queued")
    if isinstance(event, AuthRequest):
        if event.password == PASSWORD:
            return Reply(235, "2.7.0", "Authentication successful")
        return Reply(535, "5.7.8", "Authentication credentials invalid")
    return None


def plain(user: str, password: str = PASSWORD, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


class Session:
    def __init__(
        self,
        settings: ServerSettings = SETTINGS,
        *,
        tls_active: bool = False,
        policy: Callable[[Event], Reply | None] = default_policy,
        auto_tls: bool = True,
    ) -> None:
        self.conn = SMTPServerConnection(settings, tls_active=tls_active)
        self.policy = policy
        self.auto_tls = auto_tls
        self.events: list[Event] = []
        self.parser = ReplyParser(max_line_length=100_000)
        self.conn.start()
        self.greeting = self._replies(self.conn.data_to_send())

    def _replies(self, wire: bytes) -> list[Reply]:
        return self.parser.feed(wire)

    def pump(self) -> None:
        tls_requested = False
        while (event := self.conn.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, StartTLSRequested):
                tls_requested = True
                continue
            reply = self.policy(event)
            if reply is not None:
                self.conn.send(reply)
        if tls_requested and self.auto_tls:
            self.conn.tls_started()

    def feed(self, data: bytes) -> list[Reply]:
        """Feed one client write and return every reply it produced."""
        self.conn.receive_data(data)
        self.pump()
        return self._replies(self.conn.data_to_send())

    def command(self, line: str | bytes) -> Reply:
        raw = line.encode() if isinstance(line, str) else line
        replies = self.feed(raw + b"\r\n")
        assert len(replies) == 1, replies
        return replies[0]

    def codes(self, data: bytes) -> list[tuple[int, str | None]]:
        return [(r.code, r.enhanced) for r in self.feed(data)]

    def ready(self, helo: str = "EHLO client.example") -> Session:
        self.command(helo)
        return self

    def transaction(self, sender: str = "<a@example.org>", *recipients: str) -> Session:
        assert self.command(f"MAIL FROM:{sender}").code == 250
        for recipient in recipients or ("<b@example.net>",):
            self.command(f"RCPT TO:{recipient}")
        return self

    def messages(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, MessageReceived)]
