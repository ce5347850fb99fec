"""The benchmark's IMAP mailbox: deterministic, realistic messages written into a Maildir as an MDA would.

`build_messages` makes ~3-5 KB messages (CRLF line ends, as postkontor delivers them) with varied From/Subject/
Date, two Received lines and a DKIM-Signature, every 25th multipart/alternative and every 60th multipart/mixed
with a base64 attachment, and some RFC 2047 encoded words (a display name, subjects). Known words occur in a known
number of messages, so the benchmark checks every SEARCH answer against the truth, for every server measured.
`write_maildir` puts them into new/ (tmp/ first, then rename) with the message's date as mtime: the internal
date of Maildir servers. The same arguments give the same bytes, so every server gets an identical mailbox.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

FIRST = "Anna Bernd Carla David Emma Felix Greta Hannes Ida Jonas Klara Lukas Mia Noah Olga Paul Rosa Simon Tara Uwe"
LAST = "Becker Fischer Hoffmann Keller Lange Meyer Neumann Richter Schmidt Schulz Wagner Weber Wolf Zimmermann"
DOMAINS = ("example.org", "example.net", "mail.example.com", "lists.example.org", "corp.example")
TOPICS = (
    "project kickoff",
    "release planning",
    "lunch on Friday",
    "server migration",
    "budget review",
    "travel booking",
    "conference talk",
    "hiring pipeline",
    "backup report",
    "team offsite",
    "security update",
    "customer feedback",
)
_WORDS = (
    "the quick brown fox jumps over a lazy dog while we schedule meeting notes about deployment metrics and "
    "customer requests for next week please review attached draft before thursday thanks regards team status "
    "update pending items blocked waiting approval budget numbers look fine overall progress is steady"
)
WORDS = _WORDS.split()
# Search targets: each occurs exactly where the generator puts it (no other From/Subject/body holds the word).
FROM_WORD, FROM_EVERY, FROM_AT = "zofia", 37, 5
SUBJECT_WORD, SUBJECT_EVERY, SUBJECT_AT = "invoice", 23, 7
BODY_WORD, BODY_EVERY, BODY_AT = "xylophone", 101, 3


@dataclass(frozen=True)
class Message:
    filename: str
    data: bytes
    mtime: float


@dataclass
class MailboxPlan:
    messages: list[Message]
    # search name -> (criteria as sent after UID SEARCH, number of messages that must match)
    searches: dict[str, tuple[str, int]]

    @property
    def count(self) -> int:
        return len(self.messages)

    @property
    def octets(self) -> int:
        return sum(len(message.data) for message in self.messages)


def _paragraphs(rng: random.Random, octets: int, extra: str | None) -> str:
    lines: list[str] = []
    size = 0
    while size < octets:
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 12))]
        if extra is not None and not lines:
            words.insert(rng.randint(0, len(words)), extra)
        line = " ".join(words).capitalize() + "."
        lines.append(line)
        size += len(line) + 2
        if rng.random() < 0.2:
            lines.append("")
    return "\r\n".join(lines) + "\r\n"


def _message(index: int, rng: random.Random, when: datetime.datetime) -> bytes:
    if index % FROM_EVERY == FROM_AT:
        name, address = "Zofia Nowak", f"zofia.nowak@{DOMAINS[index % len(DOMAINS)]}"
    else:
        first, last = rng.choice(FIRST.split()), rng.choice(LAST.split())
        name, address = f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(DOMAINS)}"
        if index % 17 == 0:
            name = "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?="
    topic = rng.choice(TOPICS)
    if index % SUBJECT_EVERY == SUBJECT_AT:
        subject = f"Invoice {index:05d} for {topic}"
    elif index % 13 == 0:
        subject = "=?UTF-8?B?" + base64.b64encode(f"Grüße zum Thema {topic}".encode()).decode() + "?="
    else:
        subject = rng.choice(("", "Re: ", "Fwd: ", "Re: Re: ")) + topic.capitalize() + f" #{rng.randint(1, 999)}"
    stamp = email.utils.format_datetime(when)
    host = rng.choice(DOMAINS)
    signature = base64.b64encode(rng.randbytes(180)).decode()
    headers = [
        "Return-Path: <" + address + ">",
        f"Received: from mx.{host} (mx.{host} [192.0.2.{index % 250 + 1}])\r\n\tby mail.bench.test with ESMTPS"
        f" id {index:08x}\r\n\tfor <demo@bench.test>; {stamp}",
        f"Received: from client.{host} by mx.{host} with ESMTPSA id {rng.getrandbits(48):012x}; {stamp}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={host}; s=mail;\r\n\th=from:to:subject:date;"
        f" bh={signature[:44]};\r\n\tb={signature[44:120]}\r\n\t {signature[120:]}",
        f"Message-ID: <{index}.{rng.getrandbits(40):010x}@{host}>",
        f"Date: {stamp}",
        f"From: {name} <{address}>",
        "To: Demo User <demo@bench.test>",
        f"Subject: {subject}",
        "MIME-Version: 1.0",
    ]
    if index % 7 == 0:
        headers.append(f"List-Id: <team.{host}>")
    body_word = BODY_WORD if index % BODY_EVERY == BODY_AT else None
    text = _paragraphs(rng, rng.randint(1800, 3600), body_word)
    if index % 25 == 0:
        boundary = f"=-alt-{index}"
        html = "<html><body><p>" + text.replace("\r\n", "<br>\r\n") + "</p></body></html>\r\n"
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
            f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}--{boundary}--\r\n"
        )
    elif index % 60 == 1:
        boundary = f"=-mixed-{index}"
        attachment = base64.encodebytes(rng.randbytes(1500)).decode().replace("\n", "\r\n")
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
            f"--{boundary}\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="report.pdf"\r\n\r\n{attachment}--{boundary}--\r\n'
        )
    else:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"]
        body = text
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def build_messages(count: int, seed: int = 2026) -> MailboxPlan:
    """`count` messages, the same bytes for the same arguments (so every server gets an identical mailbox)."""
    rng = random.Random(seed)
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    zones = [datetime.timezone(datetime.timedelta(hours=hours)) for hours in (-5, 0, 1, 2, 9)]
    messages: list[Message] = []
    for index in range(count):
        when = (start + datetime.timedelta(minutes=97 * index + rng.randint(0, 60))).astimezone(rng.choice(zones))
        data = _message(index, rng, when)
        mtime = when.timestamp() + rng.randint(1, 30)
        messages.append(Message(f"{int(mtime)}.M{index:06d}P{seed}.bench.test,S={len(data)}", data, mtime))

    def hits(every: int, at: int) -> int:
        return sum(1 for index in range(count) if index % every == at)

    searches = {
        "from": (f'FROM "{FROM_WORD}"', hits(FROM_EVERY, FROM_AT)),
        "subject": (f'SUBJECT "{SUBJECT_WORD}"', hits(SUBJECT_EVERY, SUBJECT_AT)),
        "unseen": ("UNSEEN", count),
        "body": (f'BODY "{BODY_WORD}"', hits(BODY_EVERY, BODY_AT)),
    }
    return MailboxPlan(messages, searches)


def write_maildir(maildir: Path, plan: MailboxPlan, owner: tuple[int, int] | None = None) -> None:
    """Delivers every message into maildir/new/ (tmp/ first, then rename) with its date as mtime; no fsync
    (the benchmark's mailbox need not survive a crash). `owner` (uid, gid) for a server running as another user."""
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp, new = maildir / "tmp", maildir / "new"
    for message in plan.messages:
        path = tmp / message.filename
        with open(path, "wb") as handle:
            handle.write(message.data)
        os.utime(path, (message.mtime, message.mtime))
        if owner is not None:
            os.chown(path, *owner)
        os.rename(path, new / message.filename)
    if owner is not None:
        for path in (maildir, *(maildir / sub for sub in ("cur", "new", "tmp"))):
            os.chown(path, *owner)


def message_bytes(number: int) -> bytes:
    """One more message like the others, dated now (for deliveries during a measurement)."""
    return _message(number, random.Random(number), datetime.datetime.now(datetime.UTC))


def deliver_file(maildir: Path, number: int, owner: tuple[int, int] | None = None) -> float:
    """One more message, dropped into new/ as an MDA would; returns perf_counter() right after the rename."""
    data = message_bytes(number)
    name = f"{int(time.time())}.M{number:06d}Pwake.bench.test,S={len(data)}"
    path = maildir / "tmp" / name
    with open(path, "wb") as handle:
        handle.write(data)
    if owner is not None:
        os.chown(path, *owner)
    os.rename(path, maildir / "new" / name)
    return time.perf_counter()
