"""IMAP load for the benchmark: a client that times single commands on a big mailbox, and many IDLE sessions
held open at once.

* The mailbox itself comes from `imap_mailbox` (deterministic messages with known SEARCH answers).
* `IMAPClient` is a blocking client over one TLS socket that sends one command and reads until its tagged reply,
  literals included, timing just that. One command at a time is what the figures need: the time of a FETCH of
  10,000 messages is the server's, not a mix of several commands.
* `mailbox_run` is the measured sequence (SELECT, FETCH cold and warm, four SEARCHes, STORE) with the server's CPU
  per command, plus one more warm FETCH under strace that counts the message files the server opens.
* `open_sessions` holds many connections at once (asyncio + ssl): plain greeting only, TLS greeting only, or
  TLS + LOGIN + SELECT INBOX + IDLE; `wake_latencies` times how soon a sample of IDLE sessions hears of a delivery.

Also a command of its own, against an IMAPS server whose INBOX holds build_messages(N) just delivered (--pid and
--maildir: the server's CPU and the files it opens):

    python bench/imap_load.py --port 41993 --user demo@bench.test --password demo --messages 10000 [--pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import math
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import procstat
from imap_mailbox import MailboxPlan, build_messages, message_bytes

FETCH_ITEMS = "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])"
STRACE = "/usr/bin/strace"
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_TAGGED = re.compile(rb"^(\S+) (OK|NO|BAD)\b ?(.*)")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")
_OPEN_CALL = re.compile(r'open(?:at2?)?\((?:[^,]+, )?"((?:[^"\\]|\\.)*)".*\) = (-?\d+)')

# -- one client, one command at a time -------------------------------------------------------------------------


class IMAPLoadError(RuntimeError):
    pass


@functools.cache
def client_context() -> ssl.SSLContext:
    """One context for every connection: building one loads the system's CA store, ~20 ms of CPU each, which
    would make the client, not the server, the limit when opening a thousand sessions. The servers use self-signed
    certificates on loopback: encryption is what costs, not verification."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Reply:
    status: str
    text: str
    untagged: list[bytes]  # the first line of each untagged response (literals left out)
    octets: int
    elapsed: float
    client_cpu: float  # this process's CPU while waiting for and parsing the reply: is the client the limit?

    def exists(self) -> int | None:
        for line in self.untagged:
            match = _EXISTS.match(line)
            if match:
                return int(match.group(1))
        return None

    def count(self, word: bytes) -> int:
        return sum(1 for line in self.untagged if word in line[:40])

    def search_hits(self) -> int:
        for line in self.untagged:
            if line.startswith(b"* SEARCH"):
                return len(line.split()) - 2
            if line.startswith(b"* ESEARCH"):
                match = re.search(rb"COUNT (\d+)", line)
                if match:
                    return int(match.group(1))
        return 0


class IMAPClient:
    """A blocking IMAP client over TLS that reads every reply to its end, literals included."""

    def __init__(self, host: str, port: int, *, timeout: float = 120.0) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = client_context().wrap_socket(raw)
        self.reader = self.sock.makefile("rb", buffering=256 * 1024)
        self._tag = 0
        greeting = self.reader.readline()
        if not greeting.startswith(b"* OK"):
            self.close()
            raise IMAPLoadError(f"greeting: {greeting[:200]!r}")

    def tls(self) -> str:
        cipher = self.sock.cipher()
        return f"{self.sock.version()} {cipher[0] if cipher else '?'}"

    def _response(self) -> tuple[bytes, int]:
        """One response: its first line and its size, literals read (and dropped) as they come."""
        line = self.reader.readline()
        if not line:
            raise IMAPLoadError("connection closed by the server")
        first, octets = line, len(line)
        while (match := _LITERAL.search(line)) is not None:
            literal = int(match.group(1))
            if len(self.reader.read(literal)) != literal:
                raise IMAPLoadError("connection closed inside a literal")
            line = self.reader.readline()
            octets += literal + len(line)
        return first, octets

    def command(self, text: str, expect: str = "OK") -> Reply:
        self._tag += 1
        tag = f"b{self._tag}".encode()
        untagged: list[bytes] = []
        octets = 0
        started, cpu = time.perf_counter(), time.process_time()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        while True:
            line, size = self._response()
            octets += size
            if line.startswith(b"* "):
                untagged.append(line)
                continue
            match = _TAGGED.match(line)
            if match and match.group(1) == tag:
                break
            if not line.startswith(b"+"):
                raise IMAPLoadError(f"{text[:40]}: unexpected {line[:200]!r}")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        reply = Reply(match.group(2).decode(), line.decode(errors="replace").strip(), untagged, octets, elapsed, cpu)
        if reply.status != expect:
            raise IMAPLoadError(f"{text[:60]}: {reply.text[:200]}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# -- the measured sequence -------------------------------------------------------------------------------------


def _tree_cpu(pid: int) -> float:
    return procstat.cpu_seconds(procstat.tree_pids(pid))


def _threads(pid: int) -> list[int]:
    try:
        return [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def _traced(pid: int, tid: int) -> bool:
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as handle:
            for line in handle:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1]) != 0
    except FileNotFoundError:
        return True  # gone: nothing left to wait for
    return False


