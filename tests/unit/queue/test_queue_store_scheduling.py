"""The queue store's scheduling side: due groups per (message, domain), outcomes, reports, flush, bounce, removal."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from postkontor.delivery.outcome import RecipientOutcome, Status
from postkontor.queue.store import QueueStore, recipient_domain

DATA = b"From: a@example.test\r\nSubject: out\r\n\r\nbody\r\n"


def ok(rcpt: str) -> RecipientOutcome:
    return RecipientOutcome(rcpt, Status.DELIVERED, 250, "2.0.0", "Ok: queued as X", "mx.remote.test")


def later(rcpt: str) -> RecipientOutcome:
    return RecipientOutcome(rcpt, Status.DEFERRED, 421, "4.4.2", "try again", "mx.remote.test")


def no(rcpt: str) -> RecipientOutcome:
    return RecipientOutcome(rcpt, Status.FAILED, 550, "5.1.1", "no such user", "mx.remote.test")


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[QueueStore]:
    with QueueStore(tmp_path / "queue") as store:
        yield store


def states(queue: QueueStore, message_id: str) -> dict[str, tuple[str, int]]:
    entry = queue.get(message_id)
    assert entry is not None
    return {r.recipient: (r.status, r.attempts) for r in entry.recipients}


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("user@Example.TEST", "example.test"),
        ("user@example.test.", "example.test"),
        ("user@bücher.example", "xn--bcher-kva.example"),
        ("user@[192.0.2.1]", "[192.0.2.1]"),
        ("user@[IPv6:2001:DB8::1]", "[ipv6:2001:db8::1]"),
        ('"a@b"@example.test', "example.test"),
    ],
)
def test_recipient_domain_is_the_routing_key(address: str, domain: str) -> None:
    assert recipient_domain(address) == domain


def test_enqueue_keeps_smtputf8_and_8bitmime(queue: QueueStore) -> None:
    queue.enqueue("M1", "a@example.test", ["x@remote.test"], DATA, now=1.0, smtputf8=True, body_8bit=True)
    queue.enqueue("M2", "a@example.test", ["x@remote.test"], DATA, now=1.0)
    first, second = queue.list_entries()
    assert (first.smtputf8, first.body_8bit, first.warned) == (True, True, False)
    assert (second.smtputf8, second.body_8bit) == (False, False)
    [group] = queue.due(1.0, 10, exclude_messages=["M2"])
    assert (group.smtputf8, group.body_8bit) == (True, True)


def test_due_groups_by_message_and_domain(queue: QueueStore) -> None:
    queue.enqueue(
        "M1", "a@example.test", ["x@one.test", "y@ONE.test", "z@two.test"], DATA, now=100.0,
        envid="E1", ret="FULL", dsn={"x@one.test": ("rfc822;X@one.test", "SUCCESS")},
    )
    queue.enqueue("M2", "", ["w@one.test"], DATA, now=50.0)
    assert queue.due(49.0, 10) == []
    groups = queue.due(100.0, 10)
    assert [(g.message_id, g.domain, [r.recipient for r in g.recipients]) for g in groups] == [
        ("M2", "one.test", ["w@one.test"]),  # the longest waiting first
        ("M1", "one.test", ["x@one.test", "y@ONE.test"]),
        ("M1", "two.test", ["z@two.test"]),
    ]
    group = groups[1]
    assert (group.sender, group.created, group.envid, group.ret) == ("a@example.test", 100.0, "E1", "FULL")
    assert group.recipients[0].orcpt == "rfc822;X@one.test" and group.recipients[0].notify == "SUCCESS"
    assert groups[0].sender == ""
    assert len(queue.due(100.0, 2)) == 2
    assert [g.message_id for g in queue.due(100.0, 10, exclude_messages=["M1"])] == ["M2"]
    assert [g.domain for g in queue.due(100.0, 10, exclude_domains=["one.test"])] == ["two.test"]


def test_record_outcomes(queue: QueueStore) -> None:
    queue.enqueue("M1", "a@example.test", ["a@r.test", "b@r.test", "c@r.test"], DATA, now=100.0)
    queue.record("M1", [ok("a@r.test"), no("b@r.test"), later("c@r.test")], now=110.0, next_attempt=410.0)
    entry = queue.get("M1")
    assert entry is not None
    a, b, c = entry.recipients
    assert (a.status, a.attempts, a.reported, a.dsn_status) == ("delivered", 1, False, "2.0.0")
    assert (b.status, b.attempts, b.remote_mta) == ("failed", 1, "mx.remote.test")
    assert b.last_error == "550 5.1.1 no such user"
    assert (c.status, c.attempts, c.next_attempt, c.last_attempt) == ("queued", 1, 410.0, 110.0)
    assert c.last_error == "421 4.4.2 try again"
    assert queue.due(409.0, 10) == []
    assert queue.next_due() == 410.0
    [group] = queue.due(410.0, 10)
    assert [r.recipient for r in group.recipients] == ["c@r.test"]
    # A second outcome for a recipient that is no longer queued changes nothing.
    queue.record("M1", [later("a@r.test")], now=120.0, next_attempt=999.0)
    assert states(queue, "M1")["a@r.test"] == ("delivered", 1)


def test_record_after_the_lifetime_fails_with_4_4_7(queue: QueueStore) -> None:
    queue.enqueue("M1", "a@example.test", ["c@r.test"], DATA, now=100.0)
    queue.record("M1", [later("c@r.test")], now=500.0, next_attempt=None)
    entry = queue.get("M1")
    assert entry is not None
    [c] = entry.recipients
    assert (c.status, c.dsn_status, c.last_error) == ("failed", "4.4.7", "421 4.4.2 try again")
    assert queue.next_due() is None


def test_reports_and_removal_once_finished(queue: QueueStore) -> None:
    queue.enqueue("M1", "a@example.test", ["a@r.test", "b@r.test", "c@r.test"], DATA, now=100.0)
    queue.record("M1", [ok("a@r.test"), no("b@r.test"), later("c@r.test")], now=110.0, next_attempt=410.0)
    assert queue.unreported(10) == ["M1"]
    assert queue.unreported(10, exclude=["M1"]) == []
    queue.mark_bounced("M1", ["b@r.test"])
    queue.mark_reported("M1", ["a@r.test"])
    assert queue.unreported(10) == []
    assert states(queue, "M1") == {"a@r.test": ("delivered", 1), "b@r.test": ("bounced", 1), "c@r.test": ("queued", 1)}
    assert queue.remove_finished("M1") == [], "c is still queued"
    queue.mark_warned("M1")
    entry = queue.get("M1")
    assert entry is not None and entry.warned
    queue.record("M1", [no("c@r.test")], now=420.0, next_attempt=720.0)
    assert queue.remove_finished() == [], "c waits for its report"
    queue.mark_bounced("M1", ["c@r.test"])
    path = queue.message_path("M1")
    assert queue.remove_finished() == ["M1"]
    assert queue.get("M1") is None and not path.exists()


def test_flush_makes_queued_recipients_due_now(queue: QueueStore) -> None:
    queue.enqueue("M1", "a@example.test", ["a@r.test", "b@r.test"], DATA, now=100.0)
    queue.enqueue("M2", "a@example.test", ["c@r.test"], DATA, now=100.0)
    queue.record("M1", [later("a@r.test"), ok("b@r.test")], now=110.0, next_attempt=5000.0)
    queue.record("M2", [later("c@r.test")], now=110.0, next_attempt=5000.0)
    assert queue.due(200.0, 10) == []
    assert queue.flush("M1") == 1
    assert [g.message_id for g in queue.due(200.0, 10)] == ["M1"]
    assert queue.flush(None) == 2
    assert queue.next_due() == 0.0
    assert queue.flush("NOSUCH") == 0


def test_request_bounce_fails_queued_recipients_for_the_runner(queue: QueueStore) -> None:
    queue.enqueue("M1", "a@example.test", ["a@r.test", "b@r.test"], DATA, now=100.0)
    queue.record("M1", [ok("a@r.test"), later("b@r.test")], now=110.0, next_attempt=5000.0)
    queue.mark_reported("M1", ["a@r.test"])
    assert queue.request_bounce("M1") == 1
    entry = queue.get("M1")
    assert entry is not None
    b = entry.recipients[1]
    assert (b.status, b.dsn_status, b.last_error, b.remote_mta) == (
        "failed", "5.0.0", "bounced by the administrator", None
    )
    assert queue.unreported(10) == ["M1"]
    assert queue.request_bounce("M1") == 0
    assert queue.next_due() is None


def test_cli_and_server_share_the_files(tmp_path: Path) -> None:
    """Two stores on one directory, as `postkontor queue` next to the running server: no "database is locked"."""
    server, cli = QueueStore(tmp_path), QueueStore(tmp_path)
    errors: list[BaseException] = []

    def hammer(store: QueueStore, prefix: str) -> None:
        try:
            for n in range(60):
                mid = f"{prefix}{n}"
                store.enqueue(mid, "a@example.test", ["x@r.test"], DATA, now=float(n))
                store.record(mid, [later("x@r.test")], now=float(n), next_attempt=1e9)
                store.flush(None)
                store.due(1e9, 5)
                store.list_entries()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(store, prefix)) for store, prefix in ((server, "S"), (cli, "C"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len(server.list_entries()) == 120
        assert cli.request_bounce("S7") == 1
        assert server.unreported(10) == ["S7"]
    finally:
        server.close()
        cli.close()


def test_a_queue_of_the_first_layout_is_upgraded(tmp_path: Path) -> None:
    """Mail queued by an earlier postkontor (schema 1 before the scheduling columns) stays queued."""
    conn = sqlite3.connect(tmp_path / "queue.sqlite3")
    conn.executescript(
        """
        CREATE TABLE messages (id TEXT PRIMARY KEY, sender TEXT NOT NULL, size INTEGER NOT NULL,
            created REAL NOT NULL, envid TEXT, ret TEXT);
        CREATE TABLE recipients (
            message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE, recipient TEXT NOT NULL,
            orcpt TEXT, notify TEXT,
            status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'bounced')),
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, last_error TEXT,
            PRIMARY KEY (message_id, recipient));
        CREATE INDEX recipients_due ON recipients(status, next_attempt);
        INSERT INTO messages VALUES ('OLD1', 'a@example.test', 10, 5.0, NULL, NULL);
        INSERT INTO recipients (message_id, recipient, next_attempt) VALUES ('OLD1', 'x@Remote.test', 5.0);
        INSERT INTO recipients (message_id, recipient, status, next_attempt)
            VALUES ('OLD1', 'y@r.test', 'delivered', 5.0);
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "OLD1.eml").write_bytes(DATA)
    with QueueStore(tmp_path) as queue:
        [group] = queue.due(10.0, 10)
        assert (group.message_id, group.domain, [r.recipient for r in group.recipients]) == (
            "OLD1", "remote.test", ["x@Remote.test"]
        )
        queue.record("OLD1", [no("x@Remote.test")], now=11.0, next_attempt=None)
        assert queue.unreported(10) == ["OLD1"]
    with QueueStore(tmp_path) as reopened:  # the upgrade happens once
        assert states(reopened, "OLD1") == {"x@Remote.test": ("failed", 1), "y@r.test": ("delivered", 0)}
