"""SMTP command-line parsing: RFC 5321 §4.1.1-4.1.2 (verbs, paths, ESMTP parameters), RFC 1870 (SIZE),
RFC 6152 (BODY), RFC 6531 (SMTPUTF8), RFC 4954 §5 (AUTH=), RFC 3461 §4 (DSN: RET, ENVID, NOTIFY, ORCPT),
RFC 3030 (BDAT).

Every refusal is an `SMTPSyntaxError` carrying the exact reply to send, so the engine never has to guess
codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postkontor.message.address import Address, AddressError, parse_path, parse_reverse_path
from postkontor.protocol.smtp.events import MailParams, RcptParams
from postkontor.protocol.smtp.reply import Reply

__all__ = [
    "KNOWN_VERBS",
    "MAX_PARAMETERS",
    "Command",
    "SMTPSyntaxError",
    "decode_xtext",
    "parse_auth",
    "parse_bdat",
    "parse_command",
    "parse_hello",
    "parse_mail",
    "parse_rcpt",
]

KNOWN_VERBS = frozenset(
    {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP"}
    | {"STARTTLS", "AUTH"}
)
# No extension we offer defines more than six MAIL or RCPT parameters; the rest is abuse.
MAX_PARAMETERS = 10
# RFC 3461 §4.4: ENVID is at most 100 characters; §4.2: ORCPT at most 500.
MAX_ENVID = 100
MAX_ORCPT = 500
# RFC 1870 §6 and RFC 3030 §3: sizes are digits; more than 20 digits cannot be a real size.
_SIZE = re.compile(r"[0-9]{1,20}", re.ASCII)
_VERB = re.compile(rb"[A-Za-z]{1,16}")
# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*", re.ASCII)
# RFC 5321 §4.1.2 esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 §3.3 adds UTF8-non-ascii.
_VALUE = re.compile(r"[!-<>-~\u0080-\U0010ffff]+")
# RFC 3461 §4: xchar is "!" to "~" except "+" and "="; hexchar is "+" and two hexadecimal digits.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*", re.ASCII)
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# RFC 4422 §3.1: sasl-mech = 1*20mech-char
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,20}", re.ASCII)
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~.-]+", re.ASCII)
_SMTPUTF8_PARAM = re.compile(rb"(?:^| )SMTPUTF8(?: |$)", re.IGNORECASE)
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class SMTPSyntaxError(Exception):
    """A command that cannot be executed; `reply` is the answer to give."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(f"{code} {enhanced} {text}")
        self.reply = Reply(code, enhanced, text)


@dataclass(frozen=True, slots=True)
class Command:
    verb: str  # upper case, one of KNOWN_VERBS
    argument: str  # everything after the first space, outer spaces removed


def _param_error(text: str) -> SMTPSyntaxError:
    return SMTPSyntaxError(501, "5.5.4", text)


def parse_command(line: bytes, *, smtputf8: bool = False) -> Command:
    """Split a command line (without CRLF) into verb and argument.

    `smtputf8` says whether the current transaction uses SMTPUTF8; it only changes the reply to invalid UTF-8.
    """
    if not line:
        raise SMTPSyntaxError(500, "5.5.2", "Syntax error: empty command")
    if b"\x00" in line:
        raise SMTPSyntaxError(500, "5.5.2", "Syntax error: NUL in command")
    raw_verb, _, raw_argument = line.partition(b" ")
    verb = raw_verb.decode("ascii").upper() if _VERB.fullmatch(raw_verb) else ""
    if verb not in KNOWN_VERBS:
        raise SMTPSyntaxError(500, "5.5.1", "Command unrecognized")
    try:
        argument = raw_argument.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 6531 §3.2: with SMTPUTF8 the line must be valid UTF-8; 5.6.7 says the address was the trouble.
        if smtputf8 or (verb in ("MAIL", "RCPT") and _SMTPUTF8_PARAM.search(raw_argument)):
            raise SMTPSyntaxError(501, "5.6.7", "Invalid UTF-8 in command") from None
        raise SMTPSyntaxError(500, "5.5.2", "Syntax error: invalid UTF-8 in command") from None
    if _CONTROL.search(argument):
        raise SMTPSyntaxError(501, "5.5.2", "Syntax error: control characters in command")
    return Command(verb, argument.strip(" "))


def parse_hello(argument: str, verb: str = "EHLO") -> str:
    """RFC 5321 §4.1.1.1: EHLO/HELO need the client's domain or address literal. Its form is not enforced:
    many legitimate clients send bare host names, and the name is only ever recorded."""
    if not argument:
        raise SMTPSyntaxError(501, "5.5.4", f"Syntax: {verb} hostname")
    return argument


