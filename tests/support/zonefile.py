"""Zone-file lines (as `postkontor dns` prints them) into the record dict the loopback DNS server serves."""

from __future__ import annotations

import re

Zone = dict[tuple[str, str], list[str]]
_RECORD = re.compile(r"(?P<name>\S+)\. (?P<ttl>\d+) IN (?P<type>[A-Z]+) (?P<data>.+)")


def zone_from(output: str) -> Zone:
    """Every record line of `postkontor dns` (and the PTR it suggests in a comment) as the loopback zone."""
    zone: Zone = {}
    for line in output.splitlines():
        if line.startswith(";") and " IN PTR " in line:
            line = line.lstrip("; ")
        match = _RECORD.fullmatch(line)
        if match is None:
            assert not line or line.startswith(";"), line  # nothing but records and comments
            continue
        zone.setdefault((match["name"].lower(), match["type"]), []).append(match["data"])
    # The loopback server does not chase CNAMEs; a recursive resolver would hand out the target's address.
    for (name, rtype), values in list(zone.items()):
        if rtype == "CNAME":
            zone[name, "A"] = zone[values[0].rstrip(".").lower(), "A"]
    return zone
