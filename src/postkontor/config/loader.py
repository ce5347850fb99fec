"""`postkontor.toml` into the frozen `Config`, and the commented file `init` and `dev` write.

Every mistake becomes one `ConfigError` line naming the file, the line and the key, because the person
reading it is an administrator with an editor open, not a developer with a debugger. tomllib does not report
where a key was, so `_Locator` re-reads the text with a deliberately small scanner: table headers, `key =`
lines, multi-line strings and arrays. It only has to be right for files we generate and humans edit.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from postkontor.config.model import (
    AuthConfig,
    Config,
    DeliveryConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerKind,
    OutboundConfig,
    TimeoutsConfig,
    TLSConfig,
)

CONFIG_NAME = "postkontor.toml"
SUBADDRESS_SEPARATORS = "+-_="
MAX_ALIAS_DEPTH = 100

_KeyPath = tuple[str | int, ...]


class ConfigError(Exception):
    """A configuration the server cannot run with; `str()` is one line: `file:line: key: what is wrong`."""

    def __init__(self, path: Path, line: int | None, key: str | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.reason = " ".join(reason.split())  # the one-line promise holds even for odd exception texts
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return ": ".join(part for part in (where, self.key, self.reason) if part)


# --- where a key is written ---------------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'')
_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER = re.compile(rf"^\s*(\[\[|\[)\s*({_DOTTED})\s*\]")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_BARE_OR_QUOTED)


def _key_parts(dotted: str) -> list[str]:
    parts = []
    for match in _PART.finditer(dotted):
        part = match.group(0)
        parts.append(json.loads(part) if part.startswith('"') else part.strip("'"))
    return parts


class _Locator:
    """Line numbers of table headers and keys, addressed like the parsed data: ("listener", 1, "port")."""

    def __init__(self, text: str) -> None:
        self.lines: dict[_KeyPath, int] = {}
        self.key_at: dict[int, _KeyPath] = {}
        self.duplicate: tuple[_KeyPath, int] | None = None
        self.line_count = text.rstrip("\n").count("\n") + 1  # a final newline ends the last line
        arrays: dict[_KeyPath, int] = {}
        table: _KeyPath = ()
        closing: str | None = None  # the delimiter of the multi-line string we are inside
        depth = 0  # open brackets of a multi-line array value
        for number, line in enumerate(text.split("\n"), start=1):  # TOML lines end at LF only
            if closing is not None:
                if closing in line:
                    closing = None
                continue
            if depth == 0:
                header = _HEADER.match(line)
                key = None if header else _KEY.match(line)
                if header:
                    is_array = header.group(1) == "[["
                    table = self._header_path(_key_parts(header.group(2)), arrays, is_array=is_array)
                    self.lines.setdefault(table, number)
                    continue
                if key:
                    path = table + tuple(_key_parts(key.group(1)))
                    if path in self.lines and self.duplicate is None:
                        self.duplicate = (path, number)
                    self.lines.setdefault(path, number)
                    self.key_at[number] = path
                    line = line[key.end() :]
            for delimiter in ('"""', "'''"):
                if line.count(delimiter) % 2 == 1:
                    closing = delimiter
                    break
            if closing is None:
                code = _STRINGS.sub("", line).split("#", 1)[0]
                depth = max(0, depth + code.count("[") + code.count("{") - code.count("]") - code.count("}"))

    @staticmethod
    def _header_path(parts: list[str], arrays: dict[_KeyPath, int], *, is_array: bool) -> _KeyPath:
        path: _KeyPath = ()
        for position, part in enumerate(parts):
            path = (*path, part)
            last = position == len(parts) - 1
            if last and is_array:
                arrays[path] = arrays.get(path, 0) + 1
            if path in arrays:
                path = (*path, arrays[path] - 1)
        return path

    def line_of(self, path: _KeyPath) -> int:
        """The line of `path`, else of the nearest enclosing table that is written down, else 1."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


# --- reading values -----------------------------------------------------------------------------------------


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:57] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _display(path: _KeyPath) -> str:
    """`hostname`, `[limits] max_recipients`, `[[listener]] port`: how the key looks in the file."""
    names = [part for part in path if isinstance(part, str)]
    if len(names) == 1 and len(path) == 1:
        return names[0]
    table = names[0]
    header = f"[[{table}]]" if len(path) > 1 and isinstance(path[1], int) else f"[{table}]"
    return f"{header} {'.'.join(names[1:])}" if len(names) > 1 else header


class _Reader:
    def __init__(self, path: Path, locator: _Locator, data_dir: Path) -> None:
        self.path = path
        self.locator = locator
        self.data_dir = data_dir

    def error(self, key: _KeyPath, reason: str) -> ConfigError:
        return ConfigError(self.path, self.locator.line_of(key), _display(key) if key else None, reason)

    def table(self, value: object, key: _KeyPath, allowed: Iterable[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_show(value)}")
        names = list(allowed)
        for name in value:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else f" (known: {', '.join(names)})"
                raise self.error((*key, name), f"unknown key{hint}")
        return value

    def string(self, value: object, key: _KeyPath) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        return value

    def integer(self, value: object, key: _KeyPath, low: int, high: int | None = None) -> int:
        too_big = high is not None and isinstance(value, int) and value > high
        if isinstance(value, bool) or not isinstance(value, int) or value < low or too_big:
            if high is not None:
                wanted = f"an integer from {low} to {high}"
            else:
                wanted = "a positive integer" if low == 1 else f"an integer of at least {low}"
            raise self.error(key, f"expected {wanted}, got {_show(value)}")
        return value

    def boolean(self, value: object, key: _KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_show(value)}")
        return value

    def seconds(self, value: object, key: _KeyPath, *, zero: bool = False) -> float:
        """A positive number of seconds; with `zero`, 0 too (for settings where 0 means "off")."""
        number = math.nan
        if isinstance(value, float):
            number = value
        elif isinstance(value, int) and not isinstance(value, bool):
            number = float(min(value, 10**15))  # float() of a huge TOML integer would overflow
        if math.isfinite(number) and (number > 0 or (zero and number == 0)):
            return number
        wanted = "a number of at least 0 (seconds, 0 = off)" if zero else "a positive number (seconds)"
        raise self.error(key, f"expected {wanted}, got {_show(value)}")

    def file(self, value: object, key: _KeyPath) -> Path:
        text = self.string(value, key)
        if not text or "\x00" in text:
            raise self.error(key, f"expected a file path, got {_show(value)}")
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.data_dir / path


# --- the schema ---------------------------------------------------------------------------------------------

_TOP_KEYS = (
    "hostname",
    "dns",
    "workers",
    "tls",
    "listener",
    "limits",
    "timeouts",
    "delivery",
    "outbound",
    "auth",
)
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def valid_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def normalize_nameserver(text: str) -> str | None:
    """`text` as canonical "IP", "IPv4:PORT" or "[IPv6]:PORT", or None if it is not a nameserver address."""
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            return None
        return f"[{address}]:{int(port)}" if address.version == 6 else f"{address}:{int(port)}"
    return str(address)


# Seconds settings for which 0 is a valid value meaning "off" (all others must be positive).
_ZERO_MEANS_OFF = frozenset({"greet_pause", "delay_warning_after"})


def _section(reader: _Reader, raw: Mapping[str, Any], name: str, cls: type[Any]) -> Any:
    """[limits], [timeouts], [outbound], [auth]: every field optional and typed by its default, so new fields need
    no code."""
    if name not in raw:
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    table = reader.table(raw[name], (name,), fields)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(fields[key].default, bool):
            values[key] = reader.boolean(value, (name, key))
        elif isinstance(fields[key].default, float):
            values[key] = reader.seconds(value, (name, key), zero=key in _ZERO_MEANS_OFF)
        else:
            values[key] = reader.integer(value, (name, key), 1)
    return cls(**values)


def _delivery(reader: _Reader, raw: Mapping[str, Any]) -> DeliveryConfig:
    if "delivery" not in raw:
        return DeliveryConfig()
    table = reader.table(raw["delivery"], ("delivery",), [f.name for f in dataclasses.fields(DeliveryConfig)])
    values: dict[str, Any] = {}
    if "subaddress_separator" in table:
        key: _KeyPath = ("delivery", "subaddress_separator")
        separator = reader.string(table["subaddress_separator"], key)
        if len(separator) > 1 or separator not in SUBADDRESS_SEPARATORS:
            raise reader.error(key, f'expected one of "+", "-", "_", "=" or "" (off), got {_show(separator)}')
        values["subaddress_separator"] = separator
    if "max_alias_depth" in table:
        key = ("delivery", "max_alias_depth")
        values["max_alias_depth"] = reader.integer(table["max_alias_depth"], key, 1, MAX_ALIAS_DEPTH)
    return DeliveryConfig(**values)


def _tls(reader: _Reader, raw: Mapping[str, Any]) -> TLSConfig | None:
    if "tls" not in raw:
        return None
    table = reader.table(raw["tls"], ("tls",), ("cert", "key"))
    for name in ("cert", "key"):
        if name not in table:
            raise reader.error(("tls", name), f'missing; add e.g. {name} = "tls/{name}.pem"')
    cert = reader.file(table["cert"], ("tls", "cert"))
    return TLSConfig(cert=cert, key=reader.file(table["key"], ("tls", "key")))


def _listener(reader: _Reader, entry: object, here: _KeyPath, tls: TLSConfig | None) -> ListenerConfig:
    table = reader.table(entry, here, ("kind", "address", "port", "name"))

    def required(name: str) -> object:
        if name not in table:
            raise reader.error((*here, name), "missing")
        return table[name]

    kinds = [kind.value for kind in ListenerKind]
    kind_text = reader.string(required("kind"), (*here, "kind"))
    if kind_text not in kinds:
        raise reader.error((*here, "kind"), f"expected one of {', '.join(kinds)}, got {_show(kind_text)}")
    kind = ListenerKind(kind_text)
    if kind is not ListenerKind.MX and tls is None:
        why = "passwords are only accepted over TLS"
        raise reader.error((*here, "kind"), f"{kind.value} needs a [tls] table ({why})")
    address_text = reader.string(required("address"), (*here, "address"))
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        wanted = 'an IP address such as "0.0.0.0" or "::"'
        raise reader.error((*here, "address"), f"expected {wanted}, got {_show(address_text)}") from None
    port = reader.integer(required("port"), (*here, "port"), 1, 65535)
    name = reader.string(table.get("name", ""), (*here, "name"))
    if not name.isprintable():
        raise reader.error((*here, "name"), f"expected printable text, got {_show(name)}")
    return ListenerConfig(kind=kind, address=str(address), port=port, name=name)


def _listeners(reader: _Reader, raw: Mapping[str, Any], tls: TLSConfig | None) -> tuple[ListenerConfig, ...]:
    entries = raw.get("listener")
    if entries is None or entries == []:
        example = 'kind = "mx", address = "0.0.0.0", port = 25'
        raise reader.error(("listener",), f"missing: at least one [[listener]] is needed, e.g. {example}")
    if not isinstance(entries, list):
        raise reader.error(("listener",), "expected [[listener]] tables (double brackets), one per port")
    listeners: list[ListenerConfig] = []
    for index, entry in enumerate(entries):
        listener = _listener(reader, entry, ("listener", index), tls)
        address = ipaddress.ip_address(listener.address)
        for other_index, other in enumerate(listeners):
            other_address = ipaddress.ip_address(other.address)
            # A wildcard bind takes the port on every address of its family, so a specific one clashes too.
            clash = (
                other.port == listener.port
                and other_address.version == address.version
                and (other_address == address or other_address.is_unspecified or address.is_unspecified)
            )
            if clash:
                line = reader.locator.line_of(("listener", other_index))
                clashing = f"{listener.address}:{listener.port} clashes with the [[listener]] at line {line}"
                raise reader.error(("listener", index, "port"), clashing)
        listeners.append(listener)
    return tuple(listeners)


def parse_config(text: str, *, source: Path, data_dir: Path) -> Config:
    """The `Config` in `text`; `source` is only used in messages."""
    locator = _Locator(text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, locator, str(exc)) from None
    except (ValueError, RecursionError) as exc:  # integers past Python's digit limit, absurd nesting
        raise ConfigError(source, None, None, f"invalid TOML: {exc}") from None
    reader = _Reader(source, locator, data_dir)
    reader.table(raw, (), _TOP_KEYS)
    if "hostname" not in raw:
        raise reader.error(("hostname",), 'missing; add e.g. hostname = "mail.example.com" at the top')
    hostname = reader.string(raw["hostname"], ("hostname",))
    if not valid_hostname(hostname):
        wanted = "a DNS host name like mail.example.com"
        raise reader.error(("hostname",), f"expected {wanted}, got {_show(hostname)}")
    dns: list[str] = []
    if "dns" in raw:
        if not isinstance(raw["dns"], list):
            wanted = 'an array like ["192.0.2.53", "[::1]:5353"]'
            raise reader.error(("dns",), f"expected {wanted}, got {_show(raw['dns'])}")
        for entry in raw["dns"]:
            server = normalize_nameserver(reader.string(entry, ("dns",)))
            if server is None:
                raise reader.error(("dns",), f'expected "IP" or "IP:PORT" nameservers, got {_show(entry)}')
            dns.append(server)
    workers = reader.integer(raw["workers"], ("workers",), 0, 256) if "workers" in raw else 0
    tls = _tls(reader, raw)
    return Config(
        data_dir=data_dir,
        hostname=hostname,
        listeners=_listeners(reader, raw, tls),
        tls=tls,
        limits=_section(reader, raw, "limits", LimitsConfig),
        timeouts=_section(reader, raw, "timeouts", TimeoutsConfig),
        delivery=_delivery(reader, raw),
        outbound=_section(reader, raw, "outbound", OutboundConfig),
        auth=_section(reader, raw, "auth", AuthConfig),
        dns_servers=tuple(dns),
        workers=workers,
        source=source,
    )


def _syntax_error(source: Path, locator: _Locator, message: str) -> ConfigError:
    if message.startswith("Cannot overwrite a value") and locator.duplicate is not None:
        path, again = locator.duplicate
        return ConfigError(source, again, _display(path), f"set twice (first at line {locator.lines[path]})")
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    line: int | None = None
    if match:
        line = int(match.group(1))
        message = f"{message[: match.start()]} (column {match.group(2)})"
    elif message.endswith("(at end of document)"):
        line = locator.line_count
        message = message.removesuffix(" (at end of document)") + " (at the end of the file)"
    key = locator.key_at.get(line) if line is not None else None
    return ConfigError(source, line, _display(key) if key else None, f"invalid TOML: {message}")


def load_config(path: Path, data_dir: Path | None = None) -> Config:
    """Load `path`; relative paths in it are taken relative to `data_dir` (default: the file's directory)."""
    path = path.absolute()
    data_dir = (data_dir if data_dir is not None else path.parent).absolute()
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob.count(b"\n", 0, exc.start) + 1
        raise ConfigError(path, line, None, "invalid TOML: the file is not UTF-8 text") from None
    return parse_config(text, source=path, data_dir=data_dir)


# --- writing the commented file -----------------------------------------------------------------------------

_EXPLAIN: dict[str, str] = {
    "max_message_size": "largest message accepted, in octets (advertised as SIZE in EHLO, RFC 1870)",
    "max_recipients": "recipients per message; RFC 5321 requires at least 100",
    "max_errors": "protocol errors in one session before the server says 421 and hangs up",
    "max_received_headers": "Received headers after which a message is taken to be looping (RFC 5321 6.3)",
    "max_header_size": "octets of a message's header section; larger ones are refused with 552 5.3.4",
    "max_connections": "open connections over all listeners together",
    "max_connections_per_ip": "open connections from one client address",
    "max_auth_failures": "failed logins per client address and per account within auth_failure_window",
    "auth_failure_window": "seconds over which failed logins are counted",
    "max_parallel_password_checks": "password hashes computed at once (each argon2 check takes memory)",
    "greet_pause": "seconds the MX waits before its greeting; clients talking first get 554 (0 = off)",
    "command": "seconds to wait for the next command (RFC 5321 asks for at least 5 minutes)",
    "data": "seconds to wait for message data after DATA (RFC 5321 asks for at least 10 minutes)",
    "tls_handshake": "seconds a TLS handshake may take",
    "shutdown_grace": "seconds a session still sending a message may finish after SIGTERM",
    "imap_idle": "seconds an IMAP client may stay silent (RFC 9051: at least 30 minutes)",
    "pop3_idle": "seconds a POP3 client may stay silent (RFC 1939: at least 10 minutes)",
    "subaddress_separator": 'user+tag@domain goes to user@domain; one of "+", "-", "_", "=", or "" for off',
    "max_alias_depth": "alias hops followed before a loop is assumed (1 to 100)",
}

_EXPLAIN_OUTBOUND: dict[str, str] = {
    "port": "the remote SMTP port (25 on the internet; tests and special setups change it)",
    "max_connections": "outbound SMTP connections at once, all destinations together",
    "max_connections_per_domain": "outbound SMTP connections at once to one destination domain",
    "retry_first": "seconds before the first retry; each later retry waits retry_backoff times longer",
    "retry_backoff": "factor between retry intervals (5, 10, 20, 40 minutes ... by default)",
    "retry_max_interval": "longest wait between retries, in seconds (then hourly by default)",
    "max_lifetime": "seconds a message may stay queued before it bounces (5 days)",
    "delay_warning_after": "seconds after which the sender gets one 'delayed' notice (0 = never)",
    "connection_cache_time": "seconds an idle outbound connection is kept for the next message",
    "connect_timeout": "seconds to establish a TCP connection",
    "greeting_timeout": "seconds to wait for the 220 greeting (RFC 5321 4.5.3.2: 5 minutes)",
    "command_timeout": "seconds to wait for replies to EHLO, MAIL, RCPT, RSET, STARTTLS (5 minutes)",
    "data_init_timeout": "seconds to wait for the 354 after DATA (2 minutes)",
    "data_block_timeout": "seconds a block of message data may take to send (3 minutes)",
    "data_end_timeout": "seconds to wait for the reply after the end of data (10 minutes)",
}

_EXPLAIN_AUTH: dict[str, str] = {
    "checks": "check SPF, DKIM, DMARC and ARC of mail arriving at the MX (never of authenticated submission)",
    "dmarc_reject": "refuse mail failing a DMARC p=reject policy (550 5.7.1); false: deliver it to Junk instead",
    "dkim_verify_max_size": "messages larger than this (octets) are not DKIM-verified (dkim=neutral)",
    "timeout": "seconds each check may take before it counts as a temporary error (which never rejects)",
    "dkim_sign": "DKIM-sign mail of local domains that have keys (submission, forwards); ARC-seal forwards",
}

_LISTENER_NOTES = {
    ListenerKind.MX: "mail from the world for our domains; STARTTLS offered, no AUTH",
    ListenerKind.SUBMISSION: "your users' clients: STARTTLS, then AUTH",
    ListenerKind.SUBMISSIONS: "your users' clients: TLS from the first byte, then AUTH",
    ListenerKind.IMAP: "reading mail over IMAP: STARTTLS, then LOGIN",
    ListenerKind.IMAPS: "reading mail over IMAP: TLS from the first byte",
    ListenerKind.POP3: "reading mail over POP3: STLS, then USER/PASS",
    ListenerKind.POP3S: "reading mail over POP3: TLS from the first byte",
}


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are valid TOML escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if value >= 100_000 else str(value)
    return repr(value)


def _commented_defaults(cls: type[Any], explain: dict[str, str] = _EXPLAIN) -> list[str]:
    lines = []
    for field in dataclasses.fields(cls):
        lines.append(f"# {explain.get(field.name, field.name.replace('_', ' '))}")
        lines.append(f"#{field.name} = {_toml(field.default)}")
    return lines


def render_config(
    hostname: str, listeners: list[ListenerConfig], *, tls: bool = True, dns: list[str] | None = None
) -> str:
    """A complete, commented `postkontor.toml` that `load_config` reads back to these values."""
    out = [
        "# postkontor configuration. Relative paths are taken relative to this file's directory (the",
        "# data directory). Lines starting with # are comments; commented key = value lines show defaults.",
        "# After editing, restart the server; `postkontor serve` names the line of any mistake.",
        "",
        "# The name this server calls itself in its greeting, in EHLO and in Received headers. Other",
        "# servers look it up: give it an A/AAAA record pointing here, and name it in your domains' MX.",
        f"hostname = {_toml(hostname)}",
        "",
        '# Nameservers for the outbound queue: "IP" or "IP:PORT" ("[IPv6]:PORT").',
        "# Without this line the system resolver is used.",
    ]
    out.append(f"dns = {_toml(dns)}" if dns else '#dns = ["127.0.0.1:53"]')
    out += [
        "",
        "# Server processes sharing the listening ports; 0 = one per CPU core.",
        "#workers = 0",
        "",
        "# The certificate and private key (PEM). `postkontor init` made a self-signed pair so TLS works",
        "# at once; replace them with a real certificate for your hostname (e.g. from an ACME client).",
        "# The submission listeners need TLS: AUTH is only offered over an encrypted connection.",
    ]
    tls_lines = ["[tls]", 'cert = "tls/cert.pem"', 'key = "tls/key.pem"']
    out += tls_lines if tls else [f"#{line}" for line in tls_lines]
    out += [
        "",
        '# One [[listener]] per port. kind = "mx" (port 25), "submission" (587), "submissions" (465),',
        '# "imap" (143), "imaps" (993), "pop3" (110) or "pop3s" (995);',
        '# address = the IP address to bind ("0.0.0.0": all IPv4, "::": all IPv6);',
        "# name = an optional label for logs.",
    ]
    for listener in listeners:
        out += ["", f"# {_LISTENER_NOTES[listener.kind]}", "[[listener]]"]
        out += [f"kind = {_toml(listener.kind.value)}", f"address = {_toml(listener.address)}"]
        out.append(f"port = {listener.port}")
        if listener.name:
            out.append(f"name = {_toml(listener.name)}")
    out += ["", "# Limits that protect the server. Uncomment a line to change it.", "[limits]"]
    out += _commented_defaults(LimitsConfig)
    out += ["", "# Timeouts, in seconds.", "[timeouts]"]
    out += _commented_defaults(TimeoutsConfig)
    out += ["", "# Local delivery.", "[delivery]"]
    out += _commented_defaults(DeliveryConfig)
    out += ["", "# The outbound queue: retries, bounces, connection limits and SMTP client timeouts.", "[outbound]"]
    out += _commented_defaults(OutboundConfig, _EXPLAIN_OUTBOUND)
    out += [
        "",
        "# Message authentication: SPF, DKIM, DMARC and ARC checks on the MX, DKIM signing and ARC sealing.",
        "[auth]",
    ]
    out += _commented_defaults(AuthConfig, _EXPLAIN_AUTH)
    return "\n".join(out) + "\n"
