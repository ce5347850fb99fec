"""`postkontor check DOMAIN`: what DNS publishes for a domain, compared with what `postkontor dns` prints.

Every check yields one `Finding`. Required: the MX names our host, the host's A/AAAA holds the outbound address,
exactly one SPF record authorises that address (evaluated with our own RFC 7208 `check_host`, so includes,
redirects and `mx` count), every active DKIM selector publishes our public key, and a parseable DMARC record
applies to the domain. Optional (a warning only): retired DKIM selectors still in their grace period, MTA-STS,
TLS-RPT, the client SRV records and reverse DNS.

Exit status of the command (`exit_status`): 0 when every required record is right (warnings allowed), 1 when a
required record is missing or wrong, 3 when DNS could not answer for a required record and nothing required was
found wrong ("unknown", as monitoring plugins use it; 2 stays the CLI's usage-error status).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from postkontor.admin.dnsrecords import DomainRecords, ServiceRecord, mta_sts_policy, policy_id
from postkontor.dns.resolver import (
    DNSError,
    DNSPermanentError,
    DNSTemporaryError,
)
from postkontor.mailauth.dmarc import discover
from postkontor.mailauth.keys import DKIMRecord
from postkontor.mailauth.spf import check_host

__all__ = [
    "EXIT_OK",
    "EXIT_UNKNOWN",
    "EXIT_WRONG",
    "CheckLookup",
    "Finding",
    "check_domain",
    "exit_status",
    "finding_line",
    "summary_line",
]

State = Literal["ok", "missing", "wrong", "tempfail"]

EXIT_OK: Final = 0
EXIT_WRONG: Final = 1
EXIT_UNKNOWN: Final = 3
_SHOWN: Final = 60  # characters of a long TXT value shown in a finding
_SPF_RE: Final = re.compile(r"v=spf1(?: |\Z)", re.IGNORECASE)  # RFC 7208 §4.5
_STS_RE: Final = re.compile(r"v=STSv1[ \t]*(?:;|\Z)")  # RFC 8461 §3.1
_TLSRPT_RE: Final = re.compile(r"v=TLSRPTv1[ \t]*(?:;|\Z)")  # RFC 8460 §3


class CheckLookup(Protocol):
    """`Lookup` (mailauth.dnsview) plus "SRV", answered as "PRIORITY WEIGHT PORT TARGET" strings."""

    async def lookup(self, name: str, rdtype: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report. `what` names the record kind ("MX", "SPF", "DKIM" ...)."""

    state: State
    required: bool
    what: str
    detail: str


# ----------------------------------------------------------------------------------------------------- helpers


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _quoted(texts: Sequence[str]) -> str:
    return ", ".join(f'"{_short(text)}"' for text in texts) or "nothing"


async def _ask(resolver: CheckLookup, name: str, rdtype: str) -> list[str] | DNSError:
    """The records, [] for NODATA and NXDOMAIN alike (both mean "not published"), or the temporary error."""
    try:
        return await resolver.lookup(name, rdtype)
    except DNSPermanentError:
        return []
    except DNSError as exc:
        return exc


