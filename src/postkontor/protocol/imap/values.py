"""The value shapes IMAP responses are built from (RFC 9051 §4): what ENVELOPE, BODYSTRUCTURE and the other
parenthesised responses are made of before `protocol.imap.response` serialises them.

- None     -> NIL
- int      -> number
- str/bytes -> string: quoted when it can be, otherwise a literal (str is UTF-8 encoded first)
- Atom     -> written as is (flags such as \\Seen, keywords, NIL-free tokens like "7BIT" that must not be quoted)
- list     -> parenthesised list, elements separated by one space
- Concat   -> its elements back to back, no parentheses (multipart bodies, address lists)
"""

from __future__ import annotations

from typing import TypeAlias, Union


class Atom(str):
    """A token written without quotes; a str subclass so that `isinstance` tells it from a string value."""

    __slots__ = ()


class Concat(list["IMAPValue"]):
    """Values written one after the other with no separator and no parentheses of their own: RFC 9051 §9 joins
    the bodies of a multipart (`1*body`) and the addresses of an address list (`1*address`) without spaces."""

    __slots__ = ()


IMAPValue: TypeAlias = Union[int, str, bytes, Atom, list["IMAPValue"], None]  # noqa: UP007 (recursive alias)

__all__ = ["Atom", "Concat", "IMAPValue"]
