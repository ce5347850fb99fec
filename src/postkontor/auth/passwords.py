"""Password hashing with Argon2id (RFC 9106), stored in the PHC string format (`$argon2id$v=19$m=...`).

The defaults follow the OWASP Password Storage Cheat Sheet's Argon2id recommendation (m=19 MiB, t=2, p=1):
strong enough for a small server while keeping a verification well under 100 ms and bounded in memory.
"""

from __future__ import annotations

import argon2
from argon2.exceptions import VerificationError

# Not a secret: it only exists so that an unknown user costs one full verification, like a known one.
_DUMMY_PASSWORD = "postkontor-dummy-password"


class PasswordHasher:
    """Hashes new passwords and verifies stored ones in constant work, whether or not the user exists."""

    def __init__(self, *, time_cost: int = 2, memory_cost: int = 19456, parallelism: int = 1) -> None:
        """`memory_cost` is in KiB; tests pass tiny values to stay fast."""
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        # Made once with the same parameters as real hashes so a miss costs what a hit costs.
        self._dummy_hash: str = self._hasher.hash(_DUMMY_PASSWORD)

    def hash(self, password: str) -> str:
        """The PHC string for `password`; raises ValueError for an empty password."""
        if not password:
            raise ValueError("the password must not be empty")
        result: str = self._hasher.hash(password.encode("utf-8"))
        return result

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True if `password` matches `stored_hash`. Never raises for a wrong, malformed or missing hash."""
        try:
            encoded = password.encode("utf-8")
        except UnicodeEncodeError:
            # A password with lone surrogates can never have been hashed; still spend the time.
            self._burn()
            return False
        if stored_hash is None:
            self._burn()
            return False
        try:
            return bool(self._hasher.verify(stored_hash, encoded))
        except VerificationError:
            return False
        except ValueError:
            # InvalidHashError, or a hash with non-ASCII characters: a damaged record, not a wrong password.
            self._burn()
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True if `stored_hash` used other parameters than this hasher (or is no Argon2 hash at all)."""
        try:
            return bool(self._hasher.check_needs_rehash(stored_hash))
        except ValueError:
            return True

    def _burn(self) -> None:
        try:
            self._hasher.verify(self._dummy_hash, b"\x00")
        except VerificationError:
            pass
