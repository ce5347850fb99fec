"""Mailboxes as IMAP and POP3 sessions of one worker process share them.

One `MailIndex` per user per process, shared by all of that user's sessions (so 1,000 IDLE sessions cost one
index each only per distinct user), opened on login and closed with the last session. Index calls touch SQLite
and files, so they run on a small thread pool, never on the event loop.

Change notification: SMTP delivery happens in any worker (even another process), so sessions waiting in IDLE learn
of changes by polling: every `POLL_INTERVAL` seconds one pooled call looks at each watched mailbox's fingerprint
(mtimes of `new/` and `cur/`, and the index's SQLite data_version, which moves with commits by other processes)
and wakes the sessions of those that changed. Sessions of this process that change a mailbox wake their siblings
at once (`changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from postkontor.store.accounts import Mailbox
from postkontor.store.maildir import MaildirStore
from postkontor.store.mailindex import MailIndex

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # seconds; IDLE must report a delivery within a second
_P = ParamSpec("_P")
_T = TypeVar("_T")

Fingerprint = tuple[int, int, int]
Listener = Callable[[], None]


@dataclass
class _User:
    index: MailIndex
    sessions: int = 0
    # mailbox name -> listeners (one per session watching it)
    watchers: dict[str, set[Listener]] = field(default_factory=dict)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)


def mailbox_of(address: str) -> Mailbox:
    localpart, _, domain = address.rpartition("@")
    return Mailbox(domain, localpart)


class MailboxHub:
    def __init__(self, maildir: MaildirStore, hostname: str, *, threads: int = 4) -> None:
        self.maildir = maildir
        self.hostname = hostname
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mailbox")
        self._users: dict[str, _User] = {}
        self._opening: dict[str, asyncio.Future[_User]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    # --- users ------------------------------------------------------------------------------------------------
    async def acquire(self, address: str, quota: int) -> MailIndex:
        """The user's index (opened on first use, with INBOX and the special-use folders if new)."""
        user = self._users.get(address)
        if user is None:
            pending = self._opening.get(address)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._opening[address] = pending
                try:
                    path = self.maildir.path_for(mailbox_of(address))
                    index = await self.run(MailIndex, path, hostname=self.hostname, quota=quota)
                    user = _User(index)
                    self._users[address] = user
                    pending.set_result(user)
                except BaseException as exc:
                    pending.set_exception(exc)
                    pending.exception()  # retrieved: other waiters re-raise it themselves
                    raise
                finally:
                    del self._opening[address]
            else:
                user = await asyncio.shield(pending)
        user.sessions += 1
        return user.index

    def release(self, address: str) -> None:
        user = self._users.get(address)
        if user is None:
            return
        user.sessions -= 1
        if user.sessions <= 0:
            del self._users[address]
            self._executor.submit(user.index.close)

    # --- change notification ------------------------------------------------------------------------------------
    def watch(self, address: str, mailbox: str, listener: Listener) -> None:
        user = self._users[address]
        user.watchers.setdefault(mailbox, set()).add(listener)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def unwatch(self, address: str, mailbox: str, listener: Listener) -> None:
        user = self._users.get(address)
        if user is None:
            return
        listeners = user.watchers.get(mailbox)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del user.watchers[mailbox]
                user.fingerprints.pop(mailbox, None)

    def changed(self, address: str, mailbox: str, origin: Listener | None = None) -> None:
        """A session of this process changed `mailbox`: wake the other sessions watching it."""
        user = self._users.get(address)
        if user is None:
            return
        for listener in list(user.watchers.get(mailbox, ())):
            if listener is not origin:
                listener()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            watched = [(user, name) for user in self._users.values() for name in user.watchers]
            if not watched:
                continue
            try:
                current = await self.run(_fingerprints, watched)
            except Exception:
                log.exception("polling mailboxes for changes failed")
                continue
            for (user, name), fingerprint in zip(watched, current, strict=True):
                before = user.fingerprints.get(name)
                user.fingerprints[name] = fingerprint
                # No baseline yet: the change may have come between the watch and this first look, so wake.
                if before != fingerprint:
                    for listener in list(user.watchers.get(name, ())):
                        listener()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for user in self._users.values():
            with contextlib.suppress(Exception):
                user.index.close()
        self._users.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _fingerprints(watched: list[tuple[_User, str]]) -> list[Fingerprint]:
    out: list[Fingerprint] = []
    for user, name in watched:
        try:
            new, cur = user.index.watch_paths(name)
            version = user.index.data_version()
        except Exception:
            out.append((0, 0, 0))
            continue
        out.append((_mtime(new), _mtime(cur), version))
    return out


__all__ = ["POLL_INTERVAL", "MailboxHub", "mailbox_of"]
