"""Pipelining abuse (RFC 2920, SECURITY-CASES 5-6, 15): talking before the greeting ([limits] greet_pause, as
Postfix postscreen's pregreet test), content pipelined ahead of the 354, and unauthenticated transactions
pipelined on submission (RFC 4954 §6: 530 for each, nothing accepted)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import pytest

from adversarial.advsupport import DEMO, AdvServer, Wire, absent, adv_server, tls_wire, wire_from

pytestmark = pytest.mark.timeout(60)
PAUSE = 0.4


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdvServer]:
    with adv_server(tmp_path_factory.mktemp("pregreet"), greet_pause=PAUSE) as (running, _sink):
        yield running


def _replies(w: Wire) -> list[int]:
    codes = []
    try:
        while True:
            codes.append(w.code())
    except (ConnectionError, TimeoutError, OSError):
        pass
    return codes


def test_early_talker_gets_554_and_close(paused: AdvServer) -> None:
    """RFC 5321 §3.1 (the client waits for the greeting): a whole spam run sent at connect time is refused."""
    marker = f"pregreet-{uuid.uuid4()}"
    with wire_from(paused.mx) as w:
        w.send(
            f"EHLO bot\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\nSubject: {marker}\r\n\r\n"
            ".\r\nQUIT\r\n".encode()
        )
        code, text = w.reply()
        assert (code, text) == (554, ["5.5.0 Protocol error: talked before the greeting"])
        assert w.closed()
    assert absent(paused, marker)


def test_early_talker_one_byte_is_enough(paused: AdvServer) -> None:
    with wire_from(paused.mx) as w:
        time.sleep(PAUSE / 4)
        w.send(b"\r\n")
        assert w.code() == 554
        assert w.closed()


def test_patient_client_is_greeted_after_the_pause(paused: AdvServer) -> None:
    started = time.monotonic()
    with wire_from(paused.mx) as w:
        assert w.code() == 220
        assert time.monotonic() - started >= PAUSE * 0.9
        assert w.command("EHLO patient.test")[0] == 250


def test_greet_pause_applies_to_the_mx_only(paused: AdvServer) -> None:
    """Submission clients are authenticated users: they are greeted at once."""
    started = time.monotonic()
    with wire_from(paused.submission) as w:
        assert w.code() == 220
    assert time.monotonic() - started < PAUSE


def test_default_no_greet_pause_greets_at_once(server: AdvServer) -> None:
    """greet_pause = 0 (the default) adds no delay; the best of three connections, so machine noise cannot fail it."""
    elapsed = []
    for _ in range(3):
        started = time.monotonic()
        with wire_from(server.mx) as w:
            assert w.code() == 220
        elapsed.append(time.monotonic() - started)
    assert min(elapsed) < PAUSE / 2, elapsed


def test_content_pipelined_before_354_after_ehlo_is_refused(server: AdvServer) -> None:
    """PIPELINING was offered, but DATA still ends a group (RFC 2920 §3.1): content before 354 is smuggling."""
    marker = f"pipe354-{uuid.uuid4()}"
    with wire_from(server.mx) as w:
        w.code()
        assert "PIPELINING" in w.command("EHLO x.test")[1]
        w.send(f"MAIL FROM:<a@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\nSubject: {marker}\r\n\r\nx\r\n.\r\n".encode())
        codes = _replies(w)
    assert codes[:2] == [250, 250] and codes[2] == 554 and 354 not in codes, codes
    assert absent(server, marker)


@pytest.mark.parametrize("port_name", ["submission", "submissions"])
def test_unauthenticated_pipelined_transaction_on_submission_gets_530s(server: AdvServer, port_name: str) -> None:
    """MAIL, RCPT, DATA and a body in one write without AUTH: 530, 503s, 500s; nothing accepted or queued."""
    marker = f"noauth-{uuid.uuid4()}"
    port = getattr(server, port_name)
    w = tls_wire(server, port) if port_name == "submissions" else wire_from(port)
    with w:
        w.code()
        w.command("EHLO x.test")
        w.send(
            f"MAIL FROM:<{DEMO}>\r\nRCPT TO:<victim@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\n"
            f"Subject: {marker}\r\n\r\nspam\r\n.\r\nNOOP\r\n".encode()
        )
        codes = [w.code() for _ in range(9)]  # 4 commands, 4 body lines, NOOP
    assert codes[0] == 530 and codes[1:4] == [503, 503, 503], codes
    assert 250 not in codes[:-1] and 354 not in codes and codes[-1] == 250, codes
    assert absent(server, marker)
    assert not [r for r, _ in server.queued() if r == "victim@remote.test"]


def test_failed_auth_pipelined_with_a_transaction_authorises_nothing(server: AdvServer) -> None:
    marker = f"badauth-{uuid.uuid4()}"
    bad = base64.b64encode(f"\0{DEMO}\0wrong-password".encode()).decode()
    with tls_wire(server, server.submissions, source="127.0.0.2") as w:
        w.code()
        w.command("EHLO x.test")
        w.send(
            f"AUTH PLAIN {bad}\r\nMAIL FROM:<{DEMO}>\r\nRCPT TO:<victim@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\n"
            f"Subject: {marker}\r\n\r\nspam\r\n.\r\nNOOP\r\n".encode()
        )
        codes = [w.code() for _ in range(10)]  # AUTH, 4 commands, 4 body lines, NOOP
    assert codes[:5] == [535, 530, 503, 503, 503], codes
    assert 250 not in codes[:-1] and 354 not in codes and codes[-1] == 250, codes
    assert absent(server, marker)
    assert not [r for r, _ in server.queued() if r == "victim@remote.test"]
