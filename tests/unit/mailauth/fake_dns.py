"""A dict-backed async stand-in for `MailResolver.lookup`, with the same outcome types, that logs every query."""

from __future__ import annotations

from postkontor.dns.resolver import DNSNameNotFound, DNSTemporaryError


class FakeDNS:
    """{(name, type): [records]}; a name with no entry at all is NXDOMAIN, one in `servfail` a temporary error."""

    def __init__(self, records: dict[tuple[str, str], list[str]], servfail: set[str] | None = None) -> None:
        self.records = {(name.lower().rstrip("."), rdtype): values for (name, rdtype), values in records.items()}
        self.names = {name for name, _ in self.records}
        self.servfail = {name.lower() for name in servfail or set()}
        self.queries: list[tuple[str, str]] = []

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        name = name.lower().rstrip(".")
        self.queries.append((name, rdtype))
        if name in self.servfail:
            raise DNSTemporaryError(f"{name}/{rdtype}: server failure")
        if name not in self.names:
            raise DNSNameNotFound(f"{name}/{rdtype}: no such domain (NXDOMAIN)")
        return list(self.records.get((name, rdtype), []))
