"""`postkontor queue ...`: list, show, flush, remove and bounce messages of the outbound queue (RFC 5321 §4.5.4).

Everything printed that came from a message or a remote server is passed through `printable` first: a queued
message's headers or a hostile server's reply must not be able to send escape sequences to the terminal.
"""

from __future__ import annotations

import argparse
import time

from postkontor.admin import queue as queue_admin
from postkontor.config.model import Config
from postkontor.queue.store import QueueEntry, QueueRecipient

_SHOWN_RECIPIENTS = 3  # `queue list` names this many recipients of a message, then counts the rest


def printable(text: str) -> str:
    """Control and other unprintable characters as `\\xNN` escapes; tabs stay."""
    return "".join(char if char.isprintable() or char == "\t" else f"\\x{ord(char):02x}" for char in text)


def format_duration(seconds: float) -> str:
    """ "45s", "12m", "3h05m", "2d04h": short enough for a column."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(timestamp))


def _next_try(entry: QueueEntry, now: float) -> str:
    queued = [r.next_attempt for r in entry.recipients if r.status == "queued"]
    if not queued:
        return "-"  # nothing left to try: waiting for its report
    due = min(queued)
    return "now" if due <= now else f"in {format_duration(due - now)}"


def _last_error(entry: QueueEntry) -> str:
    # The error of a recipient still being retried says most about why the message is still here.
    ordered = sorted(entry.recipients, key=lambda r: r.status != "queued")
    return next((r.last_error for r in ordered if r.last_error), None) or ""


def _recipient_summary(recipient: QueueRecipient) -> str:
    tries = f"{recipient.attempts} attempt" + ("" if recipient.attempts == 1 else "s")
    return f"{recipient.recipient} ({recipient.status}, {tries})"


def list_lines(entries: list[QueueEntry], now: float) -> list[str]:
    """One aligned line per message, with a heading."""
    rows = [("ID", "AGE", "SENDER", "RECIPIENTS", "NEXT TRY", "LAST ERROR")]
    for entry in entries:
        shown = [_recipient_summary(r) for r in entry.recipients[:_SHOWN_RECIPIENTS]]
        hidden = len(entry.recipients) - len(shown)
        if hidden > 0:
            shown.append(f"+{hidden} more")
        rows.append(
            (
                entry.id,
                format_duration(now - entry.created),
                f"<{entry.sender}>",
                ", ".join(shown),
                _next_try(entry, now),
                _last_error(entry),
            )
        )
    cleaned = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[column]) for row in cleaned) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in cleaned
    ]


def show_lines(entry: QueueEntry, headers: bytes, now: float) -> list[str]:
    """The envelope, every recipient's state, then the message's header block."""
    options = [f"ENVID={entry.envid}" if entry.envid is not None else "", f"RET={entry.ret}" if entry.ret else ""]
    options += ["SMTPUTF8" if entry.smtputf8 else "", "BODY=8BITMIME" if entry.body_8bit else ""]
    lines = [
        f"message     {entry.id}",
        f"sender      <{entry.sender}>",
        f"arrived     {format_time(entry.created)} ({format_duration(now - entry.created)} ago)",
        f"size        {entry.size} octets",
        f"options     {' '.join(option for option in options if option) or '-'}",
        f"delay note  {'sent' if entry.warned else 'not sent'}",
        "recipients",
    ]
    for r in entry.recipients:
        lines.append(f"  {r.recipient}")
        lines.append(f"    status      {r.status}, {r.attempts} attempt{'' if r.attempts == 1 else 's'}")
        if r.status == "queued":
            due = "now" if r.next_attempt <= now else f"in {format_duration(r.next_attempt - now)}"
            lines.append(f"    next try    {format_time(r.next_attempt)} ({due})")
        if r.last_attempt is not None:
            lines.append(f"    last try    {format_time(r.last_attempt)}")
        if r.last_error:
            via = f" (from {r.remote_mta})" if r.remote_mta else ""
            lines.append(f"    last error  {r.last_error}{via}")
        if r.dsn_status and r.status != "queued":
            lines.append(f"    dsn status  {r.dsn_status}")
        if r.orcpt or r.notify:
            dsn = [f"ORCPT={r.orcpt}" if r.orcpt else "", f"NOTIFY={r.notify}" if r.notify else ""]
            lines.append(f"    dsn         {' '.join(item for item in dsn if item)}")
    lines.append("headers")
    text = headers.decode("utf-8", "replace").replace("\r\n", "\n")
    lines.extend(f"  {line}" for line in text.split("\n") if text)
    return [printable(line) for line in lines]


def run_queue_command(args: argparse.Namespace, config: Config) -> int:
    with queue_admin.open_queue(config) as queue:
        now = time.time()
        if args.action == "list":
            entries = queue.list_entries()
            print("\n".join(list_lines(entries, now)) if entries else "queue is empty")
        elif args.action == "show":
            entry = queue_admin.get_entry(queue, args.id)
            print("\n".join(show_lines(entry, queue_admin.read_headers(queue, args.id), now)))
        elif args.action == "flush":
            count = queue_admin.flush(queue, args.id)
            what = f"of {args.id} " if args.id else ""
            print(f"{count} queued recipient{'' if count == 1 else 's'} {what}will be retried now")
        elif args.action == "remove":
            queue_admin.remove(queue, args.id)
            print(f"removed {args.id} (no notification is sent)")
        else:
            entry = queue_admin.get_entry(queue, args.id)
            count = queue_admin.bounce(queue, args.id)
            if count:
                # RFC 3461 §6.2: no report ever goes to the null reverse-path.
                notice = "the server notifies the sender" if entry.sender else "no notification (null sender)"
                print(f"bounced {count} recipient{'' if count == 1 else 's'} of {args.id}; {notice}")
            else:
                print(f"{args.id} has no queued recipients left to bounce")
    return 0


def add_queue_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """The `queue` command group; the caller sets its handler."""
    queue = commands.add_parser("queue", parents=[common], help="look at and manage the outbound queue")
    actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="list queued messages")
    actions.add_parser("show", parents=[common], help="show a message's envelope, recipients and headers").add_argument(
        "id"
    )
    flush = actions.add_parser("flush", parents=[common], help="retry now (all messages, or one)")
    flush.add_argument("id", nargs="?")
    actions.add_parser("remove", parents=[common], help="delete a message without notifying").add_argument("id")
    actions.add_parser("bounce", parents=[common], help="give up on a message and notify its sender").add_argument("id")
    return queue
