"""DMARC (RFC 7489) on reception: the author domain, policy discovery, identifier alignment, the policy to apply.

The organisational domain (§3.2) comes from the Public Suffix List shipped inside the `publicsuffixlist` package:
nothing is downloaded at run time, and the list is as fresh as the installed package. RFC 9091's "np" (policy
for non-existent subdomains) is supported. Reports (rua/ruf) are parsed but not sent.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from publicsuffixlist import PublicSuffixList

from postkontor.mailauth.dnsview import (
    DNSError,
    DNSNameNotFound,
    DNSPermanentError,
    DNSTemporaryError,
    Lookup,
    valid_domain,
)

__all__ = [
    "DMARCRecord",
    "DMARCRecordError",
    "DMARCResult",
    "FromHeaderError",
    "aligned",
    "author_domain",
    "check_dmarc",
    "check_message",
    "discover",
    "organizational_domain",
    "parse_record",
]

DMARCResultCode = Literal["pass", "fail", "none", "temperror", "permerror"]
Policy = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]

_POLICIES: Final[dict[str, Policy]] = {"none": "none", "quarantine": "quarantine", "reject": "reject"}
_LOWER: Final[dict[Policy, Policy]] = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_VERSION_RE: Final = re.compile(r"v[ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")
_URI_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s!,]+(?:![0-9]+[kmgtKMGT]?)?")
_FO_VALUES: Final = frozenset({"0", "1", "d", "s"})


class DMARCRecordError(ValueError):
    """A TXT record that is no usable DMARC record (§6.6.3: treated as if there were none)."""


class FromHeaderError(ValueError):
    """The message has no single RFC5322.From domain to apply DMARC to (§6.6.1)."""


@dataclass(frozen=True, slots=True)
class DMARCRecord:
    """A parsed policy record (§6.3). Invalid optional tags fall back to their defaults and are noted in
    `warnings`; `policy` may be a substituted "none" (§6.6.3: an invalid p= with a valid rua=)."""

    policy: Policy
    subdomain_policy: Policy | None = None
    nonexistent_policy: Policy | None = None  # RFC 9091 "np"
    pct: int = 100
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: tuple[str, ...] = ("0",)
    ri: int = 86400
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DMARCResult:
    """`result` is the DMARC verdict; `policy` what to do about it now: the published policy for this domain (p,
    sp or np) for a fail, lowered one step if pct sampling left the message out (§6.3 "pct"), else "none".
    `requested` is the published policy before sampling."""

    result: DMARCResultCode
    policy: Policy = "none"
    from_domain: str = ""
    policy_domain: str = ""
    requested: Policy | None = None
    spf_aligned: bool = False
    dkim_aligned: bool = False
    sampled_out: bool = False
    record: DMARCRecord | None = None
    problem: str = ""


# ------------------------------------------------------------------------------------------ record parsing (§6.3)


def _uris(value: str) -> tuple[str, ...]:
    return tuple(uri for uri in (part.strip() for part in value.split(",")) if _URI_RE.fullmatch(uri))


def parse_record(text: str) -> DMARCRecord:
    """One TXT record's text; DMARCRecordError if it is not a DMARC record or has no usable policy."""
    if not _VERSION_RE.match(text):
        raise DMARCRecordError("does not start with v=DMARC1")
    tags: dict[str, str] = {}
    warnings: list[str] = []
    for part in text.split(";")[1:]:
        part = part.strip(" \t\r\n")
        if not part:
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip(" \t").lower(), value.strip(" \t")
        if not equals or not name:
            warnings.append(f"ignored malformed tag {part!r}")
        elif name in tags:
            warnings.append(f"ignored repeated tag {name}=")
        else:
            tags[name] = value
    rua, ruf = _uris(tags.get("rua", "")), _uris(tags.get("ruf", ""))
    policy = _POLICIES.get(tags.get("p", "").lower())
    subdomain = _POLICIES.get(tags["sp"].lower()) if "sp" in tags else None
    if policy is None or ("sp" in tags and subdomain is None):
        # §6.6.3: a bad p= or sp= still counts as p=none if reports can be sent; otherwise no DMARC at all.
        if not rua:
            raise DMARCRecordError("no valid p= (and no valid rua=)")
        warnings.append("invalid p= or sp=: treated as p=none")
        policy, subdomain = "none", None
    nonexistent = _POLICIES.get(tags["np"].lower()) if "np" in tags else None
    if "np" in tags and nonexistent is None:
        warnings.append(f"ignored invalid np={tags['np']}")
    pct = 100
    if "pct" in tags:
        if tags["pct"].isascii() and tags["pct"].isdigit() and int(tags["pct"]) <= 100:
            pct = int(tags["pct"])
        else:
            warnings.append(f"invalid pct={tags['pct']}: using 100")
    adkim, aspf = _alignment(tags, "adkim", warnings), _alignment(tags, "aspf", warnings)
    fo = tuple(option for option in (part.strip() for part in tags.get("fo", "0").split(":")) if option in _FO_VALUES)
    ri = 86400
    if "ri" in tags:
        if tags["ri"].isascii() and tags["ri"].isdigit() and int(tags["ri"]) < 2**32:
            ri = int(tags["ri"])
        else:
            warnings.append(f"invalid ri={tags['ri']}: using 86400")
    return DMARCRecord(policy, subdomain, nonexistent, pct, adkim, aspf, rua, ruf, fo or ("0",), ri, tuple(warnings))