def _split_path(text: str) -> tuple[str, str]:
    """Separate the `<...>` path from the parameters; a quoted local part may contain `>` and spaces."""
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest
    quoted = False
    i = 1
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            rest = text[i + 1 :]
            if rest and not rest.startswith(" "):
                raise _param_error("Syntax error: a space must follow the address")
            return text[: i + 1], rest
        i += 1
    return text, ""


def _parameters(text: str, *, esmtp: bool) -> list[tuple[str, str | None]]:
    """RFC 5321 §4.1.2 Mail-parameters / Rcpt-parameters: esmtp-param *(SP esmtp-param)."""
    tokens = text.split()
    if not tokens:
        return []
    if not esmtp:
        # RFC 5321 §4.1.1.11 / RFC 1869: parameters exist only for clients that said EHLO.
        raise SMTPSyntaxError(555, "5.5.4", "Parameters not allowed after HELO")
    if len(tokens) > MAX_PARAMETERS:
        raise _param_error("Too many parameters")
    seen: set[str] = set()
    result: list[tuple[str, str | None]] = []
    for token in tokens:
        keyword, equals, value = token.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            raise _param_error("Syntax error in parameters")
        if equals and not _VALUE.fullmatch(value):
            raise _param_error(f"Syntax error in {keyword.upper()} parameter value")
        keyword = keyword.upper()
        if keyword in seen:
            raise _param_error(f"Duplicate {keyword} parameter")
        seen.add(keyword)
        result.append((keyword, value if equals else None))
    return result


def _unknown(keyword: str) -> SMTPSyntaxError:
    return SMTPSyntaxError(555, "5.5.4", f"Unsupported parameter {keyword}")


def _required(keyword: str, value: str | None) -> str:
    if value is None:
        raise _param_error(f"{keyword} needs a value")
    return value


def decode_xtext(value: str, what: str = "parameter") -> str:
    """RFC 3461 §4 xtext; the decoded text may hold no control characters (it may end up in a DSN header)."""
    if not _XTEXT.fullmatch(value):
        raise _param_error(f"Invalid xtext in {what}")
    raw = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), value).encode("latin-1")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _param_error(f"Invalid UTF-8 in {what}") from None
    if _CONTROL.search(decoded):
        raise _param_error(f"Control characters in {what}")
    return decoded


def _mail_params(text: str, *, esmtp: bool, dsn: bool) -> MailParams:
    size: int | None = None
    body: str | None = None
    smtputf8 = False
    auth: str | None = None
    ret: str | None = None
    envid: str | None = None
    for keyword, value in _parameters(text, esmtp=esmtp):
        if keyword == "SIZE":  # RFC 1870 §6
            if value is None or not _SIZE.fullmatch(value):
                raise _param_error("Syntax error in SIZE parameter")
            size = int(value)
        elif keyword == "BODY":  # RFC 6152 §2
            body = _required(keyword, value).upper()
            if body not in ("7BIT", "8BITMIME"):
                raise _param_error("Unsupported BODY type")
        elif keyword == "SMTPUTF8":  # RFC 6531 §3.4: no value
            if value is not None:
                raise _param_error("SMTPUTF8 takes no value")
            smtputf8 = True
        elif keyword == "AUTH":  # RFC 4954 §5: xtext, "<>" for an unknown submitter
            auth = decode_xtext(_required(keyword, value), "AUTH parameter")
        elif keyword == "RET" and dsn:  # RFC 3461 §4.3
            ret = _required(keyword, value).upper()
            if ret not in ("FULL", "HDRS"):
                raise _param_error("RET must be FULL or HDRS")
        elif keyword == "ENVID" and dsn:  # RFC 3461 §4.4
            envid = decode_xtext(_required(keyword, value), "ENVID parameter")
            if len(envid) > MAX_ENVID:
                raise _param_error("ENVID too long")
        else:
            raise _unknown(keyword)
    return MailParams(size=size, body=body, smtputf8=smtputf8, auth=auth, ret=ret, envid=envid)


