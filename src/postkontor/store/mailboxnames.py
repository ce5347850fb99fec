"""IMAP mailbox names (RFC 9051 §5.1) to Maildir++ folder directories and back.

IMAP names use "/" as hierarchy separator and arrive as Unicode (decoded from modified UTF-7, RFC 9051 §5.1.3,
by the protocol layer). "INBOX" is case-insensitive (§5.1) and so is the "INBOX" first component of its children.
On disk the folder "A/B" is the directory ".A.B" beside the INBOX's cur/ new/ tmp/ (Courier's Maildir++);
"INBOX/x" is ".INBOX.x". Inside a component "." (the on-disk separator), "%" (the escape character) and any
non-printable character are written as "%XX" per UTF-8 octet, so "a.b" is ".a%2Eb"; printable Unicode stays UTF-8.

Refused with `MailboxError("CANNOT")`: empty components ("a//b", leading or trailing "/"), components "." and
"..", control characters (NUL, CR, LF, ...) and unpaired surrogates, the LIST wildcards "*" and "%" (RFC 9051
§6.3.9), names over 255 characters or 16 levels, and names whose directory name would exceed 255 octets
(NAME_MAX). Decision for the spec's "starting with '~'?": a component starting with "~" is refused rather than
escaped, as Dovecot refuses "~" names without mail_full_filesystem_access (they look like home directories to
every tool that expands them).
"""

from __future__ import annotations

import re
import unicodedata

from postkontor.store.mailindex_types import MailboxError

MAX_NAME_CHARS = 255
MAX_DEPTH = 16
_NAME_MAX = 255  # octets in one directory entry (Linux NAME_MAX)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})  # control characters, unpaired surrogates
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def _cannot(text: str) -> MailboxError:
    return MailboxError("CANNOT", text)


def normalize(name: str) -> str:
    """The canonical form of a valid IMAP mailbox name ("inbox/x" -> "INBOX/x"); MailboxError("CANNOT") otherwise."""
    if not name:
        raise _cannot("empty mailbox name")
    if len(name) > MAX_NAME_CHARS:
        raise _cannot("mailbox name too long")
    if "*" in name or "%" in name:
        raise _cannot("mailbox names cannot contain the wildcards * and %")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise _cannot("mailbox hierarchy too deep")
    for part in parts:
        if not part:
            raise _cannot("empty hierarchy level in mailbox name")
        if part in (".", ".."):
            raise _cannot("mailbox name components cannot be . or ..")
        if part.startswith("~"):
            raise _cannot("mailbox name components cannot start with ~")
        if not part.isprintable() and any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in part):
            raise _cannot("control characters in mailbox name")
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    normalized = "/".join(parts)
    if normalized != "INBOX" and len(to_dirname_unchecked(normalized).encode()) > _NAME_MAX:
        raise _cannot("mailbox name too long for the file system")
    return normalized


def _escape_component(part: str) -> str:
    if part.isprintable() and "." not in part and "%" not in part:
        return part  # the common case: nothing to escape
    out: list[str] = []
    for char in part:
        if char in ".%" or not char.isprintable():
            out.extend(f"%{octet:02X}" for octet in char.encode())
        else:
            out.append(char)
    return "".join(out)


def to_dirname_unchecked(name: str) -> str:
    """The Maildir++ directory of an already normalised name other than INBOX (".A.B")."""
    return "." + ".".join(_escape_component(part) for part in name.split("/"))


def to_dirname(name: str) -> str:
    """ "" for the INBOX (its directory is the maildir itself), else ".A.B"; validates and normalises first."""
    normalized = normalize(name)
    return "" if normalized == "INBOX" else to_dirname_unchecked(normalized)


def from_dirname(dirname: str) -> str | None:
    """The IMAP name of a Maildir++ folder directory, or None if it is not one we could have made (skip it)."""
    if not dirname.startswith(".") or dirname.startswith("..") or dirname.endswith("."):
        return None
    parts: list[str] = []
    for raw in dirname[1:].split("."):
        if "%" in raw:
            if raw.count("%") != len(_ESCAPE.findall(raw)):
                return None  # a stray "%" we never write
            pieces = _ESCAPE.split(raw)  # text, hex, text, hex, ..., text
            data = bytearray()
            try:
                for index, piece in enumerate(pieces):
                    if index % 2:
                        data.append(int(piece, 16))
                    else:
                        data.extend(piece.encode())
                raw = data.decode()
            except UnicodeError:  # not UTF-8 (os.listdir hands such names over surrogate-escaped)
                return None
        parts.append(raw)
    name = "/".join(parts)
    try:
        normalized = normalize(name)
    except MailboxError:
        return None
    if normalized == "INBOX":
        return None  # ".INBOX" is not the INBOX (that is the maildir itself)
    # Only the one spelling we write maps back (no aliases such as ".inbox.x" or an escaped printable char).
    if to_dirname_unchecked(normalized) != dirname:
        return None
    return normalized


def parent_names(name: str) -> list[str]:
    """The ancestors of a normalised name, outermost first ("a/b/c" -> ["a", "a/b"])."""
    parts = name.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]
