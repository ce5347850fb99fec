"""`postkontor dns DOMAIN`: every DNS record a mail domain needs, as zone-file lines ready to paste.

One `DomainRecords` value describes what should be published (built from the configuration and the DKIM key
store by `domain_records`); `zone_lines` renders it for the administrator and `postkontor check` (admin/dnscheck.py)
compares DNS with the very same value, so the two commands can never disagree about what "correct" means.

Records: MX (RFC 5321 §5.1) and the host's A/AAAA, SPF (RFC 7208), one DKIM TXT per published selector (RFC 6376
§3.6.2, RFC 8463), DMARC (RFC 7489 §6.3), MTA-STS (RFC 8461 §3) with its policy file, SMTP TLS reporting (RFC 8460
§3), and SRV records for mail clients (RFC 6186 §3, RFC 8314 §5.1); a PTR hint as a comment, because the reverse zone
belongs to whoever runs the address's network.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from postkontor.config.model import Config, ListenerConfig, ListenerKind
from postkontor.mailauth.keys import DKIMRecord, KeyStore, split_txt

__all__ = [
    "DEFAULT_TTL",
    "OUTBOUND_PLACEHOLDER",
    "DomainRecords",
    "MTASTSMode",
    "Record",
    "ServiceRecord",
    "domain_records",
    "mta_sts_policy",
    "outbound_address",
    "policy_id",
    "txt_data",
    "zone_lines",
]

MTASTSMode = Literal["testing", "enforce"]

DEFAULT_TTL: Final = 3600
MX_PREFERENCE: Final = 10
# Not a valid address, so a zone loader refuses the A line instead of publishing something wrong.
OUTBOUND_PLACEHOLDER: Final = "<OUTBOUND-IP>"
DMARC_REPORTS: Final = "dmarc-reports"
TLS_REPORTS: Final = "tls-reports"
MTA_STS_MAX_AGE: Final = 86400  # one day while testing; RFC 8461 §3.2 allows up to 31557600
SRV_WEIGHT: Final = 1
# RFC 6186 §3.4: one priority order across IMAP and POP3 (lower is preferred); RFC 8314 §5.1: implicit TLS first.
_SERVICES: Final[dict[ListenerKind, tuple[str, int]]] = {
    ListenerKind.SUBMISSIONS: ("_submissions._tcp", 0),
    ListenerKind.SUBMISSION: ("_submission._tcp", 10),
    ListenerKind.IMAPS: ("_imaps._tcp", 0),
    ListenerKind.IMAP: ("_imap._tcp", 10),
    ListenerKind.POP3S: ("_pop3s._tcp", 20),
    ListenerKind.POP3: ("_pop3._tcp", 30),
}


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record; `name` is absolute without the final dot, `data` RDATA in zone-file syntax."""

    name: str
    rtype: str
    data: str
    ttl: int = DEFAULT_TTL

    def line(self) -> str:
        return f"{self.name}. {self.ttl} IN {self.rtype} {self.data}"


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """An RFC 6186 SRV record: `service` is e.g. "_imaps._tcp"."""

    service: str
    priority: int
    port: int
    target: str
    weight: int = SRV_WEIGHT

    def name(self, domain: str) -> str:
        return f"{self.service}.{domain}"


