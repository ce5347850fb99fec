"""What the authentication checks need from DNS: one method, so tests can hand in a dict-backed fake.

`postkontor.dns.MailResolver` satisfies `Lookup`. The outcomes are those of `MailResolver.lookup`: a list (empty
for NODATA), `DNSNameNotFound` for NXDOMAIN, another `DNSPermanentError` for a name that cannot exist,
`DNSTemporaryError` for SERVFAIL and timeouts.
"""

from __future__ import annotations

from typing import Protocol

from postkontor.dns.resolver import DNSError, DNSNameNotFound, DNSPermanentError, DNSTemporaryError

__all__ = ["DNSError", "DNSNameNotFound", "DNSPermanentError", "DNSTemporaryError", "Lookup", "valid_domain"]


class Lookup(Protocol):
    async def lookup(self, name: str, rdtype: str) -> list[str]: ...


def valid_domain(domain: str, *, multi_label: bool = True) -> bool:
    """A syntactically possible DNS name (RFC 1035 §2.3.4 lengths; no empty labels but an optional final dot).

    Characters beyond the lengths are not checked: DNS itself allows any octet, and SPF/DMARC only need to know
    whether a query can be made at all.
    """
    name = domain[:-1] if domain.endswith(".") else domain
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if multi_label and len(labels) < 2:
        return False
    return all(0 < len(label) <= 63 for label in labels)
