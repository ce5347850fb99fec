"""The sans-IO SMTP engine (RFC 5321 and its extensions): server state machine, command and reply parsing,
DATA/BDAT framing and dot-stuffing for the client role."""

from postkontor.protocol.smtp.client import Extensions, SMTPClientConnection, encode_xtext, parse_ehlo
from postkontor.protocol.smtp.commands import SMTPSyntaxError
from postkontor.protocol.smtp.events import (
    AuthRequest,
    DecisionEvent,
    Event,
    Hello,
    MailFrom,
    MailParams,
    MessageReceived,
    RcptParams,
    RcptTo,
    StartTLSRequested,
)
from postkontor.protocol.smtp.framing import DataReader, ReceiveBuffer, check_message, dot_stuff, unstuff
from postkontor.protocol.smtp.reply import Reply, ReplyParser, SMTPProtocolError
from postkontor.protocol.smtp.server import ServerSettings, SMTPServerConnection

__all__ = [
    "AuthRequest",
    "DataReader",
    "DecisionEvent",
    "Event",
    "Extensions",
    "Hello",
    "MailFrom",
    "MailParams",
    "MessageReceived",
    "RcptParams",
    "RcptTo",
    "ReceiveBuffer",
    "Reply",
    "ReplyParser",
    "SMTPClientConnection",
    "SMTPProtocolError",
    "SMTPServerConnection",
    "SMTPSyntaxError",
    "ServerSettings",
    "StartTLSRequested",
    "check_message",
    "dot_stuff",
    "encode_xtext",
    "parse_ehlo",
    "unstuff",
]
