"""The sans-IO POP3 engine (RFC 1939 with CAPA, RFC 2449; STLS, RFC 2595; AUTH, RFC 5034): server state
machine, command line framing, byte-stuffing and TOP."""

from postkontor.protocol.pop3.engine import (
    POP3ProtocolError,
    POP3ServerConnection,
    POP3Settings,
    POP3State,
    RejectCode,
)
from postkontor.protocol.pop3.events import (
    Closed,
    DecisionEvent,
    Event,
    LoginRequest,
    RetrieveRequest,
    StartTLSRequested,
    UpdateRequest,
)
from postkontor.protocol.pop3.framing import LineReader, stuff_message, top_of_message

__all__ = [
    "Closed",
    "DecisionEvent",
    "Event",
    "LineReader",
    "LoginRequest",
    "POP3ProtocolError",
    "POP3ServerConnection",
    "POP3Settings",
    "POP3State",
    "RejectCode",
    "RetrieveRequest",
    "StartTLSRequested",
    "UpdateRequest",
    "stuff_message",
    "top_of_message",
]
