"""The `postkontor` command: argument parsing and short, plain output around `admin` and the server.

Every failure an administrator can cause ends in one `postkontor: error: ...` line and exit status 2 (1 for
failures of the running system, such as a port already in use); a traceback means a bug in postkontor.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import getpass
import ipaddress
import os
import re
import shlex
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from postkontor.admin.datadir import AdminError, add_domain, init_data_dir, load_data_dir, open_accounts
from postkontor.admin.dev import DEMO_LOCALPART, DEMO_PASSWORD, prepare_dev
from postkontor.cli.dns_commands import add_dns_parsers, selector_summary
from postkontor.cli.queue_commands import add_queue_parser, run_queue_command
from postkontor.config.loader import ConfigError
from postkontor.config.model import Config, ListenerConfig, ListenerKind
from postkontor.store.accounts import AccountError
from postkontor.store.sqlite_accounts import normalize_domain, normalize_user_address

ENV_DATA = "POSTKONTOR_DATA"
DEV_DATA = Path("postkontor-dev")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_MAX_SIZE = 2**63 - 1  # what SQLite stores


class UserError(Exception):
    """A usage mistake argparse cannot see: no data directory, passwords that differ, no certificate."""


# --- values -------------------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Octets from "500M", "2G", "1024K" or "123456" (binary units: quotas are compared with disk usage)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        wanted = "use e.g. 500M, 2G, 1024K or octets (0 = unlimited)"
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: {wanted}")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size > _MAX_SIZE:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: too large")
    return size


def format_size(octets: int) -> str:
    if octets == 0:
        return "unlimited"
    for unit in ("T", "G", "M", "K"):
        if octets % _UNITS[unit] == 0:
            return f"{octets // _UNITS[unit]}{unit}"
    return str(octets)


def _endpoint(listener: ListenerConfig) -> str:
    host = f"[{listener.address}]" if ":" in listener.address else listener.address
    return f"{host}:{listener.port}"


def _dialable(address: str) -> str:
    """Where a client on this machine connects to reach a listener bound to `address`."""
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "::1"
    return address


def read_password(address: str) -> str:
    """Prompted twice on a terminal; otherwise one line of standard input, so scripts can pipe it in."""
    stdin = sys.stdin
    if stdin is None:
        raise UserError("no password: standard input is closed")
    try:
        if stdin.isatty():
            first = getpass.getpass(f"password for {address}: ")
            if first and getpass.getpass("repeat the password: ") != first:
                raise UserError("the passwords do not match")
        else:
            first = stdin.readline().removesuffix("\n").removesuffix("\r")
    except EOFError:
        first = ""
    except UnicodeDecodeError:
        raise UserError("the password on standard input is not UTF-8 text") from None
    if not first:
        raise UserError("no password given (type it twice, or pipe it on standard input)")
    return first


# --- commands -----------------------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    given = getattr(args, "data", None) or os.environ.get(ENV_DATA)
    if given:
        return Path(given)
    if args.command == "dev":
        return DEV_DATA
    raise UserError(f"no data directory: pass --data DIR or set {ENV_DATA}")


def _cmd_init(args: argparse.Namespace) -> int:
    data = _data_dir(args)
    domain = normalize_domain(args.domain)
    hostname = args.hostname or f"mail.{domain}"
    existing_cert = (data / "tls" / "cert.pem").exists()
    config = init_data_dir(data, domain=domain, hostname=hostname)
    assert config.tls is not None  # init always configures TLS
    cli = f"postkontor --data {shlex.quote(str(config.data_dir))}"
    certificate = "kept" if existing_cert else f"self-signed for {hostname}: replace it with a real one"
    print(f"created {config.data_dir}")
    print(f"  config       {config.source}")
    print(f"  accounts     {config.accounts_db}  (domain {domain})")
    print(f"  certificate  {config.tls.cert}  ({certificate})")
    print(f"  listeners    {', '.join(f'{item.kind.value} {_endpoint(item)}' for item in config.listeners)}")
    print(f"  dkim keys    {selector_summary(config, domain)}")
    print("next steps:")
    print(f"  {cli} user add you@{domain}")
    print(f"  {cli} alias add postmaster@{domain} you@{domain}")
    print(f"  {cli} dns {domain}     (every DNS record to publish; then `check {domain}`)")
    print(f"  {cli} serve")
    return 0


def _serve(config: Config, on_ready: Callable[[Config], None] | None = None) -> int:
    # Imported here so that admin commands start fast and work even if the server cannot be imported.
    from postkontor.server.app import serve
    from postkontor.server.tls import TLSSetupError

    try:
        return serve(config, on_ready=on_ready)
    except TLSSetupError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EACCES:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        elif exc.errno == errno.EADDRINUSE:
            hint = " (is another mail server or postkontor running?)"
        # asyncio's bind errors carry the address in strerror; file errors need str() for the file name
        _error(f"{exc.strerror if exc.strerror and not exc.filename else exc}{hint}")
        return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    return _serve(load_data_dir(_data_dir(args)))


_NOTES = {
    ListenerKind.MX: "(STARTTLS)",
    ListenerKind.SUBMISSION: "(STARTTLS, then AUTH)",
    ListenerKind.SUBMISSIONS: "(implicit TLS, then AUTH)",
    ListenerKind.IMAP: "(STARTTLS, then LOGIN)",
    ListenerKind.IMAPS: "(implicit TLS)",
    ListenerKind.POP3: "(STLS, then USER/PASS)",
    ListenerKind.POP3S: "(implicit TLS)",
}


def _cmd_dev(args: argparse.Namespace) -> int:
    data = _data_dir(args)
    config = prepare_dev(data, port_base=args.port_base, listen=args.listen, domain=args.domain, dns=args.dns)
    if args.workers is not None:
        if not 0 <= args.workers <= 256:
            raise UserError(f"--workers {args.workers}: expected 0 (one per CPU core) to 256")
        config = dataclasses.replace(config, workers=args.workers)
    demo = f"{DEMO_LOCALPART}@{normalize_domain(args.domain)}"

    def banner(running: Config) -> None:
        print(f"postkontor dev: data directory {running.data_dir}")
        for listener in running.listeners:
            print(f"  {listener.kind.value:<12} {_endpoint(listener):<16} {_NOTES[listener.kind]}")
        print(f"  login        {demo} / {DEMO_PASSWORD}")
        if running.tls is not None:
            print(f"  certificate  {running.tls.cert}  (self-signed)")
        submission = [item for item in running.listeners if item.kind is ListenerKind.SUBMISSION]
        if submission:
            first = submission[0]
            print(
                f"  try          swaks --server {_dialable(first.address)} --port {first.port} --tls"
                f" --auth PLAIN --auth-user {demo} --auth-password {DEMO_PASSWORD} --from {demo} --to {demo}"
            )
        imaps = [item for item in running.listeners if item.kind is ListenerKind.IMAPS]
        if imaps:
            url = f"imaps://{_dialable(imaps[0].address)}:{imaps[0].port}/INBOX;UID=1"
            print(f"  read         curl -k -u {demo}:{DEMO_PASSWORD} '{url}'")
        print("postkontor dev: ready", flush=True)

    return _serve(config, on_ready=banner)


def _cmd_domain(args: argparse.Namespace) -> int:
    config = load_data_dir(_data_dir(args))
    if args.action == "add":
        name, _keys = add_domain(config, args.domain)
        print(f"added domain {name}, DKIM keys {selector_summary(config, name)}")
        print(f"publish its DNS records: postkontor dns {name}")
        return 0
    with open_accounts(config) as accounts:
        if args.action == "remove":
            accounts.remove_domain(args.domain)
            print(f"removed domain {normalize_domain(args.domain)}")
        else:
            for domain in accounts.list_domains():
                print(domain)
    return 0


def _cmd_user(args: argparse.Namespace) -> int:
    config = load_data_dir(_data_dir(args))
    with open_accounts(config) as accounts:
        if args.action == "list":
            users = accounts.list_users(args.domain)
            width = max((len(user.address) for user in users), default=0)
            for user in users:
                print(f"{user.address:<{width}}  {format_size(user.quota)}")
            return 0
        if args.action == "add":
            # Every check the store would make after the password prompt, made before it.
            local, domain = normalize_user_address(args.address, config.delivery.subaddress_separator)
            name = f"{local}@{domain}"
            if not accounts.is_local_domain(domain):
                hint = f"add it with `postkontor domain add {domain}`"
                raise AccountError(f"domain {domain} is not a local domain; {hint}")
            if accounts.get_user(name) is not None:
                raise AccountError(f"user {name} already exists")
            accounts.add_user(name, read_password(name), args.quota)
            quota = f" (quota {format_size(args.quota)})" if args.quota else ""
            print(f"added user {name}{quota}")
            return 0
        found = accounts.get_user(args.address)
        if found is None:
            raise AccountError(f"no such user: {args.address}")  # before asking for a password in vain
        user = found
        if args.action == "remove":
            accounts.remove_user(user.address)
            local, _, domain = user.address.rpartition("@")
            print(f"removed user {user.address} (its mail stays in {config.mail_dir / domain / local})")
        elif args.action == "passwd":
            accounts.set_password(user.address, read_password(user.address))
            print(f"changed the password of {user.address}")
        else:
            accounts.set_quota(user.address, args.size)
            print(f"quota of {user.address}: {format_size(args.size)}")
    return 0


def _cmd_alias(args: argparse.Namespace) -> int:
    with open_accounts(load_data_dir(_data_dir(args))) as accounts:
        if args.action == "add":
            accounts.add_alias(args.source, args.targets)
            print(f"alias {args.source} -> {', '.join(args.targets)}")
        elif args.action == "remove":
            accounts.remove_alias(args.source, args.target)
            print(f"removed alias {args.source}" + (f" -> {args.target}" if args.target else ""))
        else:
            for alias in accounts.list_aliases(args.domain):
                print(f"{alias.source} -> {', '.join(alias.targets)}")
    return 0


def _cmd_queue(args: argparse.Namespace) -> int:
    return run_queue_command(args, load_data_dir(_data_dir(args)))


# --- parsing ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # `--data` is accepted before and after the subcommand; SUPPRESS keeps a later parser from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the data directory (default: ${ENV_DATA}; for dev: ./{DEV_DATA})",
    )
    parser = argparse.ArgumentParser(
        prog="postkontor", parents=[common], description="A complete, self-hosted mail server."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser("init", parents=[common], help="create a data directory")
    init.add_argument("--domain", required=True, help="the first mail domain, e.g. example.com")
    init.add_argument("--hostname", help="this server's DNS name (default: mail.DOMAIN)")
    init.set_defaults(handler=_cmd_init)

    serve = commands.add_parser("serve", parents=[common], help="run the server (until SIGTERM or SIGINT)")
    serve.set_defaults(handler=_cmd_serve)

    dev = commands.add_parser("dev", parents=[common], help="run a development server with a demo account")
    dev.add_argument(
        "--port-base",
        type=int,
        default=10000,
        metavar="N",
        help="listen on N+25, N+587 and N+465 (default 10000; 0 gives the standard ports)",
    )
    dev.add_argument("--listen", default="127.0.0.1", metavar="IP", help="address to bind (default 127.0.0.1)")
    dev.add_argument("--domain", default="example.test", help="the demo domain (default example.test)")
    dev.add_argument("--dns", metavar="HOST:PORT", help="nameserver to use (default: the system resolver)")
    dev.add_argument(
        "--workers", type=int, metavar="N", help="server processes (default: the config file's, one per CPU core)"
    )
    dev.set_defaults(handler=_cmd_dev)

    domain = commands.add_parser("domain", parents=[common], help="manage mail domains")
    domain_actions = domain.add_subparsers(dest="action", metavar="ACTION", required=True)
    domain_actions.add_parser("add", parents=[common], help="add a domain").add_argument("domain")
    domain_actions.add_parser("list", parents=[common], help="list the domains")
    domain_actions.add_parser("remove", parents=[common], help="remove an empty domain").add_argument("domain")
    domain.set_defaults(handler=_cmd_domain)

    user = commands.add_parser("user", parents=[common], help="manage users (mailboxes)")
    user_actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = user_actions.add_parser("add", parents=[common], help="add a user (password prompted or on stdin)")
    add.add_argument("address")
    add.add_argument("--quota", type=parse_size, default=0, metavar="SIZE", help="e.g. 500M, 2G; 0 = unlimited")
    listing = user_actions.add_parser("list", parents=[common], help="list users")
    listing.add_argument("domain", nargs="?")
    user_actions.add_parser("remove", parents=[common], help="remove a user (the mail is kept)").add_argument("address")
    user_actions.add_parser("passwd", parents=[common], help="set a user's password").add_argument("address")
    quota = user_actions.add_parser("quota", parents=[common], help="set a user's quota")
    quota.add_argument("address")
    quota.add_argument("size", type=parse_size, metavar="SIZE", help="e.g. 500M, 2G, 1024K; 0 = unlimited")
    user.set_defaults(handler=_cmd_user)

    alias = commands.add_parser("alias", parents=[common], help="manage aliases and catch-alls")
    alias_actions = alias.add_subparsers(dest="action", metavar="ACTION", required=True)
    alias_add = alias_actions.add_parser("add", parents=[common], help="forward SOURCE to TARGETs")
    alias_add.add_argument("source", help="local@domain, or @domain for a catch-all")
    alias_add.add_argument("targets", nargs="+", metavar="TARGET")
    alias_list = alias_actions.add_parser("list", parents=[common], help="list aliases")
    alias_list.add_argument("domain", nargs="?")
    alias_remove = alias_actions.add_parser("remove", parents=[common], help="remove an alias or one target")
    alias_remove.add_argument("source")
    alias_remove.add_argument("target", nargs="?")
    alias.set_defaults(handler=_cmd_alias)

    add_queue_parser(commands, common).set_defaults(handler=_cmd_queue)
    add_dns_parsers(commands, common, lambda args: load_data_dir(_data_dir(args)))
    return parser


def _error(message: str) -> None:
    print(f"postkontor: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: argparse has printed what is needed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (UserError, AdminError, AccountError, ConfigError) as exc:
        _error(str(exc))
        return 2
    except (OSError, sqlite3.Error) as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
