"""The embedded account store: `AccountStore` on SQLite (WAL), with Postfix-style alias resolution.

Address syntax follows RFC 5321 §4.1.2 / RFC 5322 §3.4.1 (dot-atom local parts, RFC 6531 UTF-8 allowed) and
domains are LDH host names (RFC 1035 §2.3.1, RFC 1123 §2.1) or IDNs, stored as A-labels (RFC 5890) made with
the stdlib IDNA 2003 codec (RFC 3490). User local parts are stricter because they name Maildir directories.
Sub-addressing (`user+detail@domain`) follows RFC 5233. Resolution order mirrors Postfix `virtual_alias_maps`:
exact alias, user, sub-address base, catch-all.

Lookups (`resolve`, `is_local_domain`, `get_user`, `password_hash`, ...) never raise for malformed input, they
answer "no such thing"; changes raise `AccountError` with a message meant for the administrator.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from postkontor.auth.passwords import PasswordHasher
from postkontor.store.accounts import AccountError, Alias, Mailbox, Resolution, User
from postkontor.store.sqlite import open_database, read_transaction, run_script, write_transaction

SCHEMA_VERSION = 1
_MAX_QUOTA = 2**63 - 1  # SQLite INTEGER
_CACHE_LIMIT = 10_000  # entries; RCPT TO probes with random addresses must not grow memory without bound
# Alias graphs are not memoised: a wide diamond-shaped graph could otherwise cost fan-out ** depth lookups.
_MAX_EXPANSION_STEPS = 10_000

_RECHECK_AFTER = 0.002  # seconds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE RESTRICT,
    localpart TEXT NOT NULL,
    password TEXT NOT NULL,
    quota INTEGER NOT NULL DEFAULT 0 CHECK (quota >= 0),
    PRIMARY KEY (domain, localpart)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE RESTRICT,
    target TEXT NOT NULL,
    UNIQUE (source, target)
);
CREATE INDEX IF NOT EXISTS aliases_by_target ON aliases(target);
CREATE INDEX IF NOT EXISTS aliases_by_domain ON aliases(domain);
"""

# RFC 5322 atext, the characters of a dot-atom besides "." (RFC 6531 adds every non-ASCII character).
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# Control, format, surrogate, private-use, unassigned and separator characters have no place in an address.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


# --- syntax -------------------------------------------------------------------------------------------------
def normalize_domain(domain: str) -> str:
    """The lower-case A-label form of `domain`, or AccountError if it is not a valid host name."""
    if not isinstance(domain, str) or not domain:
        raise AccountError("the domain must not be empty")
    name = domain[:-1] if domain.endswith(".") else domain  # the root label is implied
    if name.isascii():
        ascii_name = name.lower()
    else:
        try:
            ascii_name = name.encode("idna").decode("ascii").lower()
        except (UnicodeError, ValueError, IndexError) as exc:
            raise AccountError(f"invalid domain {domain!r}: not a valid IDN") from exc
    labels = ascii_name.split(".")
    for label in labels:
        _check_label(domain, label)
    if len(ascii_name) > 253:
        raise AccountError(f"invalid domain {domain!r}: longer than 253 octets")
    if labels[-1].isdigit():
        raise AccountError(f"invalid domain {domain!r}: numeric top-level label (an IP address?)")
    return ascii_name


def _check_label(domain: str, label: str) -> None:
    if not label:
        raise AccountError(f"invalid domain {domain!r}: empty label")
    if len(label) > 63:
        raise AccountError(f"invalid domain {domain!r}: label longer than 63 octets")
    if not _LDH.issuperset(label):
        raise AccountError(f"invalid domain {domain!r}: only letters, digits and '-' are allowed in labels")
    if label.startswith("-") or label.endswith("-"):
        raise AccountError(f"invalid domain {domain!r}: a label must not start or end with '-'")
    if label[2:4] == "--":
        if not label.startswith("xn--"):
            # RFC 5891 §4.2.3.1: "??--" labels are reserved for IDNA-style encodings.
            raise AccountError(f"invalid domain {domain!r}: '--' in the third and fourth position")
        try:
            label.encode("ascii").decode("idna")
        except (UnicodeError, ValueError, IndexError) as exc:
            raise AccountError(f"invalid domain {domain!r}: {label!r} is not a valid A-label") from exc


def _split(address: str) -> tuple[str, str]:
    if not isinstance(address, str) or "@" not in address:
        raise AccountError(f"invalid address {address!r}: expected local@domain")
    local, _, domain = address.rpartition("@")
    return local, domain


