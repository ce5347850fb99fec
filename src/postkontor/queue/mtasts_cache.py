"""The MTA-STS policy cache (RFC 8461 §5.1): one row per policy domain in the queue database.

Kept in `<queue>/queue.sqlite3` beside the queue (table `mta_sts_policies`, created on first use; the queue's own
schema version is not involved), so a policy outlives restarts for its max_age, as §5.1 and §10.2 want: an
attacker who blocks the policy fetch after a restart then still meets the cached policy. The policy text is
stored as fetched and parsed again when loaded, so a parser fix applies to cached policies too. Writes are not
fsynced: a lost row costs one fetch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from postkontor.store.sqlite import open_database, read_transaction, write_transaction

__all__ = ["PolicyCacheStore", "StoredPolicy"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mta_sts_policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    fetched REAL NOT NULL,
    expires REAL NOT NULL
)
"""
_PURGE_EVERY = 100  # puts between deletions of long-expired rows


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    domain: str  # the policy domain, lower case
    policy_id: str  # the `id` of the TXT record the policy was fetched for (§3.1)
    policy: str  # the policy body as fetched
    fetched: float
    expires: float  # fetched + max_age


class PolicyCacheStore:
    """Thread-safe (one connection under a lock); methods are blocking, call them through `asyncio.to_thread`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = open_database(directory / "queue.sqlite3", synchronous="NORMAL")
        self._puts = 0
        try:
            with write_transaction(self._conn, self._lock):
                self._conn.execute(_SCHEMA)
        except BaseException:
            self._conn.close()
            raise

    def get(self, domain: str) -> StoredPolicy | None:
        """The cached policy of `domain`, expired or not (the caller decides)."""
        with read_transaction(self._conn, self._lock):
            row = self._conn.execute(
                "SELECT domain, policy_id, policy, fetched, expires FROM mta_sts_policies WHERE domain = ?",
                (domain.lower(),),
            ).fetchone()
        return None if row is None else StoredPolicy(str(row[0]), str(row[1]), str(row[2]), row[3], row[4])

    def put(self, policy: StoredPolicy, now: float) -> None:
        """Store (replace) the policy of its domain; now and then drop rows that expired a day ago or more."""
        with write_transaction(self._conn, self._lock):
            self._conn.execute(
                "INSERT OR REPLACE INTO mta_sts_policies (domain, policy_id, policy, fetched, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (policy.domain.lower(), policy.policy_id, policy.policy, policy.fetched, policy.expires),
            )
            self._puts += 1
            if self._puts % _PURGE_EVERY == 1:
                self._conn.execute("DELETE FROM mta_sts_policies WHERE expires < ?", (now - 86400.0,))

    def remove(self, domain: str) -> None:
        with write_transaction(self._conn, self._lock):
            self._conn.execute("DELETE FROM mta_sts_policies WHERE domain = ?", (domain.lower(),))

    def all(self) -> list[StoredPolicy]:
        with read_transaction(self._conn, self._lock):
            rows = self._conn.execute(
                "SELECT domain, policy_id, policy, fetched, expires FROM mta_sts_policies ORDER BY domain"
            ).fetchall()
        return [StoredPolicy(str(r[0]), str(r[1]), str(r[2]), r[3], r[4]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
