"""Fixtures for the IMAP session engine tests (see imap_session_harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from imap_session_harness import World


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        await w.close()