def _fold(local: str) -> str:
    # NFC before and after: lower() can split a precomposed letter (e.g. U+0130) into letter + combining mark.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", local).lower())


def normalize_localpart(local: str, separator: str = "+") -> str:
    """A user's local part, lower-cased; it names a directory, so only letters, digits, marks and `.-_`."""
    if not local:
        raise AccountError("the local part must not be empty")
    folded = _fold(local)
    for index, char in enumerate(folded):
        category = unicodedata.category(char)
        if char in "._-" or category[0] == "L" or category == "Nd":
            continue
        if category[0] == "M" and index > 0:  # combining marks belong to the preceding letter
            continue
        raise AccountError(
            f"invalid local part {local!r}: {char!r} is not allowed (letters, digits, '.', '-' and '_' are)"
        )
    if folded.startswith(".") or folded.endswith("."):
        raise AccountError(f"invalid local part {local!r}: it must not start or end with '.'")
    if ".." in folded:
        raise AccountError(f"invalid local part {local!r}: '..' is not allowed")
    if separator and separator in folded:
        raise AccountError(
            f"invalid local part {local!r}: {separator!r} is the sub-address separator (user{separator}tag)"
        )
    if len(folded.encode("utf-8")) > 64:
        raise AccountError(f"invalid local part {local!r}: longer than 64 octets")
    return folded


def normalize_user_address(address: str, separator: str = "+") -> tuple[str, str]:
    """(local part, A-label domain) of a user address, or AccountError."""
    local, domain = _split(address)
    return normalize_localpart(local, separator), normalize_domain(domain)


def _check_dot_atom(address: str, local: str) -> None:
    if not local:
        raise AccountError(f"invalid address {address!r}: empty local part")
    for char in local:
        if char == "." or char in _ATEXT:
            continue
        if ord(char) > 127 and unicodedata.category(char) not in _BAD_CATEGORIES:
            continue
        raise AccountError(f"invalid address {address!r}: {char!r} is not allowed in a local part")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AccountError(f"invalid address {address!r}: misplaced '.' in the local part")
    if len(local.encode("utf-8")) > 64:
        raise AccountError(f"invalid address {address!r}: local part longer than 64 octets")


def normalize_address(address: str, *, fold_local: bool = True) -> str:
    """`local@domain` with a dot-atom local part and the A-label domain, or AccountError.

    RFC 5321 §2.4 makes local parts case-sensitive for other hosts, so `fold_local=False` keeps the case of
    forwarding targets in foreign domains; our own local parts are case-insensitive and folded.
    """
    local, domain = _split(address)
    _check_dot_atom(address, local)
    ascii_domain = normalize_domain(domain)
    result = f"{_fold(local) if fold_local else local}@{ascii_domain}"
    if len(result.encode("utf-8")) > 254:  # RFC 5321 §4.5.3.1.3: 256 octets including "<" and ">"
        raise AccountError(f"invalid address {address!r}: longer than 254 octets")
    return result


def _lookup_key(address: str) -> tuple[str, str] | None:
    """(folded local part, A-label domain) for a lookup, or None when the address cannot exist."""
    try:
        local, domain = _split(address)
        if not local:
            return None
        folded = _fold(local)
        folded.encode("utf-8")
        return folded, normalize_domain(domain)
    except (AccountError, UnicodeError):
        return None


_Path = tuple[str, ...]  # the alias sources being expanded, outermost first


@dataclass
class _Expansion:
    mailboxes: dict[Mailbox, None] = field(default_factory=dict)
    remote: dict[str, None] = field(default_factory=dict)
    loop: bool = False
    steps: int = 0


