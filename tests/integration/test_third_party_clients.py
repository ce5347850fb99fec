"""Real third-party clients from Debian against the running server: swaks, msmtp and curl."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from pkharness import DEMO, DEMO_PASSWORD, DevServer, env_without_proxy


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=60, env=env_without_proxy())


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: .ci/run installs it (apt-get install {tool})")


def _wait_delivered(server: DevServer, marker: str) -> list[bytes]:
    return server.find(marker)


def test_swaks_mx_plain(server: DevServer) -> None:
    _require("swaks")
    marker = f"swaks-mx-{uuid.uuid4()}"
    result = _run(["swaks", "--server", "127.0.0.1", "--port", str(server.mx), "--to", DEMO,
                   "--from", "someone@remote.test", "--header", f"Subject: {marker}", "--helo", "swaks.test"])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert len(_wait_delivered(server, marker)) == 1


def test_swaks_mx_relay_refused(server: DevServer) -> None:
    _require("swaks")
    result = _run(["swaks", "--server", "127.0.0.1", "--port", str(server.mx), "--to", "victim@remote.test",
                   "--from", "spammer@remote.test", "--quit-after", "RCPT"])
    output = result.stdout.decode()
    assert result.returncode != 0 and "5.7.1" in output, output


def test_swaks_submission_starttls_auth(server: DevServer) -> None:
    _require("swaks")
    marker = f"swaks-587-{uuid.uuid4()}"
    result = _run(["swaks", "--server", "127.0.0.1", "--port", str(server.submission), "--tls",
                   "--auth", "PLAIN", "--auth-user", DEMO, "--auth-password", DEMO_PASSWORD,
                   "--to", DEMO, "--from", DEMO, "--header", f"Subject: {marker}"])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"with ESMTPSA" in _wait_delivered(server, marker)[0]


def test_swaks_submissions_implicit_tls_auth_login(server: DevServer) -> None:
    _require("swaks")
    marker = f"swaks-465-{uuid.uuid4()}"
    result = _run(["swaks", "--server", "127.0.0.1", "--port", str(server.submissions), "--tls-on-connect",
                   "--auth", "LOGIN", "--auth-user", DEMO, "--auth-password", DEMO_PASSWORD,
                   "--to", DEMO, "--from", DEMO, "--header", f"Subject: {marker}"])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert _wait_delivered(server, marker)


def test_swaks_rfc2920_pipelining(server: DevServer) -> None:
    _require("swaks")
    marker = f"swaks-pipe-{uuid.uuid4()}"
    result = _run(["swaks", "--server", "127.0.0.1", "--port", str(server.mx), "--to", DEMO,
                   "--from", "someone@remote.test", "--header", f"Subject: {marker}", "--pipeline"])
    assert result.returncode == 0, result.stdout.decode()
    assert _wait_delivered(server, marker)


def _msmtp(server: DevServer, tmp_path: Path, *, tls_on_connect: bool, port: int, marker: str) -> None:
    config = tmp_path / f"msmtprc-{port}"
    config.write_text(
        "account test\n"
        "host 127.0.0.1\n"
        f"port {port}\n"
        "auth on\n"
        f"user {DEMO}\n"
        f"password {DEMO_PASSWORD}\n"
        "tls on\n"
        f"tls_starttls {'off' if tls_on_connect else 'on'}\n"
        f"tls_trust_file {server.cert}\n"
        "tls_host_override localhost\n"
        f"from {DEMO}\n"
        "account default : test\n"
    )
    config.chmod(0o600)
    message = f"From: {DEMO}\r\nTo: {DEMO}\r\nSubject: {marker}\r\n\r\nvia msmtp\r\n".encode()
    result = _run(["msmtp", "-C", str(config), DEMO], stdin=message)
    assert result.returncode == 0, result.stderr.decode()
    assert _wait_delivered(server, marker)


def test_msmtp_submission_starttls_verifies_certificate(server: DevServer, tmp_path: Path) -> None:
    _require("msmtp")
    _msmtp(server, tmp_path, tls_on_connect=False, port=server.submission, marker=f"msmtp-587-{uuid.uuid4()}")


def test_msmtp_submissions_implicit_tls(server: DevServer, tmp_path: Path) -> None:
    _require("msmtp")
    _msmtp(server, tmp_path, tls_on_connect=True, port=server.submissions, marker=f"msmtp-465-{uuid.uuid4()}")


def test_curl_smtps_and_smtp_starttls(server: DevServer, tmp_path: Path) -> None:
    _require("curl")
    for url, extra in ((f"smtps://127.0.0.1:{server.submissions}", []),
                       (f"smtp://127.0.0.1:{server.submission}", ["--ssl-reqd"])):
        marker = f"curl-{uuid.uuid4()}"
        mail = tmp_path / "mail.txt"
        mail.write_bytes(f"From: {DEMO}\r\nTo: {DEMO}\r\nSubject: {marker}\r\n\r\nvia curl\r\n".encode())
        result = _run(["curl", "--silent", "--show-error", "--url", url, *extra, "--cacert", str(server.cert),
                       "--user", f"{DEMO}:{DEMO_PASSWORD}", "--mail-from", DEMO, "--mail-rcpt", DEMO,
                       "--upload-file", str(mail)])
        assert result.returncode == 0, result.stderr.decode()
        assert _wait_delivered(server, marker)


def test_curl_mx_plain_smtp(server: DevServer, tmp_path: Path) -> None:
    _require("curl")
    marker = f"curl-mx-{uuid.uuid4()}"
    mail = tmp_path / "mx.txt"
    mail.write_bytes(f"From: x@remote.test\r\nTo: {DEMO}\r\nSubject: {marker}\r\n\r\n.leading dot\r\n".encode())
    result = _run(["curl", "--silent", "--show-error", "--url", f"smtp://127.0.0.1:{server.mx}",
                   "--mail-from", "x@remote.test", "--mail-rcpt", DEMO, "--upload-file", str(mail)])
    assert result.returncode == 0, result.stderr.decode()
    found = _wait_delivered(server, marker)
    assert found and found[0].endswith(b"\r\n\r\n.leading dot\r\n")
