"""A throw-away postkontor server for the benchmark, driven only through its command line and config file.

The data directory is made by `postkontor dev` (demo user demo@<domain>, self-signed certificate, listeners on
port_base+25/587/465) and then run with `postkontor serve`: `dev` rewrites postkontor.toml at every start, so
it could not keep the settings the benchmark needs (connection limits for 50 sessions and 10,000 idle
connections, the outbound port of the smtp-sink "MX", the loopback nameserver). Logs go to <data>/server.log,
as a production server's would go to a file. stop() leaves no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import files
import procstat

DEV_MARKER = ".postkontor-dev"


class PostkontorError(RuntimeError):
    pass


def _set_keys(text: str, table: str, values: Mapping[str, int | str]) -> str:
    """Sets keys right under `[table]` in a postkontor.toml, replacing earlier settings of the same keys.

    The generated file has every table header with its defaults commented out below, so inserting after the
    header is enough; a value written earlier (a previous configure()) is dropped first so no key is set twice.
    """
    header = f"[{table}]"
    lines = text.split("\n")
    try:
        start = lines.index(header)
    except ValueError:
        lines += ["", header]
        start = len(lines) - 1
    end = start + 1
    while end < len(lines) and not lines[end].startswith("["):
        end += 1
    names = set(values)
    kept = [line for line in lines[start + 1 : end] if line.split("=", 1)[0].strip() not in names]
    rendered = [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}" for key, value in values.items()]
    return "\n".join([*lines[:start], header, *rendered, *kept, *lines[end:]])


class PostkontorInstance:
    """postkontor with its data under `data_dir`, MX on listen:port_base+25."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port_base: int = 41000,
        listen: str = "127.0.0.1",
        domain: str = "bench.test",
        dns: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port_base = port_base
        self.host = listen
        self.port = port_base + 25
        self.domain = domain
        self.dns = dns
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.config_file = self.data_dir / "postkontor.toml"
        self.log_file = self.data_dir / "server.log"
        self.demo = f"demo@{domain}"
        self.maildir = self.data_dir / "mail" / domain / "demo"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- setup ----------------------------------------------------------------------------------------------

    def _cli(self, *args: str, timeout: float = 60.0, stdin: str | None = None) -> str:
        command = [sys.executable, "-m", "postkontor", "--data", str(self.data_dir), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
        if result.returncode != 0:
            raise PostkontorError(f"postkontor {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def create(self) -> None:
        """A fresh data directory: an old one (ours, recognised by dev's marker) is removed first."""
        if self.data_dir.exists():
            if not (self.data_dir / DEV_MARKER).exists():
                raise PostkontorError(f"{self.data_dir} exists and was not made by `postkontor dev`; not removing it")
            files.move_to_attic(self.data_dir)  # deleted at the end (see files.empty_maildir for why not now)
        # Made here (private, as dev would make it) so that dev's own log already goes to server.log.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700)
        command = [sys.executable, "-m", "postkontor", "--data", str(self.data_dir), "dev"]
        command += ["--port-base", str(self.port_base), "--listen", self.host, "--domain", self.domain]
        if self.dns:
            command += ["--dns", self.dns]
        # Runs dev only until it is ready: that is when the directory, accounts and certificate all exist.
        self._spawn(command, capture_stdout=True)
        try:
            self._wait_ready(expect_line=b"ready")
        finally:
            self.stop()

    def configure(self, *, limits: Mapping[str, int] | None = None, outbound: Mapping[str, int] | None = None) -> None:
        """Edits postkontor.toml like an administrator would; takes effect at the next start()."""
        text = self.config_file.read_text(encoding="utf-8")
        if limits:
            text = _set_keys(text, "limits", limits)
        if outbound:
            text = _set_keys(text, "outbound", outbound)
        self.config_file.write_text(text, encoding="utf-8")

    def add_alias(self, source: str, *targets: str) -> None:
        self._cli("alias", "add", source, *targets)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _spawn(self, command: list[str], capture_stdout: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            raise PostkontorError("already running")
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            # A session of its own: a Ctrl-C meant for the benchmark must not reach the server before the
            # benchmark's cleanup stops it in order. RLIMIT_NOFILE is inherited from the benchmark process,
            # which raises it for the idle-connection test before starting any server.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                # Only dev's short banner is read; anything else goes to the log, never into a pipe that could fill.
                stdout=subprocess.PIPE if capture_stdout else log,
                stderr=log,
                start_new_session=True,
            )

    def _wait_ready(self, expect_line: bytes | None = None) -> None:
        """Until the MX port greets with 220 (and, for dev, stdout said `expect_line`)."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        if expect_line is not None and self.process.stdout is not None:
            os.set_blocking(self.process.stdout.fileno(), False)
        seen = b""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostkontorError(f"postkontor exited with {self.process.returncode}:\n{self.log_tail()}")
            if expect_line is not None and self.process.stdout is not None:
                seen += self.process.stdout.read() or b""
                if expect_line not in seen:
                    time.sleep(0.05)
                    continue
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                    greeting = sock.recv(512)
                    sock.sendall(b"QUIT\r\n")
                if greeting.startswith(b"220"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise PostkontorError(f"postkontor did not greet on {self.host}:{self.port} in time:\n{self.log_tail()}")

    def start(self) -> PostkontorInstance:
        self._spawn([sys.executable, "-m", "postkontor", "--data", str(self.data_dir), "serve"])
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM (graceful: the spool is drained), then SIGKILL for the whole tree if it takes too long."""
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                tree = {pid: procstat.start_ticks(pid) for pid in procstat.tree_pids(process.pid)}
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
                # Worker processes, if the server has any, must not outlive it.
                for pid, started in tree.items():
                    if pid != process.pid and started is not None and procstat.start_ticks(pid) == started:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        finally:
            if process.stdout is not None:
                process.stdout.close()
            self.process = None

    def __enter__(self) -> PostkontorInstance:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def nofile_limit(self) -> int | None:
        """The server's soft RLIMIT_NOFILE, read back from /proc (what it really got)."""
        if self.pid is None:
            return None
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
        return None

    def maildir_count(self) -> int:
        return files.count_files(self.maildir / "new")

    def wait_delivered(self, count: int, timeout: float, poll: float = 0.01) -> int:
        deadline = time.monotonic() + timeout
        seen = self.maildir_count()
        while seen < count:
            if self.pid is None:
                raise PostkontorError(f"postkontor exited during the run:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{seen} of {count} messages delivered after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(poll)
            seen = self.maildir_count()
        return seen

    def reset(self) -> None:
        """Empties the demo Maildir (a Maildir reader may delete at any time, so this is safe while running)."""
        files.empty_maildir(self.maildir)

    def queued_messages(self) -> int:
        """Messages in the outbound queue, from its SQLite database opened read-only (WAL allows that)."""
        database = self.data_dir / "queue" / "queue.sqlite3"
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
        try:
            row = connection.execute("SELECT count(*) FROM messages").fetchone()
        finally:
            connection.close()
        return int(row[0])

    def wait_queue_empty(self, timeout: float, poll: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while (left := self.queued_messages()) > 0:
            if time.monotonic() >= deadline:
                listing = self._cli("queue", "list", timeout=30)
                raise TimeoutError(f"{left} messages still queued after {timeout:.0f}s:\n{listing[-2000:]}")
            time.sleep(poll)

    def log_tail(self, lines: int = 30) -> str:
        return files.log_tail(self.log_file, lines, "(no server.log)")

    def log_problems(self, limit: int = 20) -> list[str]:
        """WARNING/ERROR/CRITICAL lines and tracebacks logged since the last start."""
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        pattern = re.compile(r" (WARNING|ERROR|CRITICAL) |^Traceback")
        return [line for line in text.splitlines() if pattern.search(line)][:limit]
