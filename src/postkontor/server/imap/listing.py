"""LIST and LSUB responses (RFC 9051 §6.3.9, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE, RFC 5819 LIST-STATUS)."""

from __future__ import annotations

import re
from functools import lru_cache

from postkontor.protocol.imap import commands as c
from postkontor.protocol.imap.response import encode_mailbox
from postkontor.store.mailindex import MailboxInfo

_SEPARATOR = "/"


@lru_cache(maxsize=256)
def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 9051 §6.3.9: "*" matches anything, "%" anything but the separator; INBOX matches without case."""
    full = pattern if pattern.startswith(_SEPARATOR) or not reference else reference + pattern
    out = []
    for char in full:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(char))
    regex = "".join(out)
    if full[:5].upper() == "INBOX":
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex, re.DOTALL)


def _matches(reference: str, patterns: tuple[str, ...], name: str) -> bool:
    return any(_pattern(reference, pattern).fullmatch(name) is not None for pattern in patterns)


def list_responses(command: c.List, mailboxes: list[MailboxInfo], utf8: bool) -> list[tuple[bytes, str | None]]:
    """(LIST line, mailbox name for a following STATUS line or None)."""
    if command.patterns == ("",):
        # RFC 9051 §6.3.9: an empty pattern asks for the hierarchy separator and the root.
        return [(b'* LIST (\\Noselect) "/" ""\r\n', None)]
    options = set(command.select_options)
    returns = set(command.return_options)
    subscribed_only = "SUBSCRIBED" in options
    show_subscribed = subscribed_only or "SUBSCRIBED" in returns
    special_only = "SPECIAL-USE" in options
    out: list[tuple[bytes, str | None]] = []
    for mailbox in mailboxes:
        if not _matches(command.reference, command.patterns, mailbox.name):
            continue
        if subscribed_only and not mailbox.subscribed:
            continue
        if not mailbox.exists and not subscribed_only:
            continue  # a subscription without its mailbox shows only in LIST (SUBSCRIBED) and LSUB
        if special_only and mailbox.special_use is None:
            continue
        attributes = ["\\HasChildren" if mailbox.has_children else "\\HasNoChildren"]
        if not mailbox.exists:
            attributes = ["\\NonExistent"]
        if show_subscribed and mailbox.subscribed:
            attributes.append("\\Subscribed")
        if mailbox.special_use is not None:
            attributes.append(mailbox.special_use)
        line = b"* LIST (" + " ".join(attributes).encode() + b') "/" ' + encode_mailbox(mailbox.name, utf8) + b"\r\n"
        out.append((line, mailbox.name if mailbox.exists else None))
    return out


def lsub_responses(command: c.Lsub, mailboxes: list[MailboxInfo], utf8: bool) -> list[bytes]:
    out: list[bytes] = []
    for mailbox in mailboxes:
        if mailbox.subscribed and _matches(command.reference, (command.pattern,), mailbox.name):
            attributes = b"()" if mailbox.exists else b"(\\Noselect)"
            out.append(b"* LSUB " + attributes + b' "/" ' + encode_mailbox(mailbox.name, utf8) + b"\r\n")
    return out
