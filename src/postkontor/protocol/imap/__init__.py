"""The sans-IO IMAP core (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1): command framing with literals, the command
parser, response serialisation and the mailbox-name codecs. No sockets here: `server.imap` is the adapter."""

from postkontor.protocol.imap.framing import (
    CommandFramer,
    FramingError,
    FramingEvent,
    NeedContinuation,
    RawCommand,
    RawLine,
)
from postkontor.protocol.imap.mailboxname import decode_mutf7, encode_mutf7
from postkontor.protocol.imap.parser import IMAPParseError, parse_command, parse_sequence_set

__all__ = [
    "CommandFramer",
    "FramingError",
    "FramingEvent",
    "IMAPParseError",
    "NeedContinuation",
    "RawCommand",
    "RawLine",
    "decode_mutf7",
    "encode_mutf7",
    "parse_command",
    "parse_sequence_set",
]