def _rcpt_params(text: str, *, esmtp: bool, dsn: bool) -> RcptParams:
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for keyword, value in _parameters(text, esmtp=esmtp):
        if keyword == "NOTIFY" and dsn:  # RFC 3461 §4.1
            items = tuple(item.upper() for item in _required(keyword, value).split(","))
            valid = items == ("NEVER",) or (set(items) <= _NOTIFY_VALUES and len(set(items)) == len(items))
            if not valid:
                raise _param_error("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
            notify = items
        elif keyword == "ORCPT" and dsn:  # RFC 3461 §4.2: addr-type ";" xtext
            addr_type, semicolon, encoded = _required(keyword, value).partition(";")
            if not semicolon or not _ADDR_TYPE.fullmatch(addr_type) or not encoded:
                raise _param_error("ORCPT must be addr-type;xtext")
            orcpt = f"{addr_type};{decode_xtext(encoded, 'ORCPT parameter')}"
            if len(orcpt) > MAX_ORCPT:
                raise _param_error("ORCPT too long")
        else:
            raise _unknown(keyword)
    return RcptParams(notify=notify, orcpt=orcpt)


def _path_argument(argument: str, prefix: str, usage: str) -> tuple[str, str]:
    if argument[: len(prefix)].upper() != prefix:
        raise SMTPSyntaxError(501, "5.5.4", usage)
    rest = argument[len(prefix) :]
    # A single space after the colon is a common client bug; tolerate exactly that much.
    if rest.startswith(" "):
        rest = rest[1:]
    return _split_path(rest)


def parse_mail(argument: str, *, esmtp: bool, dsn: bool = False) -> tuple[Address | None, MailParams]:
    """RFC 5321 §4.1.1.2: `FROM:<reverse-path> [SP Mail-parameters]`. None is the null sender `<>`."""
    path, rest = _path_argument(argument, "FROM:", "Syntax: MAIL FROM:<address>")
    params = _mail_params(rest, esmtp=esmtp, dsn=dsn)
    try:
        sender = parse_reverse_path(path, smtputf8=params.smtputf8)
    except AddressError as exc:
        if exc.kind == "needs_smtputf8":
            raise SMTPSyntaxError(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8") from None
        raise SMTPSyntaxError(501, "5.1.7", f"Bad sender address syntax: {exc.message}") from None
    return sender, params


def has_relay_syntax(path: str) -> bool:
    """`%`, `!` or several `@`: the forms once used to route mail through a host (RFC 5321 §3.6.1, §C)."""
    return "%" in path or "!" in path or path.count("@") > 1


def parse_rcpt(argument: str, *, esmtp: bool, smtputf8: bool, dsn: bool = False) -> tuple[Address, RcptParams]:
    """RFC 5321 §4.1.1.3: `TO:<forward-path> [SP Rcpt-parameters]`, also `TO:<Postmaster>` (§4.5.1).

    `smtputf8` is whether this transaction's MAIL carried SMTPUTF8 (RFC 6531 §3.4).
    """
    path, rest = _path_argument(argument, "TO:", "Syntax: RCPT TO:<address>")
    try:
        recipient = parse_path(path, smtputf8=smtputf8)
    except AddressError as exc:
        if exc.kind == "needs_smtputf8":
            raise SMTPSyntaxError(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8") from None
        if exc.kind == "syntax" and has_relay_syntax(path):
            # Whatever a routing form was meant to do, we never relay it: say so, not "syntax error".
            raise SMTPSyntaxError(554, "5.7.1", "Relay access denied") from None
        raise SMTPSyntaxError(501, "5.1.3", f"Bad recipient address syntax: {exc.message}") from None
    return recipient, _rcpt_params(rest, esmtp=esmtp, dsn=dsn)


def parse_bdat(argument: str) -> tuple[int, bool]:
    """RFC 3030 §3: `BDAT chunk-size [SP "LAST"]`; returns (size, last)."""
    tokens = argument.split(" ")
    if not 1 <= len(tokens) <= 2 or not _SIZE.fullmatch(tokens[0]):
        raise SMTPSyntaxError(501, "5.5.4", "Syntax: BDAT size [LAST]")
    if len(tokens) == 2 and tokens[1].upper() != "LAST":
        raise SMTPSyntaxError(501, "5.5.4", "Syntax: BDAT size [LAST]")
    return int(tokens[0]), len(tokens) == 2


def parse_auth(argument: str) -> tuple[str, str | None]:
    """RFC 4954 §4: `AUTH mechanism [SP initial-response]`; returns (upper-case mechanism, response)."""
    tokens = argument.split(" ")
    if not 1 <= len(tokens) <= 2 or not _MECHANISM.fullmatch(tokens[0]):
        raise SMTPSyntaxError(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
    return tokens[0].upper(), tokens[1] if len(tokens) == 2 else None