def count_opens(pids: list[int], action: Callable[[], Reply], maildir: Path, timeout: float = 20.0) -> dict[str, Any]:
    """Runs `action` with strace attached to every thread of `pids`; returns how many files they opened, and how
    many of them were message files (under maildir's cur/ or new/). strace slows the server, so the time of this
    run is not reported. Raises IMAPLoadError if strace cannot attach (no ptrace in a container, say)."""
    with tempfile.NamedTemporaryFile(prefix="imap-opens-", suffix=".strace", delete=False) as output:
        trace = Path(output.name)
    command = [STRACE, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace)]
    for pid in pids:
        command += ["-p", str(pid)]
    tracer = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not all(_traced(pid, tid) for pid in pids for tid in _threads(pid)):
            if tracer.poll() is not None or time.monotonic() > deadline:
                error = tracer.stderr.read().decode(errors="replace") if tracer.stderr else ""
                raise IMAPLoadError(f"strace could not attach: {error.strip()[:300]}")
            time.sleep(0.02)
        reply = action()
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)  # detaches cleanly, the server runs on
            try:
                tracer.wait(timeout)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
        if tracer.stderr is not None:
            tracer.stderr.close()
    text = trace.read_text(errors="replace")
    trace.unlink()
    prefixes = tuple(f"{maildir.resolve()}/{sub}/" for sub in ("cur", "new"))
    opened = [match.group(1) for match in _OPEN_CALL.finditer(text) if int(match.group(2)) >= 0]
    messages = [path for path in opened if path.startswith(prefixes)]
    return {"files_opened": len(opened), "message_files_opened": len(messages), "fetched": reply.count(b"FETCH")}


