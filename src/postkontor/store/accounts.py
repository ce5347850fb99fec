"""The account store contract: domains, users, aliases, catch-alls and quotas.

The embedded default is SQLite (`store.sqlite_accounts.SQLiteAccountStore`); a PostgreSQL backend can follow by
implementing the same `AccountStore` protocol. Addresses are passed as `local@domain` strings; domains are
compared case-insensitively (stored lower-case, IDNA A-labels as given) and local parts case-insensitively too
(as Postfix and Dovecot do by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class AccountError(Exception):
    """A request the store refuses (unknown domain, duplicate user, ...); the message is for the user."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A local mailbox: where a message for a user is stored."""

    domain: str
    localpart: str

    @property
    def address(self) -> str:
        return f"{self.localpart}@{self.domain}"


@dataclass(frozen=True, slots=True)
class User:
    address: str
    quota: int  # octets; 0 means unlimited


@dataclass(frozen=True, slots=True)
class Alias:
    source: str  # "local@domain", or "@domain" for a catch-all
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a recipient address expands to. Both empty means: no such recipient."""

    mailboxes: tuple[Mailbox, ...] = ()
    remote: tuple[str, ...] = ()  # forwarding targets outside our domains: they go to the outbound queue
    loop: bool = False  # alias expansion exceeded the depth limit or cycled

    @property
    def exists(self) -> bool:
        return bool(self.mailboxes or self.remote)


class AccountStore(Protocol):
    # domains
    def add_domain(self, domain: str) -> None: ...
    def remove_domain(self, domain: str) -> None: ...
    def list_domains(self) -> list[str]: ...
    def is_local_domain(self, domain: str) -> bool: ...

    # users
    def add_user(self, address: str, password: str, quota: int = 0) -> None: ...
    def remove_user(self, address: str) -> None: ...
    def list_users(self, domain: str | None = None) -> list[User]: ...
    def get_user(self, address: str) -> User | None: ...
    def set_password(self, address: str, password: str) -> None: ...
    def set_quota(self, address: str, quota: int) -> None: ...
    def verify_password(self, address: str, password: str) -> bool: ...
    def password_hash(self, address: str) -> str | None: ...  # None for an unknown user

    # aliases (source "@domain" is the domain's catch-all)
    def add_alias(self, source: str, targets: list[str]) -> None: ...
    def remove_alias(self, source: str, target: str | None = None) -> None: ...
    def list_aliases(self, domain: str | None = None) -> list[Alias]: ...

    # routing
    def resolve(self, address: str) -> Resolution: ...
    def addresses_of(self, user_address: str) -> frozenset[str]: ...

    def close(self) -> None: ...
