"""The data directory: creating it once (`init`) and opening its account store for every admin command."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

from postkontor.admin.certs import make_self_signed, write_atomically
from postkontor.config.loader import (
    CONFIG_NAME,
    ConfigError,
    load_config,
    normalize_nameserver,
    parse_config,
    render_config,
    valid_hostname,
)
from postkontor.config.model import Config, ListenerConfig, ListenerKind
from postkontor.mailauth.keys import DomainKeys, KeyStore
from postkontor.store.sqlite_accounts import SQLiteAccountStore, normalize_domain

# Mail, spool and queue hold other people's messages, tls/ and dkim/ hold private keys: owner only.
PRIVATE_DIRS = ("tls", "mail", "spool", "queue", "dkim")
CERT_FILE = Path("tls") / "cert.pem"
KEY_FILE = Path("tls") / "key.pem"

DEFAULT_LISTENERS = (
    ListenerConfig(ListenerKind.MX, "0.0.0.0", 25),
    ListenerConfig(ListenerKind.SUBMISSION, "0.0.0.0", 587),
    ListenerConfig(ListenerKind.SUBMISSIONS, "0.0.0.0", 465),
    ListenerConfig(ListenerKind.IMAP, "0.0.0.0", 143),
    ListenerConfig(ListenerKind.IMAPS, "0.0.0.0", 993),
    ListenerConfig(ListenerKind.POP3, "0.0.0.0", 110),
    ListenerConfig(ListenerKind.POP3S, "0.0.0.0", 995),
)


class AdminError(Exception):
    """An administrative request that cannot be done; the message is one line for the administrator."""


def config_path(data_dir: Path) -> Path:
    return data_dir / CONFIG_NAME


def load_data_dir(data_dir: Path) -> Config:
    """The configuration of an existing data directory (AdminError if `init` has not made one there)."""
    path = config_path(data_dir)
    if not path.exists():
        if not data_dir.exists():
            raise AdminError(f"data directory {data_dir} does not exist; create it with `postkontor init`")
        raise AdminError(f"no {CONFIG_NAME} in {data_dir}; create one with `postkontor init`")
    return load_config(path, data_dir)


def create_tree(data_dir: Path) -> None:
    """The directory and its private subdirectories; idempotent, and repairs modes a umask took away."""
    if data_dir.exists() and not data_dir.is_dir():
        raise AdminError(f"{data_dir} exists and is not a directory")
    existed = data_dir.exists()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not existed:
        data_dir.chmod(0o700)  # an existing directory keeps the mode its owner chose
    for name in PRIVATE_DIRS:
        sub = data_dir / name
        sub.mkdir(mode=0o700, exist_ok=True)
        sub.chmod(0o700)


def ensure_certificate(config: Config, names: list[str], ips: list[str]) -> bool:
    """Make a self-signed pair at the configured paths unless a certificate is there; True if one was made."""
    if config.tls is None or config.tls.cert.exists():
        return False
    make_self_signed(config.tls.cert, config.tls.key, names, ips)
    return True


def listener_ips(listeners: list[ListenerConfig]) -> list[str]:
    """Addresses a client may dial literally; a wildcard bind names no address a client could verify."""
    return [item.address for item in listeners if not ipaddress.ip_address(item.address).is_unspecified]


def check_settings(hostname: str, dns: list[str] | None) -> list[str] | None:
    """Refuse a bad host name or nameserver before anything is written; the canonical nameserver list."""
    if not valid_hostname(hostname):
        raise AdminError(f"invalid host name {hostname!r}: expected a DNS name like mail.example.com")
    if dns is None:
        return None
    servers = []
    for entry in dns:
        server = normalize_nameserver(entry)
        if server is None:
            raise AdminError(f'invalid nameserver {entry!r}: expected "IP" or "IP:PORT"')
        servers.append(server)
    return servers


def init_data_dir(
    data_dir: Path,
    *,
    domain: str,
    hostname: str,
    listeners: list[ListenerConfig] | None = None,
    dns: list[str] | None = None,
) -> Config:
    """Create a complete data directory: config, private tree, account DB with `domain`, TLS certificate, and
    the DKIM keys of `domain`.

    The configuration file is written last: its presence is what marks a directory as initialised, so an
    interrupted `init` can simply be run again.
    """
    path = config_path(data_dir)
    if path.exists():
        raise AdminError(f"{data_dir} is already a postkontor data directory ({path} exists)")
    domain = normalize_domain(domain)
    servers = check_settings(hostname, dns)
    chosen = list(DEFAULT_LISTENERS if listeners is None else listeners)
    text = render_config(hostname, chosen, tls=True, dns=servers)
    try:
        config = parse_config(text, source=path.absolute(), data_dir=data_dir.absolute())
    except ConfigError as exc:  # only listeners given by the caller can get here: report them, not the file
        raise AdminError(f"invalid listeners: {exc.reason}") from None
    create_tree(data_dir)
    ensure_certificate(config, [hostname], listener_ips(chosen))
    with open_accounts(config) as accounts:
        if not accounts.is_local_domain(domain):  # left by an interrupted earlier run
            accounts.add_domain(domain)
    ensure_dkim_keys(config, domain)  # kept if an interrupted earlier run made them
    write_atomically(path, text.encode("utf-8"), mode=0o644)
    return config


def ensure_dkim_keys(config: Config, domain: str) -> DomainKeys:
    """The signing keys of `domain` (normalised), made now if it has none (RFC 6376, RFC 8463: Ed25519 + RSA)."""
    return KeyStore(config.data_dir).ensure(domain)


def add_domain(config: Config, domain: str) -> tuple[str, DomainKeys]:
    """Make `domain` local and give it DKIM keys; (the normalised name, its keys)."""
    name = normalize_domain(domain)
    with open_accounts(config) as accounts:
        accounts.add_domain(name)
    return name, ensure_dkim_keys(config, name)


def open_accounts(config: Config) -> SQLiteAccountStore:
    """The account store of `config`'s data directory, with the configured routing settings."""
    try:
        return SQLiteAccountStore(
            config.accounts_db,
            subaddress_separator=config.delivery.subaddress_separator,
            max_alias_depth=config.delivery.max_alias_depth,
        )
    except (sqlite3.Error, OSError) as exc:  # a damaged or unreadable file, said in one line
        raise AdminError(f"cannot open the account database {config.accounts_db}: {exc}") from exc
