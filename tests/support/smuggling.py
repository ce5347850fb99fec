"""SECURITY-CASES 1-2 (SMTP smuggling, CVE-2023-51764 family): line endings that look like the end of DATA to
some server but are not <CRLF>.<CRLF> (RFC 5321 §2.3.8, §4.1.1.4). Shared by the engine and the socket tests."""

from __future__ import annotations

FAKE_ENDINGS: list[bytes] = [
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\r\n.\r\r\n",
]
FAKE_ENDING_IDS: list[str] = [ending.hex() for ending in FAKE_ENDINGS]
