"""`postkontor queue ...` as a subprocess against a queue made with QueueStore: list, show, flush, remove, bounce,
and one clean error line (exit 2, no traceback) for every mistake an administrator can make."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from cli_run import fails, run

from postkontor.delivery.outcome import RecipientOutcome, Status
from postkontor.queue.store import QueueStore

DATA = b"From: Alice <alice@example.com>\r\nTo: bob@remote.test\r\nSubject: budget 2024\r\n\r\nsecret body\r\n"


def ok(data: Path, *args: str) -> str:
    result = run(data, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("queue-cli") / "srv"
    ok(directory, "init", "--domain", "example.com", "--hostname", "mail.example.com")
    return directory


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "srv"
    shutil.copytree(template, directory)
    return directory


def fill(data: Path) -> None:
    """Three messages: one deferred twice, one for two recipients (one delivered), one with the null sender."""
    now = time.time()
    with QueueStore(data / "queue") as queue:
        queue.enqueue("MSGA1", "alice@example.com", ["bob@remote.test"], DATA, now=now - 7200, envid="E-1",
                      ret="HDRS", dsn={"bob@remote.test": ("rfc822;bob@remote.test", "FAILURE,DELAY")})
        deferral = RecipientOutcome("bob@remote.test", Status.DEFERRED, 421, "4.4.2", "mx.remote.test busy",
                                    "mx.remote.test")
        queue.record("MSGA1", [deferral], now=now - 3600, next_attempt=now - 1800)
        queue.record("MSGA1", [deferral], now=now - 60, next_attempt=now + 540)
        queue.enqueue("MSGB2", "carol@example.com", ["dave@far.test", "erin@far.test"],
                      b"Subject: \x1b[2Jclear screen\r\n\r\nx\r\n", now=now - 30, smtputf8=True)
        queue.record("MSGB2", [RecipientOutcome("dave@far.test", Status.DELIVERED, 250, "2.0.0", "ok", "mx.far.test")],
                     now=now - 20, next_attempt=None)
        queue.enqueue("MSGC3", "", ["frank@remote.test"], b"Subject: bounce\r\n\r\n", now=now - 5)


def test_list_empty(data: Path) -> None:
    assert ok(data, "queue", "list") == "queue is empty\n"


def test_list_one_aligned_line_per_message(data: Path) -> None:
    fill(data)
    lines = ok(data, "queue", "list").splitlines()
    assert len(lines) == 4
    heading, first, second, third = lines
    assert heading.split() == ["ID", "AGE", "SENDER", "RECIPIENTS", "NEXT", "TRY", "LAST", "ERROR"]
    for column in ("AGE", "SENDER", "RECIPIENTS", "NEXT TRY", "LAST ERROR"):
        start = heading.index(column)
        filled = [row for row in (first, second, third) if len(row) > start]  # an empty last column is stripped
        assert filled and all(row[start - 2 : start] == "  " and row[start] != " " for row in filled), column
    assert first.startswith("MSGA1 ") and " 2h00m " in first and "<alice@example.com>" in first
    assert "bob@remote.test (queued, 2 attempts)" in first
    assert " in 8m " in first or " in 9m " in first
    assert first.endswith("421 4.4.2 mx.remote.test busy")
    assert "dave@far.test (delivered, 1 attempt), erin@far.test (queued, 0 attempts)" in second
    assert " now " in second
    assert third.startswith("MSGC3 ") and " <> " in third


def test_show_envelope_recipients_and_headers(data: Path) -> None:
    fill(data)
    shown = ok(data, "queue", "show", "MSGA1")
    assert "message     MSGA1" in shown
    assert "sender      <alice@example.com>" in shown
    assert "options     ENVID=E-1 RET=HDRS" in shown
    assert "  bob@remote.test\n    status      queued, 2 attempts" in shown
    assert "last error  421 4.4.2 mx.remote.test busy (from mx.remote.test)" in shown
    assert "dsn         ORCPT=rfc822;bob@remote.test NOTIFY=FAILURE,DELAY" in shown
    assert shown.index("headers") > shown.index("bob@remote.test")
    assert "  Subject: budget 2024" in shown
    assert "secret body" not in shown, "headers only"
    other = ok(data, "queue", "show", "MSGB2")
    assert "SMTPUTF8" in other and "status      delivered, 1 attempt" in other
    assert "\x1b" not in other and "\\x1b[2Jclear screen" in other, "no terminal escapes from a message"


def test_flush_one_and_all(data: Path) -> None:
    fill(data)
    assert ok(data, "queue", "flush", "MSGA1") == "1 queued recipient of MSGA1 will be retried now\n"
    with QueueStore(data / "queue") as queue:
        entry = queue.get("MSGA1")
        assert entry is not None and entry.recipients[0].next_attempt == 0
        assert "MSGA1" in [g.message_id for g in queue.due(time.time() - 100, 10)], "due before its time"
    assert ok(data, "queue", "flush") == "3 queued recipients will be retried now\n"
    with QueueStore(data / "queue") as queue:
        assert queue.next_due() == 0


def test_remove(data: Path) -> None:
    fill(data)
    path = data / "queue" / "messages" / "MSGA1.eml"
    assert path.exists()
    assert ok(data, "queue", "remove", "MSGA1") == "removed MSGA1 (no notification is sent)\n"
    assert not path.exists()
    with QueueStore(data / "queue") as queue:
        assert queue.get("MSGA1") is None
    assert "MSGA1" not in ok(data, "queue", "list")
    fails(data, "queue", "remove", "MSGA1")


def test_bounce_leaves_the_report_to_the_server(data: Path) -> None:
    fill(data)
    assert ok(data, "queue", "bounce", "MSGB2") == (
        "bounced 1 recipient of MSGB2; the server notifies the sender\n"
    )
    with QueueStore(data / "queue") as queue:
        entry = queue.get("MSGB2")
        assert entry is not None
        erin = entry.recipients[1]
        assert (erin.status, erin.dsn_status, erin.last_error) == ("failed", "5.0.0", "bounced by the administrator")
        assert queue.unreported(10) == ["MSGB2"]
    assert ok(data, "queue", "bounce", "MSGB2") == "MSGB2 has no queued recipients left to bounce\n"
    assert "no notification (null sender)" in ok(data, "queue", "bounce", "MSGC3")


def test_works_while_another_process_holds_the_queue_open(data: Path) -> None:
    fill(data)
    with QueueStore(data / "queue") as server:
        server.list_entries()
        assert "MSGA1" in ok(data, "queue", "list")
        ok(data, "queue", "flush")
        assert server.next_due() == 0


@pytest.mark.parametrize("action", ["show", "flush", "remove", "bounce"])
@pytest.mark.parametrize("message_id", ["NOPE", "../etc", "a b", "x" * 200])
def test_unknown_ids_are_user_errors(data: Path, action: str, message_id: str) -> None:
    assert fails(data, "queue", action, message_id) == f"postkontor: error: no queued message {message_id}"


def test_usage_errors(data: Path, tmp_path: Path) -> None:
    result = run(data, "queue")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = run(data, "queue", "show")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not exist" in fails(tmp_path / "nowhere", "queue", "list")
    assert not (tmp_path / "nowhere").exists(), "nothing is created for a mistyped directory"
    assert "no data directory" in fails(None, "queue", "list")