def mailbox_run(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    pid: int,
    maildir: Path,
    plan: MailboxPlan,
    trace_opens: bool = True,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """The imap scenario's sequence on one connection; figures in seconds (and counts). `pid` is the server's root
    process: CPU is the whole tree's, read before and after each timed command."""
    figures: dict[str, Any] = {"messages": plan.count}
    cpu: dict[str, float] = {}
    started = time.perf_counter()
    client = IMAPClient(host, port, timeout=timeout)
    try:
        figures["tls"] = client.tls()
        login = client.command(f'LOGIN "{user}" "{password}"')
        figures["login_s"] = login.elapsed

        def timed(name: str, text: str) -> Reply:
            before = _tree_cpu(pid)
            reply = client.command(text)
            cpu[name] = _tree_cpu(pid) - before
            figures[f"{name}_s"] = reply.elapsed
            figures[f"{name}_cpu_s"] = cpu[name]
            figures[f"{name}_client_cpu_s"] = reply.client_cpu
            return reply

        selected = timed("select", "SELECT INBOX")
        if selected.exists() != plan.count:
            raise IMAPLoadError(f"SELECT INBOX says {selected.exists()} messages, {plan.count} were written")
        for name in ("fetch_cold", "fetch_warm"):
            reply = timed(name, f"UID FETCH 1:* {FETCH_ITEMS}")
            if reply.count(b"FETCH") != plan.count:
                raise IMAPLoadError(f"{name}: {reply.count(b'FETCH')} FETCH responses for {plan.count} messages")
            figures[f"{name}_mib"] = reply.octets / 2**20
        if trace_opens:
            try:
                opens = count_opens(
                    procstat.tree_pids(pid), lambda: client.command(f"UID FETCH 1:* {FETCH_ITEMS}"), maildir
                )
                figures["warm_fetch_message_opens"] = opens["message_files_opened"]
                figures["warm_fetch_all_opens"] = opens["files_opened"]
            except (IMAPLoadError, OSError) as error:
                figures["warm_fetch_opens_error"] = str(error)
        for name, (criteria, expected) in plan.searches.items():
            reply = timed(f"search_{name}", f"UID SEARCH {criteria}")
            figures[f"search_{name}_hits"] = reply.search_hits()
            figures[f"search_{name}_expected"] = expected
        stored = timed("store", "UID STORE 1:* +FLAGS (\\Seen)")
        figures["store_responses"] = stored.count(b"FETCH")
        client.command("LOGOUT", expect="OK")
    finally:
        client.close()
    figures["server_cpu_s"] = sum(cpu.values())
    figures["wall_s"] = time.perf_counter() - started
    return figures


# -- many sessions at once ---------------------------------------------------------------------------------------

Mode = Literal["plain", "tls", "idle"]


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Sessions:
    """Connections held open (close() them), and how opening them went."""

    mode: Mode
    sessions: list[Session] = field(default_factory=list)
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    tls: str = ""

    def note(self, error: str) -> None:
        self.failed += 1
        self.errors[error] = self.errors.get(error, 0) + 1

    def close(self) -> None:
        # abort(): no TLS close_notify for thousands of sessions; the server sees a reset and ends each one.
        for session in self.sessions:
            session.writer.transport.abort()
        self.sessions.clear()


def source_addresses(count: int, per_address: int) -> Iterator[str]:
    """127.0.0.2, 127.0.0.3, ...: each source address has its own ephemeral port range (and no TIME_WAIT left by
    earlier scenarios on 127.0.0.1)."""
    first = ipaddress.IPv4Address("127.0.0.2")
    for index in range(count):
        address = first + index // per_address
        if not address.is_loopback:
            raise ValueError("source addresses must stay within 127.0.0.0/8")
        yield str(address)


async def _expect(reader: asyncio.StreamReader, tag: bytes | None) -> bytes:
    """Lines until the tagged reply (tag) or, for tag None, one line; returns it."""
    while True:
        line = await reader.readline()
        if not line:
            raise IMAPLoadError("closed by the server")
        if tag is None or line.startswith(tag + b" "):
            return line
        if tag == b"+" and line.startswith(b"+"):
            return line


async def _open_one(host: str, port: int, source: str, mode: Mode, user: str, password: str) -> Session:
    context = client_context() if mode != "plain" else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context, local_addr=(source, 0), limit=2**16)
    try:
        greeting = await _expect(reader, None)
        if not greeting.startswith(b"* OK"):
            raise IMAPLoadError(greeting[:80].decode(errors="replace").strip())
        if mode == "idle":
            for tag, text in ((b"l", f'LOGIN "{user}" "{password}"'), (b"s", "SELECT INBOX")):
                writer.write(tag + b" " + text.encode() + b"\r\n")
                line = await _expect(reader, tag)
                if not line.startswith(tag + b" OK"):
                    raise IMAPLoadError(line[:80].decode(errors="replace").strip())
            writer.write(b"i IDLE\r\n")
            line = await _expect(reader, b"+")
            if not line.startswith(b"+"):
                raise IMAPLoadError(line[:80].decode(errors="replace").strip())
    except BaseException:
        writer.transport.abort()
        raise
    return Session(reader, writer)


async def open_sessions(
    host: str,
    port: int,
    count: int,
    *,
    mode: Mode,
    user: str = "",
    password: str = "",
    seconds: float = 120.0,
    in_flight: int = 64,
    per_address: int = 1000,
) -> Sessions:
    """`count` connections in `mode`, at most `in_flight` being set up at a time (so the server's listen backlog
    and its login throttle are not what is measured), all within `seconds`. A session counts once it is
    in its final state: greeted (plain, tls) or idling (idle: the server's "+" to IDLE)."""
    result = Sessions(mode)
    gate = asyncio.Semaphore(in_flight)
    started = time.monotonic()

    async def one(source: str) -> None:
        async with gate:
            try:
                result.sessions.append(await _open_one(host, port, source, mode, user, password))
            except (OSError, IMAPLoadError, ssl.SSLError, asyncio.IncompleteReadError) as error:
                result.note(f"{type(error).__name__}: {error}"[:100])

    tasks = [asyncio.ensure_future(one(source)) for source in source_addresses(count, per_address)]
    try:
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            for _ in pending:
                result.note("not set up before the deadline")
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        result.close()
        raise
    result.elapsed = time.monotonic() - started
    if result.sessions:
        ssl_object = result.sessions[0].writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            result.tls = f"{ssl_object.version()} {cipher[0] if cipher else '?'}"
    return result


