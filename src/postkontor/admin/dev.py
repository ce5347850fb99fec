"""`postkontor dev`: a ready-to-use data directory for trying postkontor on one machine."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from postkontor.admin.certs import make_self_signed, write_atomically
from postkontor.admin.datadir import (
    CERT_FILE,
    KEY_FILE,
    AdminError,
    check_settings,
    config_path,
    create_tree,
    ensure_dkim_keys,
    init_data_dir,
    open_accounts,
)
from postkontor.config.loader import load_config, render_config
from postkontor.config.model import Config, ListenerConfig, ListenerKind
from postkontor.store.sqlite_accounts import normalize_domain

DEMO_LOCALPART = "demo"
DEMO_PASSWORD = "demo"
# Marks a directory `dev` made: `dev` rewrites the configuration on every run, which must never happen to a
# production directory someone points it at by mistake.
DEV_MARKER = ".postkontor-dev"
PORT_OFFSETS = {
    ListenerKind.MX: 25,
    ListenerKind.SUBMISSION: 587,
    ListenerKind.SUBMISSIONS: 465,
    ListenerKind.IMAP: 143,
    ListenerKind.IMAPS: 993,
    ListenerKind.POP3: 110,
    ListenerKind.POP3S: 995,
}


def dev_listeners(listen: str, port_base: int) -> list[ListenerConfig]:
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        raise AdminError(f"invalid listen address {listen!r}: expected an IP address") from None
    highest = port_base + max(PORT_OFFSETS.values())
    if port_base < 0 or highest > 65535:
        raise AdminError(f"invalid port base {port_base}: the ports must stay within 1..65535")
    return [ListenerConfig(kind, str(address), port_base + offset) for kind, offset in PORT_OFFSETS.items()]


def prepare_dev(data_dir: Path, *, port_base: int, listen: str, domain: str, dns: str | None) -> Config:
    """Create the dev directory on first use; later runs rewrite its config from the options, keep the rest.

    The user `demo@<domain>` (password `demo`), `postmaster@<domain>` (an alias for it) and the domain's DKIM keys
    are made for every domain `dev` is started with; existing accounts, keys and the certificate are never touched.
    """
    listeners = dev_listeners(listen, port_base)
    domain = normalize_domain(domain)
    hostname = f"mail.{domain}"
    servers = check_settings(hostname, [dns] if dns else None)
    path = config_path(data_dir)
    if path.exists():
        if not (data_dir / DEV_MARKER).exists():
            raise AdminError(
                f"{data_dir} was not made by `postkontor dev` and its config would be overwritten; "
                "use `postkontor serve` for it, or pass another --data directory"
            )
        create_tree(data_dir)
        _ensure_dev_certificate(data_dir, hostname, listeners)
        text = render_config(hostname, listeners, tls=True, dns=servers)
        if path.read_text(encoding="utf-8") != text:
            write_atomically(path, text.encode("utf-8"), mode=0o644)
        config = load_config(path, data_dir)
    else:
        create_tree(data_dir)
        marker = b"made by `postkontor dev`, which rewrites the config on every start\n"
        write_atomically(data_dir / DEV_MARKER, marker, mode=0o644)
        # Before init, which then keeps it: the dev certificate also names localhost and the listen address.
        _ensure_dev_certificate(data_dir, hostname, listeners)
        config = init_data_dir(data_dir, domain=domain, hostname=hostname, listeners=listeners, dns=servers)
    _ensure_demo_accounts(config, domain)
    ensure_dkim_keys(config, domain)  # `dev --domain` with a new domain gets keys like `domain add`
    return config


def _ensure_dev_certificate(data_dir: Path, hostname: str, listeners: list[ListenerConfig]) -> None:
    cert, key = data_dir / CERT_FILE, data_dir / KEY_FILE
    if cert.exists():
        return
    address = ipaddress.ip_address(listeners[0].address)
    ips = ["127.0.0.1", "::1"] if address.is_unspecified else [str(address)]
    make_self_signed(cert, key, ["localhost", hostname], ips)


def _ensure_demo_accounts(config: Config, domain: str) -> None:
    demo = f"{DEMO_LOCALPART}@{domain}"
    postmaster = f"postmaster@{domain}"
    with open_accounts(config) as accounts:
        if not accounts.is_local_domain(domain):
            accounts.add_domain(domain)
        if accounts.get_user(demo) is None:
            accounts.add_user(demo, DEMO_PASSWORD)
        has_alias = any(alias.source == postmaster for alias in accounts.list_aliases(domain))
        if not has_alias and accounts.get_user(postmaster) is None:
            accounts.add_alias(postmaster, [demo])
