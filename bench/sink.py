"""Postfix's smtp-sink as a context manager, optionally counting the messages it has received.

smtp-sink throws mail away as fast as it arrives: it is the "MX" that the outbound benchmark relays to and, fed
directly by smtp-source, the ceiling of what the load generator and loopback can do without any storage.

With counting on (-c), smtp-sink writes "sess=N quit=N mesg=N\r" to its stdout, unbuffered, every time a message's
final "." arrives; the last such record in the output file is the number of messages received so far. That is
the only signal that comes from the receiving end itself, so the outbound run ends when it has grown by the
number of messages injected (its -M option, terminate after N messages, exits before replying 250 to the last
one and would make the relaying server retry).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

SMTP_SINK = "/usr/sbin/smtp-sink"
_COUNTER = re.compile(rb"mesg=(\d+)")


class SinkError(RuntimeError):
    pass


class SmtpSink:
    """smtp-sink on host:port (loopback), its output in `output`."""

    def __init__(self, port: int, output: Path, *, host: str = "127.0.0.1", count: bool = False) -> None:
        self.host = host
        self.port = port
        self.output = output
        self.count = count
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        # -u: as root smtp-sink insists on dropping privileges to a named user. Backlog 1000 so that a burst of
        # connections is queued by the kernel instead of refused.
        command = [SMTP_SINK, "-u", "nobody", *(["-c"] if self.count else []), f"{self.host}:{self.port}", "1000"]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise SinkError(f"smtp-sink exited: {self.output.read_text(errors='replace')[-1000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=1.0).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SinkError(f"smtp-sink did not listen on {self.host}:{self.port}")

    def received(self) -> int:
        """Messages received so far (needs count=True): the last counter record in the output file."""
        try:
            with open(self.output, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 256))
                tail = handle.read()
        except FileNotFoundError:
            return 0
        found = _COUNTER.findall(tail)
        return int(found[-1]) if found else 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
