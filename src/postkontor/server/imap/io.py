"""What an IMAP session needs from its connection: writing with back-pressure and reading continuation lines."""

from __future__ import annotations

from typing import Protocol


class SessionIO(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait until the client has taken enough of what we wrote (a client that stops reading is cut off)."""

    async def read_line(self) -> bytes | None:
        """The next raw line from the client (AUTHENTICATE responses); None when the connection is gone."""

    async def idle_wait(self) -> bytes | None:
        """During IDLE: the client's next line, or None when `wake` was called (or the connection is gone:
        `closed` tells which)."""

    def wake(self) -> None: ...

    @property
    def closed(self) -> bool: ...