@dataclass(frozen=True, slots=True)
class DomainRecords:
    """What `domain` should publish. `address` is the outbound address (None: unknown, placeholders printed)."""

    domain: str
    hostname: str
    address: str | None
    dkim: tuple[DKIMRecord, ...]
    services: tuple[ServiceRecord, ...]
    mta_sts_mode: MTASTSMode = "testing"

    @property
    def address_type(self) -> str:
        if self.address is not None and ipaddress.ip_address(self.address).version == 6:
            return "AAAA"
        return "A"

    @property
    def spf(self) -> str:
        mechanism = "ip6" if self.address_type == "AAAA" else "ip4"
        return f"v=spf1 {mechanism}:{self.address or OUTBOUND_PLACEHOLDER} -all"

    @property
    def dmarc(self) -> str:
        return f"v=DMARC1; p=quarantine; rua=mailto:{DMARC_REPORTS}@{self.domain}"

    @property
    def dmarc_name(self) -> str:
        return f"_dmarc.{self.domain}"

    @property
    def tlsrpt(self) -> str:
        return f"v=TLSRPTv1; rua=mailto:{TLS_REPORTS}@{self.domain}"

    @property
    def tlsrpt_name(self) -> str:
        return f"_smtp._tls.{self.domain}"

    @property
    def mta_sts_policy(self) -> str:
        return mta_sts_policy(self.hostname, self.mta_sts_mode)

    @property
    def mta_sts_txt(self) -> str:
        return f"v=STSv1; id={policy_id(self.mta_sts_policy)}"

    @property
    def mta_sts_name(self) -> str:
        return f"_mta-sts.{self.domain}"

    @property
    def mta_sts_host(self) -> str:
        return f"mta-sts.{self.domain}"

    @property
    def policy_url(self) -> str:
        return f"https://{self.mta_sts_host}/.well-known/mta-sts.txt"

    @property
    def hostname_in_zone(self) -> bool:
        return self.hostname == self.domain or self.hostname.endswith(f".{self.domain}")

    @property
    def ptr_name(self) -> str | None:
        return None if self.address is None else ipaddress.ip_address(self.address).reverse_pointer

    def mx_record(self) -> Record:
        return Record(self.domain, "MX", f"{MX_PREFERENCE} {self.hostname}.")

    def host_record(self) -> Record:
        return Record(self.hostname, self.address_type, self.address or OUTBOUND_PLACEHOLDER)

    def spf_record(self) -> Record:
        return Record(self.domain, "TXT", txt_data(self.spf))

    def dkim_records(self) -> list[Record]:
        return [Record(item.name, "TXT", txt_data(item.value)) for item in self.dkim]

    def srv_records(self) -> list[Record]:
        return [
            Record(item.name(self.domain), "SRV", f"{item.priority} {item.weight} {item.port} {item.target}.")
            for item in self.services
        ]

    def records(self) -> list[Record]:
        """Every record for the zone, in the order `zone_lines` prints them (without the comment-only PTR)."""
        return [
            self.mx_record(),
            self.host_record(),
            self.spf_record(),
            *self.dkim_records(),
            Record(self.dmarc_name, "TXT", txt_data(self.dmarc)),
            Record(self.mta_sts_name, "TXT", txt_data(self.mta_sts_txt)),
            Record(self.mta_sts_host, "CNAME", f"{self.hostname}."),
            Record(self.tlsrpt_name, "TXT", txt_data(self.tlsrpt)),
            *self.srv_records(),
        ]


def txt_data(value: str) -> str:
    """TXT RDATA as quoted character-strings of at most 255 octets each, on one line (RFC 1035 §3.3.14, §5.1)."""
    return " ".join('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"' for part in split_txt(value))


def mta_sts_policy(hostname: str, mode: MTASTSMode = "testing") -> str:
    """The policy file (RFC 8461 §3.2); LF line ends, which the policy ABNF allows beside CRLF."""
    return f"version: STSv1\nmode: {mode}\nmx: {hostname}\nmax_age: {MTA_STS_MAX_AGE}\n"


def policy_id(policy: str) -> str:
    """RFC 8461 §3.1 id (1-32 alphanumerics) from the policy text: it changes exactly when the policy does."""
    return hashlib.sha256(policy.encode("utf-8")).hexdigest()[:20]


def outbound_address(config: Config) -> str | None:
    """The address remote servers see our mail come from, as far as the configuration tells.

    The MX listener's specific address is the one outbound connections bind to (`Config.bind_address`); failing
    that the first specific listener address is the best guess; with only wildcard listeners the kernel picks the
    source address and we cannot know it.
    """
    if config.bind_address is not None:
        return str(ipaddress.ip_address(config.bind_address))
    for listener in config.listeners:
        address = ipaddress.ip_address(listener.address)
        if not address.is_unspecified:
            return str(address)
    return None


def services(listeners: Iterable[ListenerConfig], hostname: str) -> tuple[ServiceRecord, ...]:
    """One SRV record per configured client service (the first listener of a kind), in `_SERVICES` order."""
    ports: dict[ListenerKind, int] = {}
    for listener in listeners:
        ports.setdefault(listener.kind, listener.port)
    return tuple(
        ServiceRecord(service, priority, ports[kind], hostname)
        for kind, (service, priority) in _SERVICES.items()
        if kind in ports
    )