def _alignment(tags: dict[str, str], name: str, warnings: list[str]) -> Alignment:
    value = tags.get(name, "r").lower()
    if value == "s":
        return "s"
    if value != "r":
        warnings.append(f"invalid {name}={tags[name]}: using relaxed")
    return "r"


# --------------------------------------------------------------------------------------- domains and alignment


@functools.cache
def _psl() -> PublicSuffixList:
    # Parsing the list takes a while: once per process, on first use rather than at import.
    return PublicSuffixList()


def _normal(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def organizational_domain(domain: str) -> str:
    """§3.2: the public suffix plus one label; a public suffix itself is its own organisational domain."""
    domain = _normal(domain)
    return _psl().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, mode: Alignment) -> bool:
    """§3.1: strict means the same name; relaxed the same organisational domain."""
    identifier, from_domain = _normal(identifier), _normal(from_domain)
    if not identifier or not from_domain:
        return False
    if identifier == from_domain:
        return True
    return mode == "r" and organizational_domain(identifier) == organizational_domain(from_domain)


# ------------------------------------------------------------------------------------- the author domain (§6.6.1)

_FIELD_RE: Final = re.compile(rb"([^\x00-\x20\x7f:]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)")
_TOKEN_RE: Final = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^>]*>?|\\.|[(),]|[^"<(),\\]+', re.DOTALL)


def _from_values(header_block: bytes) -> list[str]:
    end = re.search(rb"\r?\n\r?\n", header_block)
    head = header_block[: end.start()] if end else header_block
    values: list[str] = []
    for match in _FIELD_RE.finditer(head):
        # Only fields that start a line: a continuation line is never a field of its own.
        if match.start() and head[match.start() - 1 : match.start()] != b"\n":
            continue
        if match.group(1).lower() == b"from":
            values.append(re.sub(rb"\r?\n", b"", match.group(2)).decode("utf-8", "replace"))
    return values


def _mailboxes(value: str) -> list[str]:
    """The addr-specs of a mailbox-list: comments dropped, quoted strings and <angle-addr>s kept whole."""
    addresses: list[str] = []
    depth = 0
    angle: str | None = None
    plain: list[str] = []
    for token in _TOKEN_RE.findall(value):
        if token == "(":
            depth += 1
        elif token == ")":
            depth = max(depth - 1, 0)
        elif depth:
            continue
        elif token == ",":
            addresses.append(angle if angle is not None else "".join(plain).strip())
            angle, plain = None, []
        elif token.startswith("<"):
            # An obsolete route (<@a,@b:user@domain>) is not part of the address.
            angle = token.strip("<>").rpartition(":")[2].strip()
        else:
            plain.append(token)
    addresses.append(angle if angle is not None else "".join(plain).strip())
    return [address for address in addresses if address]  # RFC 5322 §4.4 allows empty list elements


def author_domain(header_block: bytes) -> str:
    """The RFC5322.From domain, lower case: exactly one From field with exactly one address is required.

    Raises FromHeaderError otherwise (no From, several From fields, no or several addresses, no usable domain).
    """
    values = _from_values(header_block)
    if not values:
        raise FromHeaderError("no From header field")
    if len(values) > 1:
        raise FromHeaderError("more than one From header field")
    addresses = _mailboxes(values[0])
    if len(addresses) != 1:
        raise FromHeaderError("no address in From" if not addresses else "more than one address in From")
    local, at, domain = addresses[0].rpartition("@")
    domain = _normal(domain)
    if not at or not local or domain.startswith("["):
        raise FromHeaderError(f"no domain name in From address {addresses[0]!r}")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise FromHeaderError(f"invalid domain in From: {domain!r}") from None
    if not valid_domain(domain, multi_label=False) or not re.fullmatch(r"[a-z0-9_\-.]+", domain):
        raise FromHeaderError(f"invalid domain in From: {domain!r}")
    return domain


# ----------------------------------------------------------------------------------- discovery and evaluation (§6.6)


class _TempError(Exception):
    pass


async def _record_at(domain: str, resolver: Lookup) -> tuple[DMARCRecord | None, str]:
    """(record, problem) for _dmarc.<domain>: None when there is none, several, or only invalid ones."""
    try:
        texts = await resolver.lookup(f"_dmarc.{domain}", "TXT")
    except DNSPermanentError:
        return None, ""
    except DNSError as exc:
        raise _TempError(str(exc)) from None
    candidates = [text for text in texts if _VERSION_RE.match(text)]
    if len(candidates) > 1:
        return None, f"_dmarc.{domain}: more than one DMARC record"
    if not candidates:
        return None, ""
    try:
        return parse_record(candidates[0]), ""
    except DMARCRecordError as exc:
        return None, f"_dmarc.{domain}: {exc}"


async def discover(from_domain: str, resolver: Lookup) -> tuple[DMARCRecord | None, str, str]:
    """§6.6.3: (record, the domain it was found at, problem), first at the From domain, then at its
    organisational domain. Raises DNSTemporaryError if DNS could not answer."""
    from_domain = _normal(from_domain)
    try:
        record, problem = await _record_at(from_domain, resolver)
        if record is not None or problem.endswith("more than one DMARC record"):
            return record, from_domain, problem
        organizational = organizational_domain(from_domain)
        if organizational == from_domain:
            return None, from_domain, problem
        org_record, org_problem = await _record_at(organizational, resolver)
    except _TempError as exc:
        raise DNSTemporaryError(str(exc)) from None
    return org_record, organizational, org_problem or problem


async def _nonexistent(domain: str, resolver: Lookup) -> bool:
    # RFC 9091 §2.1: NXDOMAIN for the name (one query tells: NXDOMAIN is about the name, not a type).
    try:
        await resolver.lookup(domain, "A")
    except DNSNameNotFound:
        return True
    except DNSError:
        return False
    return False


async def check_dmarc(
    from_domain: str,
    resolver: Lookup,
    *,
    spf_result: str,
    spf_domain: str,
    dkim: Iterable[tuple[str, str]] = (),
    rng: Callable[[], float] = random.random,
) -> DMARCResult:
    """Evaluate DMARC for `from_domain` (§6.6.2).

    `spf_result`/`spf_domain`: the SPF result for the MAIL FROM domain (the HELO domain for a null sender);
    `dkim`: (result, d=) of every DKIM signature checked; `rng` returns [0, 1) for pct sampling.
    """
    from_domain = _normal(from_domain)
    try:
        record, policy_domain, problem = await discover(from_domain, resolver)
    except DNSError as exc:
        return DMARCResult("temperror", from_domain=from_domain, problem=str(exc))
    if record is None:
        return DMARCResult("none", from_domain=from_domain, policy_domain=policy_domain, problem=problem)
    spf_ok = spf_result.lower() == "pass" and aligned(spf_domain, from_domain, record.aspf)
    dkim_ok = any(result.lower() == "pass" and aligned(d, from_domain, record.adkim) for result, d in dkim)
    verdict = DMARCResult(
        "pass" if spf_ok or dkim_ok else "fail",
        from_domain=from_domain,
        policy_domain=policy_domain,
        spf_aligned=spf_ok,
        dkim_aligned=dkim_ok,
        record=record,
        problem=problem,
    )
    if verdict.result == "pass":
        return verdict
    requested = record.policy
    if policy_domain != from_domain:
        # Found at the organisational domain: sp= (or RFC 9091 np= for a name that does not exist) rules.
        if record.nonexistent_policy is not None and await _nonexistent(from_domain, resolver):
            requested = record.nonexistent_policy
        elif record.subdomain_policy is not None:
            requested = record.subdomain_policy
    policy, sampled_out = requested, False
    if record.pct < 100 and rng() * 100 >= record.pct:
        policy, sampled_out = _LOWER[requested], True
    return dataclasses.replace(verdict, policy=policy, requested=requested, sampled_out=sampled_out)


async def check_message(
    header_block: bytes,
    resolver: Lookup,
    *,
    spf_result: str,
    spf_domain: str,
    dkim: Iterable[tuple[str, str]] = (),
    rng: Callable[[], float] = random.random,
) -> DMARCResult:
    """check_dmarc() for a message's header block; a From without exactly one usable domain is a "permerror"
    (with policy "none": whether to refuse such a message is a local decision, RFC 7489 §6.6.1)."""
    try:
        domain = author_domain(header_block)
    except FromHeaderError as exc:
        return DMARCResult("permerror", problem=str(exc))
    return await check_dmarc(domain, resolver, spf_result=spf_result, spf_domain=spf_domain, dkim=dkim, rng=rng)
