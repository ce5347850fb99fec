"""SPF, the Sender Policy Framework (RFC 7208): `check_host()` and the MAIL FROM / HELO identities around it.

Our own evaluator rather than pyspf: pyspf is synchronous (it would block the event loop or need a thread per
check), takes its DNS through a module-global hook instead of an injectable resolver, and has not been released
since 2020. This one asks DNS only through `Lookup` (normally `MailResolver.lookup`, with its TTL cache).

Covered: record selection (§4.5), every mechanism with CIDR lengths (§5), redirect= and exp= (§6), macros (§7),
the limits of §4.6.4 (10 DNS-querying terms, 2 void lookups, 10 names per mx/ptr), permerror for any syntax error
anywhere in a record (§4.6), temperror for DNS trouble, IPv4-mapped IPv6 clients treated as IPv4, and an overall
time limit (§4.6.4 suggests 20 s). Nothing here raises for bad DNS data: every outcome is an `SPFResult`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Final, Literal

from postkontor.mailauth.dnsview import DNSError, DNSPermanentError, Lookup, valid_domain

__all__ = ["SPFResult", "SPFResultCode", "check_helo", "check_host", "check_mail_from"]

SPFResultCode = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_DNS_TERMS: Final = 10  # §4.6.4: include, a, mx, ptr, exists and redirect together
MAX_VOID_LOOKUPS: Final = 2  # §4.6.4: NXDOMAIN or NODATA answers
MAX_NAMES: Final = 10  # §4.6.4: MX hosts (more is a permerror) and PTR names (the rest are ignored)
DEFAULT_LIFETIME: Final = 20.0  # §4.6.4: "at least 20 seconds" for the whole evaluation

_QUALIFIERS: Final[dict[str, SPFResultCode]] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


@dataclass(frozen=True, slots=True)
class SPFResult:
    """The outcome of one check.

    `domain` is the domain whose record decided (after redirects), `mechanism` the term that matched as written
    ("" when none did), `explanation` the expanded exp= text for a fail (RFC 7208 §6.2), `problem` why the result
    is none/temperror/permerror, for logs and for the Authentication-Results reason.
    """

    result: SPFResultCode
    domain: str = ""
    mechanism: str = ""
    explanation: str = ""
    problem: str = ""


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


class _NoRecord(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- macros (§7)


@dataclass(frozen=True, slots=True)
class _Macro:
    letter: str  # lower case
    escape: bool  # an upper-case letter: URL-escape the result (§7.3)
    digits: int  # keep this many right-hand parts; 0 = all
    reverse: bool
    delimiters: str


_MacroString = tuple[str | _Macro, ...]

_EXPAND_RE: Final = re.compile(r"\{([slodiphcrtvSLODIPHCRTV])([0-9]*)([rR]?)([.\-+,/_=]*)\}")
_LITERAL_RE: Final = re.compile(r"[\x21-\x24\x26-\x7e]*")  # macro-literal, §7.1
_EXPLAIN_LITERAL_RE: Final = re.compile(r"[\x20-\x24\x26-\x7e]*")  # explain-string also allows SP
_ESCAPES: Final = {"%": "%", "_": " ", "-": "%20"}


def _parse_macro_string(text: str, *, explain: bool = False) -> _MacroString:
    """Tokens of a macro-string; _PermError on any syntax error (§7.1: a lone "%" is one)."""
    tokens: list[str | _Macro] = []
    literal = _EXPLAIN_LITERAL_RE if explain else _LITERAL_RE
    pos = 0
    while True:
        percent = text.find("%", pos)
        chunk = text[pos:] if percent < 0 else text[pos:percent]
        if chunk:
            if not literal.fullmatch(chunk):
                raise _PermError(f"invalid character in {text!r}")
            tokens.append(chunk)
        if percent < 0:
            return tuple(tokens)
        following = text[percent + 1 : percent + 2]
        if following in _ESCAPES:
            tokens.append(_ESCAPES[following])
            pos = percent + 2
            continue
        match = _EXPAND_RE.match(text, percent + 1) if following == "{" else None
        if match is None:
            raise _PermError(f"invalid macro in {text!r}")
        letter, digits, reverse, delimiters = match.groups()
        if letter.lower() in "crt" and not explain:
            raise _PermError(f"macro %{{{letter}}} is only allowed in exp text (§7.2)")
        if digits and (int(digits) == 0 or len(digits) > 3):
            raise _PermError(f"invalid macro transformer in {text!r}")
        tokens.append(_Macro(letter.lower(), letter.isupper(), int(digits or 0), bool(reverse), delimiters or "."))
        pos = match.end()


def _transform(value: str, macro: _Macro) -> str:
    parts = re.split(f"[{re.escape(macro.delimiters)}]", value)
    if macro.reverse:
        parts.reverse()
    if macro.digits:
        parts = parts[-macro.digits :]
    result = ".".join(parts)
    # §7.3: upper-case letters are URL-escaped; quote() keeps exactly the RFC 3986 unreserved characters.
    return urllib.parse.quote(result, safe="") if macro.escape else result


# ------------------------------------------------------------------------------------------- record syntax (§4.6)


@dataclass(frozen=True, slots=True)
class _Directive:
    qualifier: SPFResultCode
    name: str  # mechanism, lower case
    text: str  # the term as written
    domain: _MacroString | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True, slots=True)
class _Record:
    directives: tuple[_Directive, ...]
    redirect: _MacroString | None
    exp: _MacroString | None
    has_all: bool


_SPF_VERSION_RE: Final = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)
_MODIFIER_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.DOTALL)
_MECHANISM_RE: Final = re.compile(r"([+\-~?]?)([A-Za-z0-9]+)(.*)", re.DOTALL)
_TOPLABEL: Final = r"(?:[0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*|[0-9A-Za-z]+-[0-9A-Za-z\-]*[0-9A-Za-z])"
# domain-end (§7.1): "." toplabel ["."], or a macro-expand (a final dot after a macro is tolerated).
_DOMAIN_END_RE: Final = re.compile(r"(?:\." + _TOPLABEL + r"\.?|%\{[^}]*\}\.?|%[%_-])\Z")
_DUAL_CIDR_RE: Final = re.compile(r"(?:/(0|[1-9][0-9]{0,2}))?(?://(0|[1-9][0-9]{0,2}))?\Z")
_CIDR_RE: Final = re.compile(r"/(0|[1-9][0-9]{0,2})\Z")
_IPV4_RE: Final = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def _domain_spec(text: str) -> _MacroString:
    if not text or not _DOMAIN_END_RE.search(text):
        raise _PermError(f"invalid domain-spec {text!r}")
    return _parse_macro_string(text)


def _split_dual_cidr(text: str) -> tuple[str, int, int]:
    match = _DUAL_CIDR_RE.search(text)
    assert match is not None  # both parts are optional: it always matches at the end
    cidr4, cidr6 = int(match.group(1) or 32), int(match.group(2) or 128)
    if cidr4 > 32 or cidr6 > 128:
        raise _PermError(f"invalid CIDR length in {text!r}")
    return text[: match.start()], cidr4, cidr6


def _parse_network(text: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    limit = 32 if version == 4 else 128
    cidr = _CIDR_RE.search(text)
    address_text = text[: cidr.start()] if cidr else text
    length = int(cidr.group(1)) if cidr else limit
    if length > limit or (version == 4 and not _IPV4_RE.fullmatch(address_text)):
        raise _PermError(f"invalid ip{version} network {text!r}")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise _PermError(f"invalid ip{version} network {text!r}") from None
    if address.version != version:
        raise _PermError(f"invalid ip{version} network {text!r}")
    return ipaddress.ip_network((address, length), strict=False)


def _parse_directive(term: str) -> _Directive:
    match = _MECHANISM_RE.fullmatch(term)
    if match is None:
        raise _PermError(f"invalid term {term!r}")
    qualifier = _QUALIFIERS[match.group(1) or "+"]
    name, tail = match.group(2).lower(), match.group(3)
    if name == "all":
        if tail:
            raise _PermError(f"invalid term {term!r}")
        return _Directive(qualifier, name, term)
    if name in ("include", "exists"):
        if not tail.startswith(":"):
            raise _PermError(f"{name} needs a domain: {term!r}")
        return _Directive(qualifier, name, term, domain=_domain_spec(tail[1:]))
    if name in ("a", "mx"):
        rest, cidr4, cidr6 = _split_dual_cidr(tail)
        if rest and not rest.startswith(":"):
            raise _PermError(f"invalid term {term!r}")
        domain = _domain_spec(rest[1:]) if rest else None
        return _Directive(qualifier, name, term, domain=domain, cidr4=cidr4, cidr6=cidr6)
    if name == "ptr":
        if tail and not tail.startswith(":"):
            raise _PermError(f"invalid term {term!r}")
        return _Directive(qualifier, name, term, domain=_domain_spec(tail[1:]) if tail else None)
    if name in ("ip4", "ip6"):
        if not tail.startswith(":"):
            raise _PermError(f"{name} needs a network: {term!r}")
        return _Directive(qualifier, name, term, network=_parse_network(tail[1:], 4 if name == "ip4" else 6))
    raise _PermError(f"unknown mechanism {term!r}")


@functools.lru_cache(maxsize=1024)
def _parse_record(text: str) -> _Record:
    """The whole record, checked before anything is evaluated (§4.6: a syntax error anywhere is a permerror)."""
    directives: list[_Directive] = []
    modifiers: dict[str, _MacroString] = {}
    for term in text.split(" ")[1:]:
        if not term:
            continue  # terms are separated by one or more SP (§4.6.1)
        modifier = _MODIFIER_RE.fullmatch(term)
        if modifier is None:
            directives.append(_parse_directive(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name in ("redirect", "exp"):
            if name in modifiers:
                raise _PermError(f"{name}= appears more than once (§6)")
            modifiers[name] = _domain_spec(value)
        else:
            _parse_macro_string(value)  # unknown modifiers are ignored, but must still be well-formed (§6)
    has_all = any(directive.name == "all" for directive in directives)
    return _Record(tuple(directives), modifiers.get("redirect"), modifiers.get("exp"), has_all)


# ---------------------------------------------------------------------------------------------- evaluation (§4)


@dataclass(slots=True)
class _Context:
    resolver: Lookup
    ip: IPAddress
    sender: str
    local: str
    sender_domain: str
    helo: str
    receiver: str
    dns_terms: int = 0
    voids: int = 0
    validated: list[str] | None = field(default=None)

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _PermError(f"more than {MAX_DNS_TERMS} DNS-querying terms (§4.6.4)")

    async def query(self, name: str, rdtype: str, *, void_counts: bool = True) -> list[str]:
        try:
            records = await self.resolver.lookup(name, rdtype)
        except DNSPermanentError:
            records = []  # NXDOMAIN, or a name that cannot exist: both "void"
        except DNSError as exc:
            raise _TempError(str(exc)) from None
        if not records and void_counts:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _PermError(f"more than {MAX_VOID_LOOKUPS} void DNS lookups (§4.6.4)")
        return records

    async def validated_names(self) -> list[str]:
        """PTR names of the client whose forward lookup leads back to it (§5.5); DNS errors skip a name."""
        if self.validated is None:
            try:
                names = await self.resolver.lookup(self.ip.reverse_pointer, "PTR")
            except DNSError:
                names = []
            family = "A" if self.ip.version == 4 else "AAAA"
            validated: list[str] = []
            for name in names[:MAX_NAMES]:
                try:
                    addresses = await self.resolver.lookup(name, family)
                except DNSError:
                    continue
                if any(_same_address(address, self.ip, 128) for address in addresses):
                    validated.append(name.lower().rstrip("."))
            self.validated = validated
        return self.validated

    async def expand(self, macros: _MacroString, domain: str) -> str:
        parts: list[str] = []
        for token in macros:
            parts.append(
                token if isinstance(token, str) else _transform(await self._value(token.letter, domain), token)
            )
        return "".join(parts)

    async def _value(self, letter: str, domain: str) -> str:
        if letter == "s":
            return self.sender
        if letter == "l":
            return self.local
        if letter == "o":
            return self.sender_domain
        if letter == "d":
            return domain
        if letter == "i":
            if self.ip.version == 4:
                return str(self.ip)
            return ".".join(self.ip.exploded.replace(":", ""))  # §7.3: dot-separated nibbles
        if letter == "p":
            return _pick_name(await self.validated_names(), domain)
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return self.receiver
        return str(int(time.time()))  # "t"

    async def target(self, macros: _MacroString | None, domain: str) -> str:
        """A term's <target-name>: the expanded domain-spec, or the current domain (§4.8)."""
        if macros is None:
            return domain
        name = (await self.expand(macros, domain)).rstrip(".")
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]  # §7.3: drop labels from the left until it fits
        if not valid_domain(name, multi_label=False):
            raise _PermError(f"invalid target name {name!r}")
        return name