def domain_records(
    config: Config, domain: str, keys: KeyStore | None = None, *, mta_sts_mode: MTASTSMode = "testing"
) -> DomainRecords:
    """What `domain` (normalised by the caller) should publish for the server `config` describes."""
    store = keys if keys is not None else KeyStore(config.data_dir)
    hostname = config.hostname.rstrip(".").lower()
    return DomainRecords(
        domain=domain,
        hostname=hostname,
        address=outbound_address(config),
        dkim=tuple(store.dns_records(domain)),
        services=services(config.listeners, hostname),
        mta_sts_mode=mta_sts_mode,
    )


def _comments(lines: Sequence[str]) -> list[str]:
    return [f"; {line}".rstrip() for line in lines]


def zone_lines(plan: DomainRecords) -> list[str]:
    """The `postkontor dns` output: record lines and `;` comments, pasteable into a zone file as a whole."""
    domain, host = plan.domain, plan.hostname
    where = f"outbound address {plan.address}" if plan.address else "outbound address NOT CONFIGURED"
    lines = _comments([f"DNS records for {domain}: mail host {host}, {where}", "Names are fully qualified."])
    lines += ["", "; Mail exchanger (RFC 5321 5.1) and the mail host's address", plan.mx_record().line()]
    if not plan.hostname_in_zone:
        lines.append(f"; the next record belongs in the zone that holds {host}:")
    if plan.address is None:
        lines.append(f"; replace {OUTBOUND_PLACEHOLDER} below with the address this server sends mail from")
    lines.append(plan.host_record().line())
    lines += [f"; SPF (RFC 7208): only {plan.address or 'the outbound address'} may send mail as {domain}"]
    lines.append(plan.spf_record().line())
    if plan.dkim:
        for item, record in zip(plan.dkim, plan.dkim_records(), strict=True):
            state = "signing now" if item.status == "active" else "retired, kept for mail still in transit"
            lines += [f"; DKIM (RFC 6376): selector {item.selector}, {item.algorithm}, {state}", record.line()]
    else:
        lines.append(f"; DKIM: {domain} has no signing keys yet; create them with `postkontor dkim rotate {domain}`")
    lines += [
        f"; DMARC (RFC 7489): aggregate reports go to {DMARC_REPORTS}@{domain}",
        Record(plan.dmarc_name, "TXT", txt_data(plan.dmarc)).line(),
        f"; MTA-STS (RFC 8461): serve the policy below at {plan.policy_url}",
        Record(plan.mta_sts_name, "TXT", txt_data(plan.mta_sts_txt)).line(),
        Record(plan.mta_sts_host, "CNAME", f"{host}.").line(),
        f"; SMTP TLS reporting (RFC 8460): reports go to {TLS_REPORTS}@{domain}",
        Record(plan.tlsrpt_name, "TXT", txt_data(plan.tlsrpt)).line(),
    ]
    if plan.services:
        lines.append("; Mail client settings (RFC 6186, RFC 8314 5.1): lower priority is preferred")
        lines += [record.line() for record in plan.srv_records()]
    if plan.ptr_name is not None:
        lines.append("; Reverse DNS: ask whoever runs the network of the address to set")
        lines.append(f";   {plan.ptr_name}. {DEFAULT_TTL} IN PTR {host}.")
    lines += [""]
    lines += _comments(
        [
            f"MTA-STS policy file: serve it as text/plain at {plan.policy_url}",
            f"over HTTPS with a certificate valid for {plan.mta_sts_host}. Once the TLS reports are clean, switch",
            f"to `postkontor dns {domain} --mta-sts-mode enforce` (a new policy, hence a new id).",
            *(f"  {line}" for line in plan.mta_sts_policy.splitlines()),
            "Report addresses: make them reach someone, e.g.",
            f"  postkontor alias add {DMARC_REPORTS}@{domain} postmaster@{domain}",
            f"  postkontor alias add {TLS_REPORTS}@{domain} postmaster@{domain}",
        ]
    )
    return lines
