"""Durability: a 250 after DATA is a promise (RFC 5321 §6.1). SIGKILL under load loses nothing acknowledged."""

from __future__ import annotations

import signal
import smtplib
import threading
import time
from pathlib import Path

from pkharness import DEMO, DevServer, Wire, free_port_base

CLIENTS = 8
ROUNDS = 3


def _sender(server: DevServer, client: int, acked: list[str], stop: threading.Event) -> None:
    """Send numbered messages until the server dies or stop is set; record what got 250."""
    sequence = 0
    try:
        with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
            while not stop.is_set() and sequence < 5000:
                token = f"dur-{client}-{sequence}-{time.monotonic_ns()}"
                body = f"Subject: {token}\r\n\r\n" + ("line of filler text\r\n" * 40) + f"END-{token}\r\n"
                smtp.sendmail("load@remote.test", [DEMO], body.encode())
                acked.append(token)  # only reached after the 250
                sequence += 1
    except (smtplib.SMTPException, OSError):
        return


def _tokens(server: DevServer) -> list[str]:
    tokens = []
    for raw in server.messages():
        text = raw.decode()
        subject = text.split("Subject: ", 1)[1].split("\r\n", 1)[0]
        assert text.endswith(f"END-{subject}\r\n"), f"partial message visible: {subject}"
        tokens.append(subject)
    return tokens


def test_rfc5321_s6_1_sigkill_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    server = DevServer(data=tmp_path / "pk", port_base=free_port_base())
    acked: list[str] = []
    try:
        for _ in range(ROUNDS):
            server.start()
            stop = threading.Event()
            threads = [threading.Thread(target=_sender, args=(server, n, acked, stop)) for n in range(CLIENTS)]
            for thread in threads:
                thread.start()
            time.sleep(1.5)
            server.stop(signal.SIGKILL)
            stop.set()
            for thread in threads:
                thread.join(30)
        server.start()
        assert len(acked) > 50, "the load generator barely ran"
        print(f"{len(acked)} acknowledged messages over {ROUNDS} SIGKILL rounds")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            delivered = _tokens(server)
            if set(acked) <= set(delivered):
                break
            time.sleep(0.2)
        missing = set(acked) - set(delivered)
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:3]}"
        duplicates = {t for t in delivered if delivered.count(t) > 1}
        assert not duplicates, f"delivered twice: {sorted(duplicates)[:3]}"
    finally:
        server.kill()


def test_graceful_shutdown_lets_data_finish(tmp_path: Path) -> None:
    """SIGTERM: new connections refused, the session in DATA finishes and gets its 250, then 421."""
    server = DevServer(data=tmp_path / "pk", port_base=free_port_base())
    server.start()
    try:
        with Wire(server.mx) as w:
            w.code()
            w.command("EHLO x.test")
            w.command("MAIL FROM:<a@remote.test>")
            w.command(f"RCPT TO:<{DEMO}>")
            assert w.command("DATA")[0] == 354
            w.send(b"Subject: graceful\r\n\r\nfirst half\r\n")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            w.send(b"second half\r\n.\r\n")
            assert w.code() == 250
            assert w.code() == 421
        assert server.process.wait(30) == 0
        assert any(b"Subject: graceful" in m for m in server.messages())
        assert not list((server.data / "mail" / "example.test" / "demo" / "tmp").iterdir())
    finally:
        server.kill()
