"""Administration of the outbound queue (RFC 5321 §4.5.4): look at it, retry, remove and bounce messages.

These work on `<data>/queue` directly, whether or not the server runs: the queue database is shared safely (SQLite
WAL, one short transaction per operation), and the running server notices a flush or a bounce within a second.
A bounce only marks the queued recipients failed (5.0.0, RFC 3463 §3.1); the server's queue runner then sends the
sender the RFC 3464 report, as for any other failure.
"""

from __future__ import annotations

from postkontor.admin.datadir import AdminError
from postkontor.config.model import Config
from postkontor.queue.store import QueueEntry, QueueError, QueueStore

_HEADER_LIMIT = 1024 * 1024  # `queue show` prints the header block; a body is never read past this


def open_queue(config: Config) -> QueueStore:
    try:
        return QueueStore(config.queue_dir)
    except QueueError as exc:
        raise AdminError(str(exc)) from None


def _missing(message_id: str) -> AdminError:
    return AdminError(f"no queued message {message_id}")


def get_entry(queue: QueueStore, message_id: str) -> QueueEntry:
    """The message, or AdminError for an id that is not queued (or could not be one)."""
    try:
        entry = queue.get(message_id)
    except ValueError:
        raise _missing(message_id) from None
    if entry is None:
        raise _missing(message_id)
    return entry


def read_headers(queue: QueueStore, message_id: str) -> bytes:
    """The header block of a queued message (empty if its file is gone)."""
    try:
        with queue.message_path(message_id).open("rb") as handle:
            head = handle.read(_HEADER_LIMIT)
    except FileNotFoundError:
        return b""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[:end]
    return head


def flush(queue: QueueStore, message_id: str | None) -> int:
    """Make the queued recipients of one message (or all) due now; how many recipients that was."""
    if message_id is None:
        return queue.flush(None)
    get_entry(queue, message_id)
    return queue.flush(message_id)


def bounce(queue: QueueStore, message_id: str) -> int:
    """Fail the queued recipients of a message, so the server reports them to the sender; how many there were."""
    get_entry(queue, message_id)
    return queue.request_bounce(message_id)


def remove(queue: QueueStore, message_id: str) -> QueueEntry:
    """Delete a message without any report; what it was."""
    entry = get_entry(queue, message_id)
    queue.remove(message_id)
    return entry
