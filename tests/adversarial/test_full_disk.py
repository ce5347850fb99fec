"""A full disk: when the spool journal cannot be written the server must answer 452 4.3.1 ("insufficient system
storage", RFC 3463 §3.4; RFC 5321 §4.2.3 452) and never 250, and accept mail again once space is freed.

The data directory's spool is a 2 MiB tmpfs (mounted by the test: root only, as in CI), filled to the last block
with a filler file. The mailboxes stay on the normal filesystem: what is under test is the journal, whose fsync is
the promise behind every 250 (RFC 5321 §6.1).
"""

from __future__ import annotations

import os
import smtplib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_dns import dns_server

from adversarial.faults import (
    DOMAIN,
    ZONE,
    CaptureSink,
    ServerProcess,
    audit_maildir,
    cli,
    fill,
    free_port,
    make_message,
    tmpfs,
)

USER = f"alice@{DOMAIN}"


@pytest.fixture
def full_disk_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A running server (2 workers) whose spool lives on a 2 MiB tmpfs; unmounted and stopped afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk test mounts a tmpfs: run it as root (CI does)")
    with dns_server(ZONE) as dns, CaptureSink() as sink:
        server = ServerProcess(data=tmp_path / "pk", mx_port=free_port())
        server.configure(dns, sink_port=sink.port, workers=2)
        cli(server.data, "user", "add", USER, stdin="pw\n")
        try:
            mounted = tmpfs(server.data / "spool", "2m")
            mounted.__enter__()
        except RuntimeError as exc:
            pytest.skip(f"cannot mount a tmpfs for the spool (needs root and mount(2)): {exc}")
        try:
            server.start()
            try:
                yield server
            finally:
                try:
                    server.terminate()
                finally:
                    server.kill_group()
        finally:
            mounted.__exit__(None, None, None)


def _send(server: ServerProcess, marker: str, filler_lines: int = 5) -> tuple[int, str]:
    """One message on a fresh connection (so both workers get some): the reply to the final dot."""
    with smtplib.SMTP("127.0.0.1", server.mx_port, timeout=20) as smtp:
        try:
            smtp.sendmail("sender@client.test", [USER], make_message(marker, filler_lines))
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode(errors="replace")
    return 250, ""


def _delivered(server: ServerProcess, markers: list[str], timeout: float = 10.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = set(audit_maildir(server.data / "mail" / DOMAIN / "alice").counts) & set(markers)
        if found == set(markers) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_rfc3463_4_3_1_full_spool_gets_452_never_250_and_recovers(full_disk_server: ServerProcess) -> None:
    server = full_disk_server
    spool = server.data / "spool"
    run = uuid.uuid4().hex[:8]

    filler = fill(spool)
    refused = [f"pkcs-full-{run}-{n}" for n in range(8)]
    replies = [_send(server, marker) for marker in refused]
    assert all(code == 452 and text.startswith("4.3.1") for code, text in replies), replies
    time.sleep(0.5)
    audit = audit_maildir(server.data / "mail" / DOMAIN / "alice")
    assert not set(audit.counts) & set(refused), "a message refused with 452 was delivered anyway"

    filler.unlink()
    accepted = [f"pkcs-free-{run}-{n}" for n in range(6)]
    assert [_send(server, marker)[0] for marker in accepted] == [250] * len(accepted), "not accepted after freeing"
    assert _delivered(server, accepted) == set(accepted)

    # Full again, with the journal segments now partly used: a small message may still fit into a segment's last
    # page (then it is stored and must be delivered), a large one cannot. Either 250 and delivered, or 452 4.3.1.
    filler = fill(spool)
    mixed = [(f"pkcs-mixed-{run}-{n}", 5 if n % 2 else 3000) for n in range(8)]
    outcomes = {marker: _send(server, marker, lines) for marker, lines in mixed}
    stored = [marker for marker, (code, _) in outcomes.items() if code == 250]
    bad = {m: o for m, o in outcomes.items() if o[0] != 250 and not (o[0] == 452 and o[1].startswith("4.3.1"))}
    assert not bad, f"neither 250 nor 452 4.3.1: {bad}"
    large = [marker for marker, lines in mixed if lines == 3000]
    assert all(outcomes[marker][0] == 452 for marker in large), outcomes
    assert _delivered(server, stored) == set(stored), "a message answered 250 on a full disk was lost"
    time.sleep(0.5)
    audit = audit_maildir(server.data / "mail" / DOMAIN / "alice")
    assert not set(audit.counts) & set(large), "a message refused with 452 was delivered anyway"
    assert not audit.partial, audit.partial

    filler.unlink()
    last = f"pkcs-last-{run}"
    assert _send(server, last, 3000)[0] == 250
    assert _delivered(server, [last]) == {last}
    assert server.process is not None and server.process.poll() is None, server.log_tail()
    print(f"full disk: {len(refused)} + {len(mixed) - len(stored)} refused with 452 4.3.1, {len(stored)} fitted")
