"""Argon2id password hashing: round trip, wrong and malformed hashes, unknown users cost a verification."""

from __future__ import annotations

import pytest

from postkontor.auth import PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_hash_is_argon2id_phc_string(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert hasher.hash("correct horse") != stored  # salted


def test_verify_right_and_wrong_password(hasher: PasswordHasher) -> None:
    stored = hasher.hash("s3cret-ü")
    assert hasher.verify(stored, "s3cret-ü")
    assert not hasher.verify(stored, "s3cret-u")
    assert not hasher.verify(stored, "")


def test_unknown_user_never_verifies(hasher: PasswordHasher) -> None:
    assert not hasher.verify(None, "")
    assert not hasher.verify(None, "postkontor-dummy-password")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "garbage",
        "$2b$12$abcdefghijklmnopqrstuv",  # bcrypt
        "$argon2id$v=19$m=8,t=1,p=1$xx$yy",
        "$argon2id$v=19$m=8,t=1,p=1$" + "A" * 22 + "$" + "B" * 43,
        "$argon2id$v=19$m=8,t=1,p=1$ü$ö",
    ],
)
def test_malformed_hash_returns_false(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, "password") is False


def test_truncated_hash_returns_false(hasher: PasswordHasher) -> None:
    stored = hasher.hash("pw")
    assert hasher.verify(stored[:-5], "pw") is False


def test_unencodable_password_returns_false(hasher: PasswordHasher) -> None:
    stored = hasher.hash("pw")
    assert hasher.verify(stored, "pw\ud800") is False


def test_empty_password_cannot_be_hashed(hasher: PasswordHasher) -> None:
    with pytest.raises(ValueError):
        hasher.hash("")


def test_hashes_of_other_parameters_still_verify(hasher: PasswordHasher) -> None:
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    stored = stronger.hash("pw")
    assert hasher.verify(stored, "pw")
    assert hasher.needs_rehash(stored)
    assert not stronger.needs_rehash(stored)
    assert hasher.needs_rehash("not a hash")


def test_default_parameters_follow_owasp() -> None:
    stored = PasswordHasher().hash("pw")
    assert "$m=19456,t=2,p=1$" in stored