async def wake_latencies(
    sessions: Sessions, sample: int, exists: int, deliver: Callable[[], float], seconds: float = 5.0
) -> list[float]:
    """Delivers one message (deliver() returns perf_counter() when it is in place) while `sample` IDLE sessions,
    spread evenly over all of them, wait for "* <exists> EXISTS"; returns the latency of each that heard it
    within `seconds` (sorted). The other sessions are not read: their replies wait in socket buffers."""
    chosen = sessions.sessions[:: max(1, len(sessions.sessions) // max(1, sample))][:sample]
    wanted = b"* %d EXISTS" % exists

    async def heard(session: Session) -> float:
        while True:
            line = await session.reader.readline()
            if not line:
                raise IMAPLoadError("closed during IDLE")
            if line.startswith(wanted):
                return time.perf_counter()

    listeners = [asyncio.ensure_future(heard(session)) for session in chosen]
    delivered = await asyncio.to_thread(deliver)
    done, pending = await asyncio.wait(listeners, timeout=seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return sorted(task.result() - delivered for task in done if task.exception() is None)


async def hold_sessions(
    host: str,
    port: int,
    count: int,
    *,
    mode: Mode,
    pid: int,
    user: str = "",
    password: str = "",
    wakes: Sequence[tuple[str, Callable[[], float]]] = (),
    exists: int = 0,
    sample: int = 100,
    setup_seconds: float = 120.0,
    wake_seconds: float = 5.0,
) -> dict[str, Any]:
    """Opens `count` sessions in `mode` in two halves and weighs the server's process tree (root `pid`) before, in
    between and after; in "idle" mode then runs each of `wakes` (name, deliver) in turn, expecting
    "* <exists + n> EXISTS" for the n-th, and closes everything.

    Figures: `rss_per_conn_bytes` (and pss) is the whole growth over all sessions, one-off costs included (a
    server's first logins may leave allocator arenas behind, e.g. Argon2's 19 MiB per check); `marginal_rss_...`
    is the growth from the first half to all of them per session added, i.e. what one more session costs."""

    def weigh() -> tuple[int, int, int]:
        pids = procstat.tree_pids(pid)
        return procstat.rss_bytes(pids), procstat.pss_bytes(pids), len(pids)

    async def add(sessions: Sessions, number: int) -> None:
        more = await open_sessions(host, port, number, mode=mode, user=user, password=password, seconds=setup_seconds)
        sessions.sessions += more.sessions
        sessions.elapsed += more.elapsed
        sessions.tls = sessions.tls or more.tls
        if more.failed:
            first = sorted(more.errors.items(), key=lambda item: -item[1])[:3]
            raise IMAPLoadError(f"{mode}: {len(more.sessions)} of {number} sessions set up; {first}")
        # Lets the server finish setting up each session (buffers, timers, watchers) before it is weighed.
        await asyncio.sleep(1.0)

    before = weigh()
    sessions = Sessions(mode)
    half = count // 2
    try:
        await add(sessions, half)
        middle = weigh() if half else before
        await add(sessions, count - half)
        after = weigh()
        figures: dict[str, Any] = {
            "connections": len(sessions.sessions),
            "open_s": sessions.elapsed,
            "processes": after[2],
            "rss_before_mib": before[0] / 2**20,
            "rss_after_mib": after[0] / 2**20,
            "rss_per_conn_bytes": (after[0] - before[0]) / count,
            "pss_per_conn_bytes": (after[1] - before[1]) / count,
            "marginal_rss_per_conn_bytes": (after[0] - middle[0]) / (count - half),
            "marginal_pss_per_conn_bytes": (after[1] - middle[1]) / (count - half),
            "tls": sessions.tls,
        }
        for number, (name, deliver) in enumerate(wakes, 1):
            heard = await wake_latencies(sessions, sample, exists + number, deliver, wake_seconds)
            figures[f"{name}_sample"] = min(sample, len(sessions.sessions))
            figures[f"{name}_woken"] = len(heard)
            if heard:
                figures[f"{name}_p50_ms"] = percentile(heard, 0.5) * 1000
                figures[f"{name}_p99_ms"] = percentile(heard, 0.99) * 1000
    finally:
        sessions.close()
    return figures


def smtp_deliver(host: str, port: int, sender: str, recipient: str) -> float:
    """One message over SMTP; returns perf_counter() when the server's 250 for its data has arrived."""
    data = message_bytes(999_999)
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.sendmail(sender, [recipient], data)
        return time.perf_counter()


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: an observed value (p99 of 100 samples is the 99th)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=41993)
    parser.add_argument("--user", default="demo@bench.test")
    parser.add_argument("--password", default="demo")
    parser.add_argument("--messages", type=int, default=10000, help="what the mailbox holds (build_messages)")
    parser.add_argument("--pid", type=int, help="the server's root pid, for its CPU (default: this process)")
    parser.add_argument("--maildir", type=Path, default=Path("/nonexistent"), help="for the count of opened files")
    args = parser.parse_args()
    plan = build_messages(args.messages)
    figures = mailbox_run(
        args.host,
        args.port,
        args.user,
        args.password,
        pid=args.pid or os.getpid(),
        maildir=args.maildir,
        plan=plan,
        trace_opens=args.pid is not None,
    )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
