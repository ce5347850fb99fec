"""`postkontor dns`, `postkontor check` and `postkontor dkim ...`: the records a domain publishes, and its keys.

`dns DOMAIN` prints zone-file lines (admin/dnsrecords.py); `check DOMAIN` asks DNS through the configured
nameservers and prints one line per record (admin/dnscheck.py; exit 0 all required records right, 1 something
required missing or wrong, 3 DNS did not answer); `dkim rotate|records|prune DOMAIN` manage the signing keys
(mailauth/keys.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from postkontor.admin.datadir import AdminError, open_accounts
from postkontor.admin.dnscheck import check_domain, exit_status, finding_line, summary_line
from postkontor.admin.dnsrecords import DomainRecords, domain_records, txt_data, zone_lines
from postkontor.config.model import Config
from postkontor.dns.resolver import MailResolver, parse_nameserver
from postkontor.mailauth.keys import KeyStore
from postkontor.store.sqlite_accounts import normalize_domain

Handler = Callable[[argparse.Namespace], int]


def _local_domain(config: Config, domain: str) -> str:
    """The normalised domain; AdminError unless it is one of ours (a typo must not get keys or records)."""
    name = normalize_domain(domain)
    with open_accounts(config) as accounts:
        if not accounts.is_local_domain(name):
            raise AdminError(f"{name} is not a local domain; add it with `postkontor domain add {name}`")
    return name


def selector_summary(config: Config, domain: str) -> str:
    """ "pk202611e (ed25519), pk202611r (rsa) in <dir>": the active selectors, for `init` and `domain add`."""
    store = KeyStore(config.data_dir)
    keys = store.active(domain)
    if keys is None:
        return "none"
    names = ", ".join(f"{key.selector} ({key.algorithm})" for key in keys.keys)
    return f"{names} in {store.root / keys.domain}"


def _warn(message: str) -> None:
    print(f"postkontor: warning: {message}", file=sys.stderr, flush=True)


def _warn_unknown_address(plan: DomainRecords) -> None:
    if plan.address is None:
        _warn(
            "no outbound address: every listener binds a wildcard address, so the A and SPF records hold a "
            "placeholder; set the mx listener's `address` in postkontor.toml to the server's public IP "
            "(outbound mail then leaves from it)"
        )


def run_dns(args: argparse.Namespace, config: Config) -> int:
    plan = domain_records(config, _local_domain(config, args.domain), mta_sts_mode=args.mta_sts_mode)
    if args.mta_sts_policy:
        sys.stdout.write(plan.mta_sts_policy)
        return 0
    _warn_unknown_address(plan)
    if not plan.dkim:
        _warn(f"{plan.domain} has no DKIM keys; create them with `postkontor dkim rotate {plan.domain}`")
    print("\n".join(zone_lines(plan)))
    return 0


def run_check(args: argparse.Namespace, config: Config) -> int:
    domain = _local_domain(config, args.domain)
    servers = config.dns_servers
    if not 0 < args.timeout <= 300:
        raise AdminError(f"--timeout {args.timeout:g}: expected 0 to 300 seconds")
    if args.dns:
        try:
            parse_nameserver(args.dns)
        except ValueError:
            raise AdminError(f'invalid nameserver {args.dns!r}: expected "IP" or "IP:PORT"') from None
        servers = (args.dns,)
    plan = domain_records(config, domain)
    via = ", ".join(servers) if servers else "the system resolver"
    print(f"checking {domain} (mail host {plan.hostname}) via {via}", flush=True)
    findings = asyncio.run(check_domain(plan, MailResolver(servers, timeout=args.timeout)))
    for finding in findings:
        print(finding_line(finding))
    print(summary_line(domain, findings))
    return exit_status(findings)


def _dkim_lines(store: KeyStore, domain: str) -> list[str]:
    lines: list[str] = []
    for record in store.dns_records(domain):
        lines.append(f"; selector {record.selector}: {record.algorithm}, {record.status}")
        lines.append(f"{record.name}. 3600 IN TXT {txt_data(record.value)}")
    return lines


def run_dkim(args: argparse.Namespace, config: Config) -> int:
    domain = _local_domain(config, args.domain)
    store = KeyStore(config.data_dir)
    if args.action == "records":
        lines = _dkim_lines(store, domain)
        if not lines:
            raise AdminError(f"{domain} has no DKIM keys; create them with `postkontor dkim rotate {domain}`")
        print("\n".join(lines))
    elif args.action == "rotate":
        before = {sel.name for sel in store.selectors(domain) if sel.retired is None and sel.removed is None}
        keys = store.rotate(domain)
        new = ", ".join(f"{key.selector} ({key.algorithm})" for key in keys.keys)
        print(f"{domain} now signs with {new}")
        if before:
            until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + store.grace))
            print(f"retired {', '.join(sorted(before))}: keep them published until {until}, then `dkim prune`")
        # The server signs with the new keys from the next message on: until the new TXT records are visible,
        # verifiers find no key for them (RFC 6376 §6.1.2 "temperror"/"permerror"), so publish without delay.
        print("publish now (all of these; the server already signs with the new selectors):")
        print("\n".join(_dkim_lines(store, domain)))
    else:
        removed = store.prune(domain)
        if removed:
            print(f"deleted the keys of {', '.join(removed)}; withdraw their TXT records from DNS")
        else:
            days = store.grace / 86400
            print(f"nothing to prune (retired selectors stay published for {days:g} days after a rotation)")
    return 0


def add_dns_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    load: Callable[[argparse.Namespace], Config],
) -> None:
    """The `dns`, `check` and `dkim` commands; `load` gives the configuration of the data directory."""

    def handler(run: Callable[[argparse.Namespace, Config], int]) -> Handler:
        def call(args: argparse.Namespace) -> int:
            config = load(args)
            try:
                return run(args, config)
            except ValueError as exc:  # a damaged DKIM state file or key: one line, not a traceback
                raise AdminError(f"DKIM keys of {args.domain}: {exc}") from None

        return call

    dns = commands.add_parser("dns", parents=[common], help="print the DNS records a domain needs (zone-file lines)")
    dns.add_argument("domain")
    dns.add_argument(
        "--mta-sts-mode",
        choices=("testing", "enforce"),
        default="testing",
        help="the MTA-STS policy to publish (default testing; enforce once the TLS reports are clean)",
    )
    dns.add_argument("--mta-sts-policy", action="store_true", help="print only the MTA-STS policy file (mta-sts.txt)")
    dns.set_defaults(handler=handler(run_dns))

    check = commands.add_parser(
        "check", parents=[common], help="look up a domain's records and report what is missing or wrong"
    )
    check.add_argument("domain")
    check.add_argument("--dns", metavar="HOST:PORT", help="ask this nameserver (default: the configured ones)")
    check.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per lookup (default 10)")
    check.set_defaults(handler=handler(run_check))

    dkim = commands.add_parser("dkim", parents=[common], help="manage a domain's DKIM signing keys")
    actions = dkim.add_subparsers(dest="action", metavar="ACTION", required=True)
    rotate = actions.add_parser("rotate", parents=[common], help="new keys now; the old ones stay published a week")
    rotate.add_argument("domain")
    records = actions.add_parser("records", parents=[common], help="print the DKIM TXT records to publish")
    records.add_argument("domain")
    prune = actions.add_parser("prune", parents=[common], help="delete keys retired longer than the grace period")
    prune.add_argument("domain")
    dkim.set_defaults(handler=handler(run_dkim))