# --- the store ----------------------------------------------------------------------------------------------
class SQLiteAccountStore:
    """`AccountStore` on one SQLite connection, shared by threads under a lock, with change-aware caches."""

    def __init__(
        self,
        path: Path,
        *,
        hasher: PasswordHasher | None = None,
        subaddress_separator: str = "+",
        max_alias_depth: int = 10,
    ) -> None:
        if max_alias_depth < 1:
            raise ValueError("max_alias_depth must be at least 1")
        if "@" in subaddress_separator:
            raise ValueError("the sub-address separator must not contain '@'")
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._separator = subaddress_separator
        self._max_depth = max_alias_depth
        self._lock = threading.Lock()
        self._domain_cache: dict[str, bool] = {}
        self._resolve_cache: dict[str, Resolution] = {}
        self._user_cache: dict[str, User | None] = {}  # asked per RCPT for quotas: keep it off SQLite
        _create_private(path)
        self._conn = open_database(path)
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise
        self._data_version = self._read_data_version()
        self._checked_at = time.monotonic()

    def _setup(self) -> None:
        conn = self._conn
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise AccountError(
                f"the account database schema is version {version}; this postkontor knows {SCHEMA_VERSION}"
            )
        with write_transaction(conn, self._lock):
            # Re-read inside the write lock: another process may have created the schema meanwhile.
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version == 0:
                run_script(conn, _SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteAccountStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transactions and caches ----------------------------------------------------------------------------
    def _read_data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _refresh_caches(self) -> None:
        """Drop cached answers if another connection committed since we last looked (lock held).

        Looked at most every `_RECHECK_AFTER` seconds: under load one RCPT asks three questions and hundreds of
        RCPTs arrive per second, and each SQLite call also hands the GIL to the delivery threads. A change made
        with the CLI still applies within milliseconds.
        """
        now = time.monotonic()
        if now - self._checked_at < _RECHECK_AFTER:
            return
        self._checked_at = now
        version = self._read_data_version()
        if version != self._data_version:
            self._data_version = version
            self._domain_cache.clear()
            self._resolve_cache.clear()
            self._user_cache.clear()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; drops the caches (data_version ignores our own commits)."""
        try:
            with write_transaction(self._conn, self._lock) as conn:
                yield conn
        finally:
            self._domain_cache.clear()
            self._resolve_cache.clear()
            self._user_cache.clear()

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return read_transaction(self._conn, self._lock)

    # --- domains --------------------------------------------------------------------------------------------
    def add_domain(self, domain: str) -> None:
        name = normalize_domain(domain)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"domain {name} already exists")
            conn.execute("INSERT INTO domains (name) VALUES (?)", (name,))

    def remove_domain(self, domain: str) -> None:
        name = normalize_domain(domain)
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone():
                raise AccountError(f"no such domain: {name}")
            users = int(conn.execute("SELECT count(*) FROM users WHERE domain = ?", (name,)).fetchone()[0])
            query = "SELECT count(DISTINCT source) FROM aliases WHERE domain = ?"
            aliases = int(conn.execute(query, (name,)).fetchone()[0])
            if users or aliases:
                raise AccountError(
                    f"domain {name} still has {users} user(s) and {aliases} alias(es); remove them first"
                )
            conn.execute("DELETE FROM domains WHERE name = ?", (name,))

    def list_domains(self) -> list[str]:
        with self._lock:
            rows: list[tuple[str]] = self._conn.execute("SELECT name FROM domains ORDER BY name").fetchall()
        return [row[0] for row in rows]

    def is_local_domain(self, domain: str) -> bool:
        with self._lock:
            self._refresh_caches()
            cached = self._domain_cache.get(domain)
            if cached is not None:
                return cached
            try:
                name = normalize_domain(domain)
            except AccountError:
                answer = False
            else:
                answer = self._domain_exists(name)
            if len(self._domain_cache) >= _CACHE_LIMIT:
                self._domain_cache.clear()
            self._domain_cache[domain] = answer
            return answer

    def _domain_exists(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone() is not None

    def _require_local(self, conn: sqlite3.Connection, name: str) -> None:
        if not conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone():
            raise AccountError(f"domain {name} is not a local domain; add it with `postkontor domain add {name}`")

    # --- users ----------------------------------------------------------------------------------------------
    def add_user(self, address: str, password: str, quota: int = 0) -> None:
        _check_quota(quota)
        local, domain = normalize_user_address(address, self._separator)
        if not password:
            raise AccountError("the password must not be empty")
        hashed = self._hash(password)  # slow: outside the lock
        with self._write() as conn:
            self._require_local(conn, domain)
            if self._user_row(conn, domain, local) is not None:
                raise AccountError(f"user {local}@{domain} already exists")
            conn.execute(
                "INSERT INTO users (domain, localpart, password, quota) VALUES (?, ?, ?, ?)",
                (domain, local, hashed, quota),
            )

    def remove_user(self, address: str) -> None:
        local, domain = normalize_user_address(address, self._separator)
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM users WHERE domain = ? AND localpart = ?", (domain, local))
            if cursor.rowcount == 0:
                raise AccountError(f"no such user: {local}@{domain}")

    def list_users(self, domain: str | None = None) -> list[User]:
        where, args = ("", ()) if domain is None else ("WHERE domain = ?", (normalize_domain(domain),))
        query = f"SELECT localpart, domain, quota FROM users {where} ORDER BY domain, localpart"
        with self._lock:
            rows: list[tuple[str, str, int]] = self._conn.execute(query, args).fetchall()
        return [User(f"{local}@{name}", quota) for local, name, quota in rows]

    def get_user(self, address: str) -> User | None:
        key = _lookup_key(address)
        if key is None:
            return None
        local, domain = key
        cache_key = f"{local}@{domain}"
        with self._lock:
            self._refresh_caches()
            if cache_key in self._user_cache:
                return self._user_cache[cache_key]
            row = self._user_row(self._conn, domain, local)
            user = None if row is None else User(cache_key, row[1])
            if len(self._user_cache) >= _CACHE_LIMIT:
                self._user_cache.clear()
            self._user_cache[cache_key] = user
        return user

    def password_hash(self, address: str) -> str | None:
        """The stored PHC string, or None for an unknown user (give it to `PasswordHasher.verify` anyway)."""
        key = _lookup_key(address)
        if key is None:
            return None
        with self._lock:
            row = self._user_row(self._conn, key[1], key[0])
        return None if row is None else row[0]

    def verify_password(self, address: str, password: str) -> bool:
        stored = self.password_hash(address)
        # An unknown user still costs one verification (against the hasher's dummy hash).
        return self._hasher.verify(stored, password) and stored is not None

    def set_password(self, address: str, password: str) -> None:
        local, domain = normalize_user_address(address, self._separator)
        if not password:
            raise AccountError("the password must not be empty")
        self._update_user(local, domain, "password", self._hash(password))

    def set_quota(self, address: str, quota: int) -> None:
        _check_quota(quota)
        local, domain = normalize_user_address(address, self._separator)
        self._update_user(local, domain, "quota", quota)

    def _update_user(self, local: str, domain: str, column: str, value: str | int) -> None:
        assert column in ("password", "quota")
        with self._write() as conn:
            query = f"UPDATE users SET {column} = ? WHERE domain = ? AND localpart = ?"
            if conn.execute(query, (value, domain, local)).rowcount == 0:
                raise AccountError(f"no such user: {local}@{domain}")

    def _hash(self, password: str) -> str:
        try:
            return self._hasher.hash(password)
        except (ValueError, UnicodeError) as exc:
            raise AccountError(f"unusable password: {exc}") from exc

    @staticmethod
    def _user_row(conn: sqlite3.Connection, domain: str, local: str) -> tuple[str, int] | None:
        row: tuple[str, int] | None = conn.execute(
            "SELECT password, quota FROM users WHERE domain = ? AND localpart = ?", (domain, local)
        ).fetchone()
        return row

    # --- aliases --------------------------------------------------------------------------------------------
    def _normalize_source(self, source: str) -> tuple[str, str]:
        """(stored source, domain) for `local@domain` or the catch-all `@domain`."""
        if isinstance(source, str) and source.startswith("@"):
            domain = normalize_domain(source[1:])
            return "@" + domain, domain
        normalized = normalize_address(source)
        return normalized, normalized.rpartition("@")[2]

    def _normalize_target(self, conn: sqlite3.Connection, target: str) -> str:
        if isinstance(target, str) and target.startswith("@"):
            raise AccountError(f"invalid target {target!r}: a target must be a full address")
        normalized = normalize_address(target, fold_local=False)
        local, _, domain = normalized.rpartition("@")
        if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone():
            return f"{_fold(local)}@{domain}"
        return normalized

    def add_alias(self, source: str, targets: list[str]) -> None:
        stored, domain = self._normalize_source(source)
        if not targets:
            raise AccountError("an alias needs at least one target")
        with self._write() as conn:
            self._require_local(conn, domain)
            normalized = [self._normalize_target(conn, target) for target in targets]
            for target in dict.fromkeys(normalized):
                conn.execute(
                    "INSERT OR IGNORE INTO aliases (source, domain, target) VALUES (?, ?, ?)",
                    (stored, domain, target),
                )

    def remove_alias(self, source: str, target: str | None = None) -> None:
        stored, _ = self._normalize_source(source)
        with self._write() as conn:
            if target is None:
                cursor = conn.execute("DELETE FROM aliases WHERE source = ?", (stored,))
                if cursor.rowcount == 0:
                    raise AccountError(f"no such alias: {stored}")
                return
            if not conn.execute("SELECT 1 FROM aliases WHERE source = ?", (stored,)).fetchone():
                raise AccountError(f"no such alias: {stored}")
            normalized = self._normalize_target(conn, target)
            cursor = conn.execute("DELETE FROM aliases WHERE source = ? AND target = ?", (stored, normalized))
            if cursor.rowcount == 0:
                raise AccountError(f"alias {stored} has no target {normalized}")

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        where, args = ("", ()) if domain is None else ("WHERE domain = ?", (normalize_domain(domain),))
        query = f"SELECT source, target FROM aliases {where} ORDER BY domain, source, id"
        with self._lock:
            rows: list[tuple[str, str]] = self._conn.execute(query, args).fetchall()
        grouped: dict[str, list[str]] = {}
        for source, target in rows:
            grouped.setdefault(source, []).append(target)
        return [Alias(source, tuple(targets)) for source, targets in grouped.items()]

    # --- routing --------------------------------------------------------------------------------------------
    def resolve(self, address: str) -> Resolution:
        key = _lookup_key(address)
        if key is None:
            return Resolution()
        local, domain = key
        cache_key = f"{local}@{domain}"
        with self._lock:
            self._refresh_caches()
            cached = self._resolve_cache.get(cache_key)
        if cached is not None:
            return cached
        with self._read() as conn:
            expansion = _Expansion()
            if self._domain_exists(domain):
                self._expand(conn, cache_key, expansion, (), top=True)
            result = Resolution(tuple(expansion.mailboxes), tuple(expansion.remote), expansion.loop)
            if len(self._resolve_cache) >= _CACHE_LIMIT:
                self._resolve_cache.clear()
            self._resolve_cache[cache_key] = result
        return result

    def _expand(
        self, conn: sqlite3.Connection, address: str, out: _Expansion, path: _Path, *, top: bool = False
    ) -> None:
        """Add what `address` delivers to; `path` holds the alias sources being expanded above us."""
        out.steps += 1
        if out.steps > _MAX_EXPANSION_STEPS:
            out.loop = True
            return
        local, _, domain = address.rpartition("@")
        if not top:
            if not self._domain_exists(domain):
                out.remote[address] = None
                return
            # A forward stored before its domain became local kept its case; our local parts are folded.
            local = _fold(local)
            address = f"{local}@{domain}"
        if self._expand_exact(conn, address, out, path):
            return
        separator = self._separator
        if separator and separator in local:
            base = local.split(separator, 1)[0]
            if base and self._expand_exact(conn, f"{base}@{domain}", out, path):
                return
        catch_all = "@" + domain
        targets = self._targets(conn, catch_all)
        if targets:
            self._expand_alias(conn, catch_all, targets, out, path)

    def _expand_exact(self, conn: sqlite3.Connection, address: str, out: _Expansion, path: _Path) -> bool:
        """Steps (1) and (2): an alias of exactly this address, else a user. False if neither exists."""
        targets = self._targets(conn, address)
        if targets:
            self._expand_alias(conn, address, targets, out, path)
            return True
        return self._add_mailbox(conn, address, out)

    def _expand_alias(
        self, conn: sqlite3.Connection, source: str, targets: list[str], out: _Expansion, path: _Path
    ) -> None:
        if source in path or len(path) >= self._max_depth:
            out.loop = True
            return
        inner = (*path, source)
        for target in targets:
            if target == source:
                # Postfix semantics: an alias listing itself keeps a copy in the user's own mailbox.
                self._add_mailbox(conn, target, out)
            else:
                self._expand(conn, target, out, inner)

    def _add_mailbox(self, conn: sqlite3.Connection, address: str, out: _Expansion) -> bool:
        local, _, domain = address.rpartition("@")
        if not local or self._user_row(conn, domain, local) is None:
            return False
        out.mailboxes[Mailbox(domain, local)] = None
        return True

    @staticmethod
    def _targets(conn: sqlite3.Connection, source: str) -> list[str]:
        rows: list[tuple[str]] = conn.execute(
            "SELECT target FROM aliases WHERE source = ? ORDER BY id", (source,)
        ).fetchall()
        return [row[0] for row in rows]

    def addresses_of(self, user_address: str) -> frozenset[str]:
        key = _lookup_key(user_address)
        if key is None:
            return frozenset()
        local, domain = key
        address = f"{local}@{domain}"
        with self._read() as conn:
            if self._user_row(conn, domain, local) is None:
                return frozenset()
            rows: list[tuple[str]] = conn.execute(
                "SELECT DISTINCT source FROM aliases WHERE target = ? AND source NOT LIKE '@%'", (address,)
            ).fetchall()
        return frozenset({address, *(row[0] for row in rows)})


def _check_quota(quota: int) -> None:
    if isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota <= _MAX_QUOTA:
        raise AccountError(f"invalid quota {quota!r}: a number of octets >= 0 (0 means unlimited)")


def _create_private(path: Path) -> None:
    """Create the file 0600 before SQLite does: it holds password hashes (-wal/-shm copy its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)
