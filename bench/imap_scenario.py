"""The runs of run.py's IMAP scenarios, one server at a time: postkontor or the Dovecot it is compared with.

    imap       a fresh INBOX of N messages in new/ and a freshly started server; then, on one IMAPS session,
               SELECT (which adopts them), UID FETCH of envelope and header fields twice (cold, warm), four UID
               SEARCHes, UID STORE over all; per command the time and the server's CPU; once, the message files
               a third (warm) FETCH opens, counted with strace.
    imap-idle  three stages on a freshly started server each: N bare TCP connections greeted on the STARTTLS
               port, N TLS connections greeted on the IMAPS port, N IMAPS sessions logged in, INBOX selected, in
               IDLE; memory per connection from the server's process tree. In the last stage one message is
               dropped into the Maildir (and, for postkontor, one sent over SMTP) and a sample of sessions times
               its "* n EXISTS".

run.py owns the servers, the repeats and the report; this module only knows an `ImapServer`.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imap_load
import imap_mailbox
import procstat

IDLE_WAKE_SAMPLE = 100  # IDLE sessions whose wake-up is timed
MIB = 2**20


class ImapBenchError(RuntimeError):
    pass


@dataclass
class ImapServer:
    """One IMAP server as the imap scenarios drive it: ports, the benchmark user's Maildir, its lifecycle."""

    name: str
    host: str
    imap_port: int
    imaps_port: int
    user: str
    password: str
    maildir: Path
    owner: tuple[int, int] | None  # (uid, gid) the server reads mail as; None: it runs as root
    pid: Callable[[], int | None]
    start: Callable[[], object]
    stop: Callable[[], object]
    wipe: Callable[[], object]  # with the server stopped: an empty INBOX and no index, so the next SELECT is cold
    problems: Callable[[], list[str]]
    nofile: Callable[[], int | None] = lambda: None
    smtp_port: int | None = None  # for a delivery over SMTP during IDLE

    def fresh(self, mailbox: imap_mailbox.MailboxPlan) -> None:
        """Restarted with `mailbox` just delivered into new/ (written while stopped: outside anything timed)."""
        self.stop()
        self.wipe()
        imap_mailbox.write_maildir(self.maildir, mailbox, self.owner)
        self.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    def running_pid(self) -> int:
        pid = self.pid()
        if pid is None:
            raise ImapBenchError(f"{self.name} is not running")
        return pid


def wipe_postkontor_mailbox(maildir: Path) -> None:
    """The user's whole Maildir, its index (postkontor-index.sqlite3 and its WAL) and folders included."""
    if maildir.exists():
        shutil.rmtree(maildir)
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, mode=0o700)


def run_mailbox(
    server: ImapServer, mailbox: imap_mailbox.MailboxPlan, *, trace_opens: bool, timeout: float, notes: list[str]
) -> dict[str, Any]:
    """The imap scenario on one server; SEARCH answers that differ from the mailbox's truth go to `notes`."""
    server.fresh(mailbox)
    pid = server.running_pid()
    sampler = procstat.PeakSampler(pid, interval=0.2, max_duration=timeout + 60, pss_interval=1.0).start()
    try:
        figures = imap_load.mailbox_run(
            server.host,
            server.imaps_port,
            server.user,
            server.password,
            pid=pid,
            maildir=server.maildir,
            plan=mailbox,
            trace_opens=trace_opens,
            timeout=timeout,
        )
    finally:
        peak = sampler.stop()
    figures |= {"peak_rss_mib": peak / MIB, "peak_pss_mib": sampler.peak_pss / MIB}
    for name in mailbox.searches:
        hits, expected = figures[f"search_{name}_hits"], figures[f"search_{name}_expected"]
        if hits != expected:
            notes.append(f"imap {server.name}: SEARCH {name} found {hits}, the mailbox has {expected}")
    if "warm_fetch_opens_error" in figures:
        notes.append(f"imap {server.name}: opened files not counted: {figures['warm_fetch_opens_error']}")
    return figures


def _prime(server: ImapServer, timeout: float) -> None:
    """One SELECT, so that adopting the INBOX (once per server) is not charged to the IDLE sessions."""
    client = imap_load.IMAPClient(server.host, server.imaps_port, timeout=timeout)
    try:
        client.command(f'LOGIN "{server.user}" "{server.password}"')
        client.command("SELECT INBOX")
        client.command("LOGOUT")
    finally:
        client.close()


def run_idle(
    server: ImapServer, mailbox: imap_mailbox.MailboxPlan, count: int, *, sender: str, timeout: float
) -> dict[str, Any]:
    """The imap-idle scenario on one server: figures of the three stages, prefixed plain_, tls_ and idle_.

    The first two stages tell what TLS itself costs: plain LOGIN is refused (LOGINDISABLED), so there is no IDLE
    session without TLS to compare with."""
    server.fresh(mailbox)
    limit = server.nofile()
    if limit is not None and limit < count + 100:
        raise ImapBenchError(f"{server.name} may open only {limit} files, fewer than {count} sessions need")
    figures: dict[str, Any] = {"inbox_messages": mailbox.count}
    stages: tuple[imap_load.Mode, ...] = ("plain", "tls", "idle")
    for stage in stages:
        if stage != "plain":
            server.restart()  # memory freed by the previous stage would otherwise hide this one's cost
        pid = server.running_pid()
        wakes: list[tuple[str, Callable[[], float]]] = []
        if stage == "idle":
            _prime(server, timeout)
            drop = functools.partial(imap_mailbox.deliver_file, server.maildir, mailbox.count + 1, server.owner)
            wakes.append(("wake", drop))
            if server.smtp_port is not None:
                smtp = functools.partial(imap_load.smtp_deliver, server.host, server.smtp_port, sender, server.user)
                wakes.append(("smtp_wake", smtp))
        time.sleep(0.5)  # a server just started may still be setting itself up: not the sessions' cost
        held = imap_load.hold_sessions(
            server.host,
            server.imap_port if stage == "plain" else server.imaps_port,
            count,
            mode=stage,
            pid=pid,
            user=server.user,
            password=server.password,
            wakes=wakes,
            exists=mailbox.count,
            sample=min(IDLE_WAKE_SAMPLE, count),
            setup_seconds=timeout,
        )
        figures |= {f"{stage}_{name}": value for name, value in asyncio.run(held).items()}
    # What TLS adds to a bare connection, as a share of what one more IDLE session costs (RSS, marginal).
    if figures["idle_marginal_rss_per_conn_bytes"] > 0:
        tls = figures["tls_marginal_rss_per_conn_bytes"] - figures["plain_marginal_rss_per_conn_bytes"]
        figures["tls_share"] = tls / figures["idle_marginal_rss_per_conn_bytes"]
    return figures