def _tempfail(required: bool, what: str, name: str, error: DNSError) -> Finding:
    return Finding("tempfail", required, what, f"{name}: DNS did not answer ({error})")


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _tags(text: str) -> dict[str, str]:
    """tag=value pairs (RFC 6376 §3.2), whitespace removed from the values (it is insignificant in p=)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), "".join(value.split()))
    return tags


# ------------------------------------------------------------------------------------------------------- checks


async def _check_mx(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    hosts = await _ask(resolver, plan.domain, "MX")
    if isinstance(hosts, DNSError):
        return [_tempfail(True, "MX", plan.domain, hosts)]
    if not hosts:
        return [Finding("missing", True, "MX", f"{plan.domain}: expected MX {plan.mx_record().data}")]
    if plan.hostname not in hosts:
        got = ", ".join(hosts)
        return [Finding("wrong", True, "MX", f"{plan.domain}: expected {plan.hostname}, got {got}")]
    return [Finding("ok", True, "MX", f"{plan.domain} -> {', '.join(hosts)}")]


async def _addresses(host: str, resolver: CheckLookup) -> list[str] | DNSError:
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        answer = await _ask(resolver, host, rdtype)
        if isinstance(answer, DNSError):
            return answer
        found += answer
    return found


async def _check_host(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    what = plan.address_type if plan.address else "A/AAAA"
    if plan.address is None:
        addresses = await _addresses(plan.hostname, resolver)
        if isinstance(addresses, DNSError):
            return [_tempfail(True, what, plan.hostname, addresses)]
        if not addresses:
            return [Finding("missing", True, what, f"{plan.hostname}: no address records")]
        unknown = "(the outbound address is not configured, so which one sends cannot be told)"
        return [Finding("ok", True, what, f"{plan.hostname} has {', '.join(addresses)} {unknown}")]
    answer = await _ask(resolver, plan.hostname, plan.address_type)
    if isinstance(answer, DNSError):
        return [_tempfail(True, what, plan.hostname, answer)]
    if not answer:
        return [Finding("missing", True, what, f"{plan.hostname}: expected {what} {plan.address}")]
    if not any(_same_ip(item, plan.address) for item in answer):
        got = ", ".join(answer)
        return [Finding("wrong", True, what, f"{plan.hostname}: expected {plan.address}, got {got}")]
    return [Finding("ok", True, what, f"{plan.hostname} has {', '.join(answer)}")]


async def _check_spf(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    texts = await _ask(resolver, plan.domain, "TXT")
    if isinstance(texts, DNSError):
        return [_tempfail(True, "SPF", plan.domain, texts)]
    records = [text for text in texts if _SPF_RE.match(text)]
    if not records:
        return [Finding("missing", True, "SPF", f'{plan.domain}: expected TXT "{plan.spf}"')]
    if len(records) > 1:
        detail = f"{plan.domain}: expected one SPF record, got {len(records)} (RFC 7208 4.5: permerror): "
        return [Finding("wrong", True, "SPF", detail + _quoted(records))]
    record = records[0]
    if plan.address is not None:
        senders = [plan.address]
    else:
        addresses = await _addresses(plan.hostname, resolver)
        if isinstance(addresses, DNSError):
            return [_tempfail(True, "SPF", plan.hostname, addresses)]
        if not addresses:
            detail = f'{plan.domain} has "{record}", not tested: no outbound address configured or published'
            return [Finding("missing", True, "SPF", detail)]
        senders = addresses
    for ip in senders:
        result = await check_host(ip, plan.domain, f"postmaster@{plan.domain}", plan.hostname, resolver)
        if result.result == "temperror":
            return [Finding("tempfail", True, "SPF", f"{plan.domain}: {result.problem}")]
        if result.result != "pass":
            why = result.result + (f": {result.problem}" if result.problem else "")
            detail = f'{plan.domain}: expected a record authorising {ip} ("{plan.spf}"), got "{record}" ({why})'
            return [Finding("wrong", True, "SPF", detail)]
    return [Finding("ok", True, "SPF", f'{plan.domain} "{record}" authorises {", ".join(senders)}')]


async def _check_dkim(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    if not plan.dkim:
        detail = f"{plan.domain}: no signing keys in the data directory (run `postkontor dkim rotate {plan.domain}`)"
        return [Finding("missing", True, "DKIM", detail)]
    return list(await asyncio.gather(*(_check_selector(item, resolver) for item in plan.dkim)))


async def _check_selector(item: DKIMRecord, resolver: CheckLookup) -> Finding:
    # A retired selector only matters for mail still in transit: nice to keep, not required.
    required = item.status == "active"
    texts = await _ask(resolver, item.name, "TXT")
    if isinstance(texts, DNSError):
        return _tempfail(required, "DKIM", item.name, texts)
    expected = _tags(item.value)
    found = [_tags(text) for text in texts]
    if any(tags.get("p") == expected["p"] and tags.get("k", "rsa") == expected["k"] for tags in found):
        return Finding("ok", required, "DKIM", f"{item.name} ({item.algorithm}, {item.status})")
    if not texts:
        detail = f'{item.name}: expected TXT "{_short(item.value)}" ({item.algorithm}, {item.status})'
        return Finding("missing", required, "DKIM", detail)
    return Finding("wrong", required, "DKIM", f'{item.name}: expected "{_short(item.value)}", got {_quoted(texts)}')


async def _check_dmarc(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    try:
        record, found_at, problem = await discover(plan.domain, resolver)
    except DNSTemporaryError as exc:
        return [_tempfail(True, "DMARC", plan.dmarc_name, exc)]
    if record is None:
        if problem:
            return [Finding("wrong", True, "DMARC", f'expected TXT "{plan.dmarc}", got: {problem}')]
        return [Finding("missing", True, "DMARC", f'{plan.dmarc_name}: expected TXT "{plan.dmarc}"')]
    notes = [f"p={record.policy}"]
    if record.policy == "none":
        notes.append("monitoring only")
    if found_at != plan.domain:
        notes.append(f"from the organisational domain's _dmarc.{found_at}")
    notes += record.warnings
    return [Finding("ok", True, "DMARC", f"_dmarc.{found_at} ({'; '.join(notes)})")]


async def _check_mta_sts(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    findings: list[Finding] = []
    texts = await _ask(resolver, plan.mta_sts_name, "TXT")
    if isinstance(texts, DNSError):
        findings.append(_tempfail(False, "MTA-STS", plan.mta_sts_name, texts))
    else:
        records = [text for text in texts if _STS_RE.match(text)]
        ids = {policy_id(mta_sts_policy(plan.hostname, mode)): mode for mode in ("testing", "enforce")}
        if not records:
            findings.append(Finding("missing", False, "MTA-STS", f'{plan.mta_sts_name}: "{plan.mta_sts_txt}"'))
        elif len(records) > 1:
            detail = f"{plan.mta_sts_name}: expected one record, got {_quoted(records)} (RFC 8461 3.1: ignored)"
            findings.append(Finding("wrong", False, "MTA-STS", detail))
        elif (mode := ids.get(_tags(records[0]).get("id", ""))) is None:
            detail = f'{plan.mta_sts_name}: expected "{plan.mta_sts_txt}", got "{records[0]}"'
            findings.append(Finding("wrong", False, "MTA-STS", detail + " (fine if you serve a policy of your own)"))
        else:
            findings.append(Finding("ok", False, "MTA-STS", f"{plan.mta_sts_name} (id of the {mode} policy)"))
    addresses = await _addresses(plan.mta_sts_host, resolver)
    if isinstance(addresses, DNSError):
        findings.append(_tempfail(False, "MTA-STS", plan.mta_sts_host, addresses))
    elif not addresses:
        detail = f"{plan.mta_sts_host}: no address, so {plan.policy_url} cannot be fetched"
        findings.append(Finding("missing", False, "MTA-STS", detail))
    else:
        findings.append(Finding("ok", False, "MTA-STS", f"{plan.mta_sts_host} has {', '.join(addresses)}"))
    return findings


async def _check_tlsrpt(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    texts = await _ask(resolver, plan.tlsrpt_name, "TXT")
    if isinstance(texts, DNSError):
        return [_tempfail(False, "TLS-RPT", plan.tlsrpt_name, texts)]
    records = [text for text in texts if _TLSRPT_RE.match(text)]
    if not records:
        return [Finding("missing", False, "TLS-RPT", f'{plan.tlsrpt_name}: expected TXT "{plan.tlsrpt}"')]
    if len(records) > 1:
        detail = f"{plan.tlsrpt_name}: expected one record, got {_quoted(records)} (RFC 8460 3: none applies)"
        return [Finding("wrong", False, "TLS-RPT", detail)]
    if not _tags(records[0]).get("rua"):
        detail = f'{plan.tlsrpt_name}: expected "{plan.tlsrpt}", got "{records[0]}" (no rua=)'
        return [Finding("wrong", False, "TLS-RPT", detail)]
    return [Finding("ok", False, "TLS-RPT", f'{plan.tlsrpt_name} "{records[0]}"')]


async def _check_srv(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    return list(await asyncio.gather(*(_check_service(plan.domain, item, resolver) for item in plan.services)))


async def _check_service(domain: str, service: ServiceRecord, resolver: CheckLookup) -> Finding:
    name = service.name(domain)
    answer = await _ask(resolver, name, "SRV")
    if isinstance(answer, DNSError):
        return _tempfail(False, "SRV", name, answer)
    wanted = f"{service.priority} {service.weight} {service.port} {service.target}."
    # RFC 6186 §3.4: priority and weight are the publisher's choice; the port and host are what clients use.
    if any(item.split()[2:] == [str(service.port), service.target] for item in answer):
        return Finding("ok", False, "SRV", f"{name} -> {service.target}:{service.port}")
    if not answer:
        return Finding("missing", False, "SRV", f"{name}: expected SRV {wanted}")
    return Finding("wrong", False, "SRV", f"{name}: expected {wanted}, got {', '.join(answer)}")


async def _check_ptr(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    name = plan.ptr_name
    if name is None:
        return []
    answer = await _ask(resolver, name, "PTR")
    if isinstance(answer, DNSError):
        return [_tempfail(False, "PTR", name, answer)]
    if not answer:
        return [Finding("missing", False, "PTR", f"{plan.address}: expected reverse DNS {plan.hostname}")]
    if plan.hostname not in answer:
        detail = f"{plan.address}: expected reverse DNS {plan.hostname}, got {', '.join(answer)}"
        return [Finding("wrong", False, "PTR", detail)]
    return [Finding("ok", False, "PTR", f"{plan.address} -> {plan.hostname}")]


_CHECKS: Final[tuple[Callable[[DomainRecords, CheckLookup], Awaitable[list[Finding]]], ...]] = (
    _check_mx,
    _check_host,
    _check_spf,
    _check_dkim,
    _check_dmarc,
    _check_mta_sts,
    _check_tlsrpt,
    _check_srv,
    _check_ptr,
)


async def check_domain(plan: DomainRecords, resolver: CheckLookup) -> list[Finding]:
    """Every finding for `plan.domain`, in a fixed order; the lookups run concurrently, so an unresponsive
    nameserver costs about one timeout per dependent chain, not one per record."""
    results = await asyncio.gather(*(check(plan, resolver) for check in _CHECKS))
    return [finding for findings in results for finding in findings]


# ------------------------------------------------------------------------------------------------------ report

_LABELS: Final[dict[tuple[State, bool], str]] = {
    ("ok", True): "ok",
    ("ok", False): "ok",
    ("missing", True): "MISSING",
    ("wrong", True): "WRONG",
    ("tempfail", True): "TEMPFAIL",
    ("missing", False): "warning",
    ("wrong", False): "warning",
    ("tempfail", False): "warning",
}


def finding_line(finding: Finding) -> str:
    """ "LABEL     WHAT     detail"; optional records that are not right say so at the end."""
    suffix = ""
    if not finding.required and finding.state != "ok":
        suffix = {"missing": " (missing, optional)", "wrong": " (differs, optional)"}.get(finding.state, " (optional)")
    return f"{_LABELS[finding.state, finding.required]:<9} {finding.what:<8} {finding.detail}{suffix}"


def exit_status(findings: Sequence[Finding]) -> int:
    required = [finding.state for finding in findings if finding.required]
    if "missing" in required or "wrong" in required:
        return EXIT_WRONG
    if "tempfail" in required:
        return EXIT_UNKNOWN
    return EXIT_OK


def summary_line(domain: str, findings: Sequence[Finding]) -> str:
    counts = {state: 0 for state in ("ok", "missing", "wrong", "tempfail")}
    warnings = 0
    for finding in findings:
        if finding.required or finding.state == "ok":
            counts[finding.state] += 1
        else:
            warnings += 1
    verdict = {
        EXIT_OK: "every required record is in place",
        EXIT_WRONG: "required records are missing or wrong",
        EXIT_UNKNOWN: "DNS did not answer for some required records; try again",
    }[exit_status(findings)]
    parts = f"{counts['ok']} ok, {counts['missing']} missing, {counts['wrong']} wrong"
    if counts["tempfail"]:
        parts += f", {counts['tempfail']} unanswered"
    return f"{domain}: {verdict} ({parts}, {warnings} warning{'' if warnings == 1 else 's'})"