def _pick_name(names: list[str], domain: str) -> str:
    # §7.3 "p": the domain itself if validated, else a subdomain of it, else any validated name.
    domain = domain.lower()
    for name in names:
        if name == domain:
            return name
    for name in names:
        if name.endswith("." + domain):
            return name
    return names[0] if names else "unknown"


def _same_address(text: str, ip: IPAddress, cidr: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.version != ip.version:
        return False
    shift = address.max_prefixlen - min(cidr, address.max_prefixlen)
    return int(address) >> shift == int(ip) >> shift


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: SPFResultCode
    domain: str
    mechanism: str
    record: _Record  # the record whose exp= explains a fail (§6.2: redirect's target, never an include's)


async def _matches(ctx: _Context, directive: _Directive, domain: str) -> bool:
    name = directive.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        network = directive.network
        assert network is not None
        return ctx.ip.version == network.version and ctx.ip in network
    ctx.count_term()
    target = await ctx.target(directive.domain, domain)
    cidr = directive.cidr4 if ctx.ip.version == 4 else directive.cidr6
    family = "A" if ctx.ip.version == 4 else "AAAA"
    if name == "include":
        try:
            outcome = await _evaluate(ctx, target)
        except _NoRecord:
            raise _PermError(f"include:{target} has no SPF record") from None
        return outcome.result == "pass"
    if name == "a":
        return any(_same_address(address, ctx.ip, cidr) for address in await ctx.query(target, family))
    if name == "mx":
        hosts = await ctx.query(target, "MX")
        if len(hosts) > MAX_NAMES:
            raise _PermError(f"mx:{target} has more than {MAX_NAMES} MX records (§4.6.4)")
        for host in hosts:
            addresses = await ctx.query(host, family, void_counts=False)
            if any(_same_address(address, ctx.ip, cidr) for address in addresses):
                return True
        return False
    if name == "ptr":
        target = target.lower()
        names = await ctx.validated_names()
        return any(host == target or host.endswith("." + target) for host in names)
    # "exists": an A lookup whatever the client's family (§5.7)
    return bool(await ctx.query(target, "A"))


def _is_spf(text: str) -> bool:
    return _SPF_VERSION_RE.match(text) is not None


async def _evaluate(ctx: _Context, domain: str) -> _Outcome:
    """check_host() proper for one domain; raises _NoRecord, _PermError, _TempError."""
    try:
        texts = await ctx.resolver.lookup(domain, "TXT")
    except DNSPermanentError:
        raise _NoRecord(f"{domain}: no such domain") from None
    except DNSError as exc:
        raise _TempError(str(exc)) from None
    records = [text for text in texts if _is_spf(text)]
    if not records:
        raise _NoRecord(f"{domain}: no SPF record")
    if len(records) > 1:
        raise _PermError(f"{domain}: more than one SPF record (§4.5)")
    try:
        record = _parse_record(records[0])
    except _PermError as exc:
        raise _PermError(f"{domain}: {exc}") from None
    for directive in record.directives:
        if await _matches(ctx, directive, domain):
            return _Outcome(directive.qualifier, domain, directive.text, record)
    # §6.1: redirect only when nothing matched, and never when the record has an "all" anywhere.
    if record.redirect is not None and not record.has_all:
        ctx.count_term()
        target = await ctx.target(record.redirect, domain)
        try:
            return await _evaluate(ctx, target)
        except _NoRecord:
            raise _PermError(f"redirect={target} has no SPF record") from None
    return _Outcome("neutral", domain, "", record)


async def _explain(ctx: _Context, outcome: _Outcome) -> str:
    """§6.2: the exp= text, or "" if anything at all goes wrong (it never changes the result)."""
    if outcome.record.exp is None:
        return ""
    try:
        name = await ctx.target(outcome.record.exp, outcome.domain)
        texts = await ctx.resolver.lookup(name, "TXT")
        if len(texts) != 1:
            return ""
        return await ctx.expand(_parse_macro_string(texts[0], explain=True), outcome.domain)
    except (DNSError, _PermError, _TempError):
        return ""


def _client_ip(ip: str | IPAddress) -> IPAddress:
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # an IPv4 client on a dual-stack socket is an IPv4 client
    return address


async def check_host(
    ip: str | IPAddress,
    domain: str,
    sender: str,
    helo: str,
    resolver: Lookup,
    *,
    receiver: str = "unknown",
    lifetime: float = DEFAULT_LIFETIME,
) -> SPFResult:
    """RFC 7208 §4: may `ip` send mail for `domain`? `sender` is <sender> (local@domain), `helo` the HELO name.

    Raises ValueError only for an `ip` that is not an address; everything from DNS becomes a result.
    """
    client = _client_ip(ip)
    domain = domain.rstrip(".")
    # §4.3: a malformed or single-label domain has no policy at all.
    if not valid_domain(domain):
        return SPFResult("none", domain, problem=f"{domain!r} is not a valid domain")
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        local, sender_domain = "", sender
    ctx = _Context(resolver, client, sender, local or "postmaster", sender_domain, helo, receiver)
    try:
        async with asyncio.timeout(lifetime):
            outcome = await _evaluate(ctx, domain)
            explanation = await _explain(ctx, outcome) if outcome.result == "fail" else ""
    except _NoRecord as exc:
        return SPFResult("none", domain, problem=str(exc))
    except _PermError as exc:
        return SPFResult("permerror", domain, problem=str(exc))
    except _TempError as exc:
        return SPFResult("temperror", domain, problem=str(exc))
    except TimeoutError:
        return SPFResult("temperror", domain, problem=f"no answer within {lifetime:g} s")
    return SPFResult(outcome.result, outcome.domain, outcome.mechanism, explanation)


def _helo_domain(helo: str) -> str | None:
    # §2.3: an address literal or a name that is not a FQDN cannot be checked.
    helo = helo.strip().rstrip(".")
    if helo.startswith("[") or not valid_domain(helo):
        return None
    try:
        ipaddress.ip_address(helo)
    except ValueError:
        return helo
    return None


async def check_helo(
    ip: str | IPAddress, helo: str, resolver: Lookup, *, receiver: str = "unknown", lifetime: float = DEFAULT_LIFETIME
) -> SPFResult:
    """The HELO identity (§2.3): check_host(ip, helo, "postmaster@" helo); "none" if HELO is not a FQDN."""
    domain = _helo_domain(helo)
    if domain is None:
        return SPFResult("none", helo, problem="HELO is not a fully qualified domain name")
    return await check_host(ip, domain, f"postmaster@{domain}", domain, resolver, receiver=receiver, lifetime=lifetime)


async def check_mail_from(
    ip: str | IPAddress,
    mail_from: str,
    helo: str,
    resolver: Lookup,
    *,
    receiver: str = "unknown",
    lifetime: float = DEFAULT_LIFETIME,
) -> SPFResult:
    """The MAIL FROM identity (§2.4); for the null reverse-path ("" or "<>") that of postmaster@<HELO>."""
    mail_from = mail_from.strip()
    if mail_from in ("", "<>"):
        domain = _helo_domain(helo)
        if domain is None:
            return SPFResult("none", helo, problem="null MAIL FROM and HELO is not a fully qualified domain name")
        return await check_host(
            ip, domain, f"postmaster@{domain}", helo, resolver, receiver=receiver, lifetime=lifetime
        )
    domain = mail_from.rpartition("@")[2]
    return await check_host(ip, domain, mail_from, helo, resolver, receiver=receiver, lifetime=lifetime)
