"""DNS lookups for mail: MX routing (RFC 5321 §5.1, RFC 7505), addresses and TXT records."""

from postkontor.dns.resolver import (
    DNSError,
    DNSPermanentError,
    DNSTemporaryError,
    MailResolver,
    MXResult,
    parse_nameserver,
)

__all__ = [
    "DNSError",
    "DNSPermanentError",
    "DNSTemporaryError",
    "MXResult",
    "MailResolver",
    "parse_nameserver",
]
