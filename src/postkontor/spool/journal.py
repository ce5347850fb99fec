"""The append-only spool journal: how an accepted message becomes durable before its 250 reply.

Sessions that finish DATA at the same moment append their messages to the current segment file and one fsync
covers the whole batch (group commit). After the fsync the messages are materialised into mailboxes and the
outbound queue; a segment is deleted once every message in it has been materialised durably. At start-up every
segment still on disk is replayed; materialisation is idempotent (Maildir file names and queue ids derive from
the spool id), so a replay never delivers a message twice.

Record layout (all integers big-endian):

    magic "PKS1" | meta length u32 | data length u64 | crc32(meta + data) u32 | meta (JSON) | data

A crash can leave a torn record at the end of the last segment; it was never acknowledged (its fsync had not
returned), so replay stops there and truncates it.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from postkontor.store.durability import fsync_dir

MAGIC = b"PKS1"
_HEADER = struct.Struct(">4sIQI")
_SEGMENT_PREFIX = "segment-"
_SEGMENT_SUFFIX = ".journal"


class JournalError(Exception):
    """The journal could not be written; nothing in the failed batch is durable."""


@dataclass(frozen=True, slots=True)
class LocalTarget:
    domain: str
    localpart: str
    folder: str | None = None


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """A recipient for the outbound queue, with its RFC 3461 parameters."""

    address: str
    orcpt: str | None = None
    notify: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SpoolMessage:
    """A message accepted by a session, with its routing decided at RCPT time."""

    spool_id: str
    received: float  # UNIX time of acceptance
    sender: str  # "" for the null reverse-path
    local: tuple[LocalTarget, ...]
    remote: tuple[RemoteTarget, ...]
    data: bytes  # the message as stored, trace headers included, CRLF line ends
    smtputf8: bool = False  # the next hop must offer SMTPUTF8 (RFC 6531)
    body_8bit: bool = False  # declared BODY=8BITMIME (RFC 6152)
    envid: str | None = None  # RFC 3461 ENVID
    ret: str | None = None  # RFC 3461 RET

    def encode(self) -> bytes:
        meta = json.dumps(
            {
                "id": self.spool_id,
                "t": self.received,
                "from": self.sender,
                "local": [[t.domain, t.localpart, t.folder] for t in self.local],
                "remote": [[r.address, r.orcpt, None if r.notify is None else list(r.notify)] for r in self.remote],
                "utf8": self.smtputf8,
                "8bit": self.body_8bit,
                "envid": self.envid,
                "ret": self.ret,
            },
            separators=(",", ":"),
        ).encode()
        crc = zlib.crc32(self.data, zlib.crc32(meta))
        return b"".join((_HEADER.pack(MAGIC, len(meta), len(self.data), crc), meta, self.data))

    @classmethod
    def decode(cls, meta: bytes, data: bytes) -> SpoolMessage:
        fields = json.loads(meta)
        return cls(
            spool_id=str(fields["id"]),
            received=float(fields["t"]),
            sender=str(fields["from"]),
            local=tuple(LocalTarget(str(d), str(lp), None if f is None else str(f)) for d, lp, f in fields["local"]),
            remote=tuple(
                RemoteTarget(str(a), None if o is None else str(o), None if n is None else tuple(map(str, n)))
                for a, o, n in fields["remote"]
            ),
            data=data,
            smtputf8=bool(fields.get("utf8", False)),
            body_8bit=bool(fields.get("8bit", False)),
            envid=None if fields.get("envid") is None else str(fields["envid"]),
            ret=None if fields.get("ret") is None else str(fields["ret"]),
        )


def _segment_number(path: Path) -> int:
    return int(path.name[len(_SEGMENT_PREFIX) : -len(_SEGMENT_SUFFIX)])


class Journal:
    """Segment files in one directory. Not thread-safe: one writer thread owns `append`."""

    def __init__(self, directory: Path, *, segment_size: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.segment_size = segment_size
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd: int | None = None
        self._offset = 0
        self.segment = 0

    def segments(self) -> list[Path]:
        found = [
            p
            for p in self.directory.iterdir()
            if p.name.startswith(_SEGMENT_PREFIX) and p.name.endswith(_SEGMENT_SUFFIX)
        ]
        return sorted(found, key=_segment_number)

    def replay(self) -> Iterator[tuple[int, SpoolMessage]]:
        """Yield (segment number, message) for every complete record on disk; truncate a torn tail."""
        for path in self.segments():
            number = _segment_number(path)
            for message in self._read_segment(path):
                yield number, message

    def _read_segment(self, path: Path) -> Iterator[SpoolMessage]:
        with open(path, "rb") as f:
            content = f.read()
        offset = 0
        end = len(content)
        while offset < end:
            if end - offset < _HEADER.size:
                break
            magic, meta_len, data_len, crc = _HEADER.unpack_from(content, offset)
            body_start = offset + _HEADER.size
            body_end = body_start + meta_len + data_len
            if magic != MAGIC or body_end > end:
                break
            meta = content[body_start : body_start + meta_len]
            data = content[body_start + meta_len : body_end]
            if zlib.crc32(data, zlib.crc32(meta)) != crc:
                break
            yield SpoolMessage.decode(meta, data)
            offset = body_end
        if offset < end:
            # Torn tail from a crash mid-append: never acknowledged, so drop it.
            os.truncate(path, offset)

    def open_new_segment(self) -> int:
        """Start a fresh segment after the highest on disk; its directory entry is made durable first."""
        self.close()
        existing = self.segments()
        self.segment = (_segment_number(existing[-1]) + 1) if existing else 1
        path = self.path_of(self.segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._offset = 0
        fsync_dir(self.directory)
        return self.segment

    def path_of(self, segment: int) -> Path:
        return self.directory / f"{_SEGMENT_PREFIX}{segment:08d}{_SEGMENT_SUFFIX}"

    def append(self, records: list[bytes]) -> int:
        """Write a batch and fsync it. Returns the segment it went into. On failure the batch is cut off again."""
        if self._fd is None:
            self.open_new_segment()
        assert self._fd is not None
        fd = self._fd
        blob = memoryview(b"".join(records))
        start = self._offset
        try:
            written = 0
            while written < len(blob):
                written += os.write(fd, blob[written:])
            os.fsync(fd)
        except OSError as exc:
            # A partial record would corrupt later appends to this segment: cut back to the last good end.
            try:
                os.ftruncate(fd, start)
                os.fsync(fd)
            except OSError:
                # Cannot even truncate: abandon this segment; replay stops at the torn record.
                self.close()
            raise JournalError(f"spool journal write failed: {exc.strerror or exc}") from exc
        self._offset = start + len(blob)
        return self.segment

    @property
    def should_rotate(self) -> bool:
        return self._offset >= self.segment_size

    def remove_segment(self, segment: int) -> None:
        try:
            os.unlink(self.path_of(segment))
        except FileNotFoundError:
            return
        fsync_dir(self.directory)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
