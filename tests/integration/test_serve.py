"""`postkontor init` + `serve` with a hand-written config: timeouts (RFC 5321 §4.5.3.2) and clean stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from pkharness import Wire, free_port_base, postkontor


def _serve(data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "postkontor", "--data", str(data), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            Wire(port, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not start listening")


def test_rfc5321_s4_5_3_2_command_timeout_then_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    postkontor(data, "init", "--domain", "corp.test", "--hostname", "mail.corp.test")
    config = data / "postkontor.toml"
    assert "#" in config.read_text(), "init writes a commented config"
    base = free_port_base()
    config.write_text(
        'hostname = "mail.corp.test"\n'
        '[tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
        f'[[listener]]\nkind = "mx"\naddress = "127.0.0.1"\nport = {base + 25}\n'
        f'[[listener]]\nkind = "submission"\naddress = "127.0.0.1"\nport = {base + 2525}\nname = "alt-submission"\n'
        "[timeouts]\ncommand = 1.5\n"
    )
    postkontor(data, "user", "add", "boss@corp.test", stdin="secret\n")
    process = _serve(data)
    try:
        _wait_listening(base + 25, process)
        with Wire(base + 25) as w:
            assert w.code() == 220
            started = time.monotonic()
            code, text = w.reply()
            assert code == 421 and text[0].startswith("4.4.2")
            assert time.monotonic() - started < 10
        with Wire(base + 2525) as w:
            assert w.code() == 220
            _, lines = w.command("EHLO x.test")
            assert "STARTTLS" in lines, "an extra submission listener behaves like 587"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_config_error_names_file_line_and_key(tmp_path: Path) -> None:
    data = tmp_path / "bad"
    postkontor(data, "init", "--domain", "corp.test", "--hostname", "mail.corp.test")
    config = data / "postkontor.toml"
    config.write_text('hostname = "mail.corp.test"\n\n[limits]\nmax_recipients = "ten"\n\n'
                      '[[listener]]\nkind = "mx"\naddress = "127.0.0.1"\nport = 2525\n')
    result = postkontor(data, "serve", check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert str(config) in line and ":4" in line and "max_recipients" in line, line
