"""The real `postkontor` command in a subprocess: administration, and one clean line for every user error."""

from __future__ import annotations

import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import fails, run

from postkontor.store.sqlite_accounts import SQLiteAccountStore


def ok(data: Path, *args: str, stdin: str = "") -> str:
    result = run(data, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "srv"
    output = ok(directory, "init", "--domain", "example.com", "--hostname", "mail.example.com")
    assert str(directory / "postkontor.toml") in output
    assert "next steps" in output
    return directory


def store(data: Path) -> SQLiteAccountStore:
    return SQLiteAccountStore(data / "accounts.sqlite3")


def test_init_made_a_commented_config_a_certificate_and_the_domain(data: Path) -> None:
    assert (data / "postkontor.toml").read_text().count("#") > 20
    assert (data / "tls" / "cert.pem").exists() and (data / "tls" / "key.pem").exists()
    assert ok(data, "domain", "list").split() == ["example.com"]


def test_init_twice_is_refused(data: Path) -> None:
    line = fails(data, "init", "--domain", "other.test", "--hostname", "mail.other.test")
    assert "already" in line


def test_domain_add_list_remove(data: Path) -> None:
    ok(data, "domain", "add", "Second.Test")
    assert ok(data, "domain", "list").split() == ["example.com", "second.test"]
    assert "already exists" in fails(data, "domain", "add", "second.test")
    ok(data, "domain", "remove", "second.test")
    assert ok(data, "domain", "list").split() == ["example.com"]
    assert "no such domain" in fails(data, "domain", "remove", "second.test")
    assert "invalid domain" in fails(data, "domain", "add", "bad..name")


def test_user_lifecycle_with_passwords_on_stdin(data: Path) -> None:
    output = ok(data, "user", "add", "Alice@example.com", "--quota", "2G", stdin="first secret\n")
    assert "alice@example.com" in output
    ok(data, "user", "add", "bob@example.com", stdin="  spaces kept  \r\n")
    assert ok(data, "user", "list").splitlines() == ["alice@example.com  2G", "bob@example.com    unlimited"]
    assert ok(data, "user", "list", "example.com").count("\n") == 2
    with store(data) as accounts:
        assert accounts.verify_password("alice@example.com", "first secret")
        assert accounts.verify_password("bob@example.com", "  spaces kept  ")

    ok(data, "user", "passwd", "alice@example.com", stdin="second secret\nignored second line\n")
    ok(data, "user", "quota", "alice@example.com", "500M")
    ok(data, "user", "quota", "bob@example.com", "1024K")
    with store(data) as accounts:
        assert accounts.verify_password("alice@example.com", "second secret")
        assert not accounts.verify_password("alice@example.com", "first secret")
        alice, bob = accounts.get_user("alice@example.com"), accounts.get_user("bob@example.com")
        assert alice is not None and alice.quota == 500 * 1024 * 1024
        assert bob is not None and bob.quota == 1024 * 1024
    assert "bob@example.com    1M" in ok(data, "user", "list")
    ok(data, "user", "quota", "bob@example.com", "0")
    ok(data, "user", "quota", "bob@example.com", "123457")
    assert "bob@example.com    123457" in ok(data, "user", "list")

    assert "already exists" in fails(data, "user", "add", "alice@example.com", stdin="x\n")
    assert "not a local domain" in fails(data, "user", "add", "carol@elsewhere.test", stdin="x\n")
    assert "invalid" in fails(data, "user", "add", "no-at-sign", stdin="x\n")
    assert "no password" in fails(data, "user", "add", "carol@example.com", stdin="")
    assert "no password" in fails(data, "user", "add", "carol@example.com", stdin="\n")
    assert "no password" in fails(data, "user", "passwd", "bob@example.com", stdin="")
    assert "no such user" in fails(data, "user", "passwd", "nobody@example.com", stdin="x\n")
    assert "no such user" in fails(data, "user", "quota", "nobody@example.com", "1G")

    output = ok(data, "user", "remove", "bob@example.com")
    assert "bob@example.com" in output
    assert ok(data, "user", "list").splitlines() == ["alice@example.com  500M"]
    assert "no such user" in fails(data, "user", "remove", "bob@example.com")


def test_aliases_and_catch_all(data: Path) -> None:
    ok(data, "domain", "add", "aliases.test")
    ok(data, "user", "add", "dora@aliases.test", stdin="pw\n")
    ok(data, "alias", "add", "sales@aliases.test", "dora@aliases.test", "Partner@Remote.test")
    ok(data, "alias", "add", "@aliases.test", "dora@aliases.test")
    listing = ok(data, "alias", "list", "aliases.test").splitlines()
    assert sorted(listing) == [
        "@aliases.test -> dora@aliases.test",
        "sales@aliases.test -> dora@aliases.test, Partner@remote.test",
    ]
    with store(data) as accounts:
        assert accounts.resolve("anything@aliases.test").exists
        assert accounts.resolve("sales@aliases.test").remote == ("Partner@remote.test",)
    ok(data, "alias", "remove", "sales@aliases.test", "Partner@remote.test")
    assert "sales@aliases.test -> dora@aliases.test" in ok(data, "alias", "list")
    ok(data, "alias", "remove", "@aliases.test")
    ok(data, "alias", "remove", "sales@aliases.test")
    assert ok(data, "alias", "list", "aliases.test") == ""
    assert "no such alias" in fails(data, "alias", "remove", "sales@aliases.test")
    assert "not a local domain" in fails(data, "alias", "add", "x@nowhere.test", "dora@aliases.test")
    assert "still has" in fails(data, "domain", "remove", "aliases.test")


def test_data_dir_from_the_environment_and_after_the_subcommand(data: Path) -> None:
    by_env = run(None, "domain", "list", env={"POSTKONTOR_DATA": str(data)})
    assert by_env.returncode == 0 and "example.com" in by_env.stdout
    after = subprocess.run(
        [sys.executable, "-m", "postkontor", "domain", "list", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert after.returncode == 0 and "example.com" in after.stdout


def test_no_data_directory(tmp_path: Path) -> None:
    line = fails(None, "domain", "list")
    assert line == "postkontor: error: no data directory: pass --data DIR or set POSTKONTOR_DATA"
    assert "does not exist" in fails(tmp_path / "absent", "user", "list")
    assert "no postkontor.toml" in fails(tmp_path, "serve")
    assert not (tmp_path / "absent").exists(), "admin commands never create a data directory"


def test_broken_config_is_reported_with_file_and_line(tmp_path: Path) -> None:
    ok(tmp_path, "init", "--domain", "example.com")
    config = tmp_path / "postkontor.toml"
    config.write_text(config.read_text().replace("#max_errors = 20", "max_erors = 20"))
    line = fails(tmp_path, "user", "list")
    assert str(config) in line and "max_erors" in line and 'did you mean "max_errors"' in line
    config.write_text(
        'hostname = "mail.example.com"\n[limits]\nmax_recipients = "ten"\n'
        '[[listener]]\nkind = "mx"\naddress = "127.0.0.1"\nport = 2525\n'
    )
    line = fails(tmp_path, "serve")
    assert f"{config}:3: [limits] max_recipients" in line


@pytest.mark.parametrize(
    "args",
    [
        ["user", "quota", "a@example.com", "ten"],
        ["user", "add", "a@example.com", "--quota", "5X"],
        ["user"],
        ["frobnicate"],
        ["alias", "add", "only-source@example.com"],
        ["init"],
    ],
)
def test_usage_errors_exit_2_with_the_usage_line(data: Path, args: list[str]) -> None:
    result = run(data, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: postkontor")
    assert result.stdout == ""


def test_help_and_the_console_script() -> None:
    result = run(None, "--help")
    assert result.returncode == 0 and "serve" in result.stdout and "alias" in result.stdout
    script = shutil.which("postkontor")
    if script is None:
        pytest.skip("the package is not installed with its console script")
    result = subprocess.run([script, "user", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "passwd" in result.stdout


def test_a_database_that_is_not_sqlite_is_one_line(tmp_path: Path) -> None:
    ok(tmp_path, "init", "--domain", "example.com")
    (tmp_path / "accounts.sqlite3").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"accounts.sqlite3{suffix}").unlink(missing_ok=True)
    line = fails(tmp_path, "domain", "list")
    assert "accounts.sqlite3" in line
    assert sqlite3.sqlite_version  # the message comes from SQLite itself


def _on_terminal(data: Path, args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its controlling terminal, answering each prompt in turn."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes postkontor
        os.execv(sys.executable, [sys.executable, "-m", "postkontor", "--data", str(data), *args])
    output = b""
    pending = list(answers)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                raise TimeoutError(output.decode(errors="replace"))
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            # Answer only a fresh prompt: typed-ahead input is flushed when getpass turns echo off.
            if pending and output.endswith(b": "):
                os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_passwords_on_a_terminal_are_asked_twice(data: Path) -> None:
    code, output = _on_terminal(data, ["user", "add", "tty@example.com"], ["typed pw", "typed pw"])
    assert code == 0, output
    assert "password for tty@example.com:" in output and "typed pw" not in output, "no echo"
    with store(data) as accounts:
        assert accounts.verify_password("tty@example.com", "typed pw")

    code, output = _on_terminal(data, ["user", "passwd", "tty@example.com"], ["new one", "another"])
    assert code == 2, output
    assert "postkontor: error: the passwords do not match" in output and "Traceback" not in output
    with store(data) as accounts:
        assert accounts.verify_password("tty@example.com", "typed pw")
