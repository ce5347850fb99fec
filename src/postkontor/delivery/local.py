"""Materialise spooled messages: local recipients into Maildir, remote recipients into the outbound queue.

Runs in worker threads after the journal fsync. Both stores are idempotent by the spool id, so the same batch
can be replayed after a crash without duplicating anything. Maildir files are written without fsync: the spool
keeps the journal copy until it has synced the filesystem (`Materializer.sync`). Each local copy gets its own
`Return-Path` (RFC 5321 §4.4: added by the final delivery agent).
"""

from __future__ import annotations

from collections.abc import Callable

from postkontor.queue.store import NewMessage, QueueStore
from postkontor.spool.journal import SpoolMessage
from postkontor.store.accounts import Mailbox
from postkontor.store.durability import sync_filesystems
from postkontor.store.maildir import MaildirStore, maildir_unique
from postkontor.store.mailindex_core import removed_uniques


def return_path_header(sender: str) -> bytes:
    return b"Return-Path: <" + sender.encode() + b">\r\n"


class Materializer:
    def __init__(self, maildir: MaildirStore, queue: QueueStore, hostname: str) -> None:
        self._maildir = maildir
        self._queue = queue
        self._hostname = hostname
        # Called (from the worker thread) after remote recipients were queued: wakes the queue runner.
        self.on_queued: Callable[[], None] | None = None

    def sync(self) -> None:
        """Make everything materialised so far durable: called by the spool before it drops journal segments."""
        sync_filesystems([self._maildir.root, self._queue.directory])

    def __call__(self, messages: list[SpoolMessage], replay: bool) -> None:
        """Store a batch; `replay` (crash recovery) makes every store look for copies made before the crash."""
        items: list[tuple[Mailbox, str, bytes, str | None]] = []
        for message in messages:
            if message.local:
                stored = return_path_header(message.sender) + message.data
                seconds = int(message.received)
                for index, target in enumerate(message.local):
                    unique = maildir_unique(seconds, f"{message.spool_id}R{index}", self._hostname)
                    items.append((Mailbox(target.domain, target.localpart), unique, stored, target.folder))
        if items:
            # Replay skips copies a client expunged or moved after they were first written (before the crash).
            self._maildir.deliver_many(
                items, check_existing=replay, sync=False, removed=removed_uniques if replay else None
            )
        queued = [
            NewMessage(
                message.spool_id,
                message.sender,
                [target.address for target in message.remote],
                message.data,
                message.received,
                envid=message.envid,
                ret=message.ret,
                dsn={
                    target.address: (target.orcpt, None if target.notify is None else ",".join(target.notify))
                    for target in message.remote
                    if target.orcpt is not None or target.notify is not None
                },
                smtputf8=message.smtputf8,
                body_8bit=message.body_8bit,
            )
            for message in messages
            if message.remote
        ]
        if queued:
            # One transaction per batch: the queue database is shared with the other workers and the runner.
            self._queue.enqueue_many(queued, sync=False, repair=replay)
        if self.on_queued is not None and any(message.remote for message in messages):
            self.on_queued()
