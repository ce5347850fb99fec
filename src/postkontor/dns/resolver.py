"""DNS for mail routing: MX lookup and ordering (RFC 5321 §5.1), the implicit MX, null MX (RFC 7505), addresses
(A, AAAA) and TXT records (for SPF, RFC 7208, and DKIM, RFC 6376, later).

One `MailResolver` per server, over dnspython's asynchronous resolver: the configured nameservers when there are
any, otherwise the system configuration (/etc/resolv.conf). Failures are typed for the DSN they lead to: a
`DNSPermanentError` means the name does not exist for mail ("5.1.2"), a `DNSTemporaryError` that the answer could
not be had right now ("4.4.3").
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

__all__ = [
    "LOOKUP_TYPES",
    "DNSError",
    "DNSNameNotFound",
    "DNSPermanentError",
    "DNSTemporaryError",
    "MXResult",
    "MailResolver",
    "parse_nameserver",
]

DEFAULT_PORT: Final = 53
# dnspython's own per-server default; the whole lookup is bounded by the resolver's `timeout` (its lifetime).
_PER_SERVER_TIMEOUT: Final = 2.0
_CACHE_ENTRIES: Final = 10_000
# The record types `MailResolver.lookup` answers, as the strings callers name them by.
LOOKUP_TYPES: Final = frozenset({"A", "AAAA", "MX", "PTR", "TXT", "SRV"})


class DNSError(Exception):
    """A lookup failed; `enhanced` is the RFC 3463 status a DSN about it carries."""

    enhanced = "4.4.3"


class DNSPermanentError(DNSError):
    """The name does not exist (NXDOMAIN) or has nothing to deliver mail to: RFC 3463 X.1.2, bad destination."""

    enhanced = "5.1.2"


class DNSNameNotFound(DNSPermanentError):
    """NXDOMAIN itself (RFC 1035 RCODE 3), as opposed to an invalid name: SPF (RFC 7208 §4.3, §4.6.4) and DMARC
    (RFC 9091 "np") treat a name that does not exist differently from one that has no records of a type."""


class DNSTemporaryError(DNSError):
    """SERVFAIL, a timeout, or no nameserver answered: RFC 3463 X.4.3, directory server failure."""

    enhanced = "4.4.3"


@dataclass(frozen=True, slots=True)
class MXResult:
    """Where mail for `domain` goes.

    `hosts` is in the order to try them (RFC 5321 §5.1): by preference, random within equal preference. With
    `implicit` the domain has no MX but has addresses, and is itself the only host; with `null_mx` the domain
    says it accepts no mail (RFC 7505) and `hosts` is empty.
    """

    domain: str
    hosts: tuple[str, ...]
    implicit: bool = False
    null_mx: bool = False


def parse_nameserver(text: str) -> tuple[str, int]:
    """ "IP", "IPv4:PORT" or "[IPv6]:PORT" (as `Config.dns_servers` holds them) as (address, port)."""
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid nameserver {text!r}")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    address = ipaddress.ip_address(host)  # raises ValueError for anything but an IP address
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid nameserver port in {text!r}")
    return str(address), int(port)


def _name(text: str) -> dns.name.Name:
    """An absolute name, so that no search list is ever applied to a mail domain (RFC 5321 §5.1)."""
    try:
        return dns.name.from_text(text.rstrip(".") + ".")
    except (dns.exception.DNSException, UnicodeError) as exc:
        # Empty labels, over-long labels or names: no such name can exist.
        raise DNSPermanentError(f"invalid domain name {text!r}: {exc}") from exc


def _host(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class MailResolver:
    """The one place the server asks DNS anything. Injectable: tests point it at an in-process server."""

    def __init__(self, servers: tuple[str, ...], *, timeout: float = 10.0, rng: random.Random | None = None) -> None:
        self._servers = tuple(parse_nameserver(server) for server in servers)
        self._timeout = timeout
        self._random = rng or random.Random()
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        # Built on first use: a host without /etc/resolv.conf then defers mail instead of failing to start.
        if self._resolver is None:
            if self._servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self._servers]
            else:
                try:
                    resolver = dns.asyncresolver.Resolver()
                except (dns.exception.DNSException, OSError) as exc:
                    raise DNSTemporaryError(f"no usable system resolver configuration: {exc}") from exc
            resolver.lifetime = self._timeout
            resolver.timeout = min(_PER_SERVER_TIMEOUT, self._timeout)
            # Answers are kept for their TTL: a busy queue asks for the same few MX hosts over and over, and a
            # small server seldom has a caching resolver of its own.
            resolver.cache = dns.resolver.LRUCache(_CACHE_ENTRIES)
            self._resolver = resolver
        return self._resolver

    async def _query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer | None:
        """The answer, or None for "the name exists but has no records of this type" (NODATA)."""
        resolver = self._get_resolver()
        label = f"{_host(name)}/{dns.rdatatype.to_text(rdtype)}"
        try:
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DNSNameNotFound(f"{label}: no such domain (NXDOMAIN)") from exc
        except dns.resolver.NoNameservers as exc:
            # Every server answered SERVFAIL, REFUSED or garbage: RFC 2308 §7.1, try again later.
            raise DNSTemporaryError(f"{label}: server failure") from exc
        except dns.exception.Timeout as exc:
            raise DNSTemporaryError(f"{label}: timeout, no answer from the nameservers") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DNSTemporaryError(f"{label}: {exc.__class__.__name__}: {exc}") from exc
        return answer if answer.rrset is not None else None

    async def mx(self, domain: str) -> MXResult:
        """Route mail for `domain` (RFC 5321 §5.1). Raises DNSPermanentError or DNSTemporaryError."""
        name = _name(domain)
        domain = _host(name)
        answer = await self._query(name, dns.rdatatype.MX)
        records = [rdata for rdata in answer if isinstance(rdata, MX)] if answer is not None else []
        if not records:
            # RFC 5321 §5.1: no MX records: the domain is its own implicit MX if it has an address.
            if not await self.addresses(domain):
                raise DNSPermanentError(f"{domain}: no MX and no address records")
            return MXResult(domain, (domain,), implicit=True)
        usable = [record for record in records if record.exchange != dns.name.root]
        if not usable:
            # RFC 7505 §3: "0 ." says the domain accepts no mail. A "." beside real MX records is a
            # misconfiguration; the real ones are used.
            return MXResult(domain, (), null_mx=True)
        return MXResult(domain, self._order(usable))

    def _order(self, records: Sequence[MX]) -> tuple[str, ...]:
        # RFC 5321 §5.1: lowest preference first; equal preferences in random order, to spread the load.
        keyed = [(record.preference, self._random.random(), _host(record.exchange)) for record in records]
        keyed.sort()
        return tuple(dict.fromkeys(host for _, _, host in keyed))

    async def addresses(self, host: str) -> list[str]:
        """The IPv6 and IPv4 addresses of `host` (AAAA first, then A); [] when it has none.

        Raises DNSPermanentError if the name does not exist, DNSTemporaryError if neither lookup could be
        answered; one family failing while the other answers is not an error.
        """
        name = _name(host)
        results = await asyncio.gather(
            self._query(name, dns.rdatatype.AAAA), self._query(name, dns.rdatatype.A), return_exceptions=True
        )
        found: list[str] = []
        errors: list[BaseException] = []
        for result in results:
            if isinstance(result, BaseException):
                errors.append(result)
            elif result is not None:
                found.extend(str(rdata) for rdata in result)
        if found:
            return list(dict.fromkeys(found))
        for error in errors:
            if not isinstance(error, DNSError):
                raise error
        temporary = [error for error in errors if isinstance(error, DNSTemporaryError)]
        if temporary:
            raise temporary[0]
        if errors:
            raise errors[0]
        return []

    async def txt(self, name: str) -> list[str]:
        """The TXT records of `name`, each one's strings joined without separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2).

        [] when the name has none; DNSPermanentError for NXDOMAIN, DNSTemporaryError for trouble.
        """
        answer = await self._query(_name(name), dns.rdatatype.TXT)
        if answer is None:
            return []
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer if isinstance(rdata, TXT)]

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        """The records of one type at `name`, as text, for the authentication checks (SPF, DMARC).

        `rdtype` is one of LOOKUP_TYPES. TXT records come with their character-strings joined (RFC 7208 §3.3),
        A/AAAA as addresses, MX as exchange names by preference (a null MX's "." is left out), PTR as host names,
        SRV as "PRIORITY WEIGHT PORT TARGET";
        names are lower case without the final dot. The outcomes SPF's void-lookup limit (RFC 7208 §4.6.4) needs
        are kept apart: [] is NODATA, DNSNameNotFound is NXDOMAIN, any other DNSPermanentError an impossible
        name, DNSTemporaryError SERVFAIL or a timeout. Answers come from the same TTL cache as everything else.
        """
        if rdtype not in LOOKUP_TYPES:
            raise ValueError(f"unsupported record type {rdtype!r}")
        answer = await self._query(_name(name), dns.rdatatype.from_text(rdtype))
        if answer is None:
            return []
        if rdtype == "TXT":
            return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer if isinstance(rdata, TXT)]
        if rdtype == "MX":
            records = sorted((rdata for rdata in answer if isinstance(rdata, MX)), key=lambda rdata: rdata.preference)
            return [_host(rdata.exchange) for rdata in records if rdata.exchange != dns.name.root]
        if rdtype == "PTR":
            return [_host(rdata.target) for rdata in answer if isinstance(rdata, PTR)]
        if rdtype == "SRV":  # "PRIORITY WEIGHT PORT TARGET" (RFC 2782), for `postkontor check` (RFC 6186)
            return [
                f"{rdata.priority} {rdata.weight} {rdata.port} {_host(rdata.target)}"
                for rdata in answer
                if isinstance(rdata, SRV)
            ]
        return [str(rdata) for rdata in answer if isinstance(rdata, A | AAAA)]
