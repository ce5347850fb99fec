"""DKIM key management: files, modes, rotation with a grace period, TXT records (RFC 6376 §3.6, RFC 8463 §4.2)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from postkontor.mailauth.keys import DEFAULT_GRACE, KeyStore, normalise_domain, split_txt

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> KeyStore:
    return KeyStore(tmp_path, clock=clock)


def test_ensure_creates_an_ed25519_and_rsa_pair_with_private_modes(store: KeyStore, tmp_path: Path) -> None:
    """RFC 8463 §5: sign with Ed25519 and RSA side by side; key files 0600 in a 0700 directory."""
    keys = store.ensure("Example.COM.")
    assert keys.domain == "example.com"
    assert [key.algorithm for key in keys.keys] == ["ed25519", "rsa"]
    assert [key.selector for key in keys.keys] == ["pk202601e", "pk202601r"]
    domain_dir = tmp_path / "dkim" / "example.com"
    assert stat.S_IMODE(domain_dir.stat().st_mode) == 0o700
    for name in ("pk202601e.ed25519.key", "pk202601r.rsa.key"):
        assert stat.S_IMODE((domain_dir / name).stat().st_mode) == 0o600
    assert not list(domain_dir.glob(".*.tmp"))
    # The files are standard PEM: PKCS#8 for Ed25519, PKCS#1 for RSA (what dkimpy and OpenSSL read).
    ed_pem = (domain_dir / "pk202601e.ed25519.key").read_bytes()
    assert ed_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(serialization.load_pem_private_key(ed_pem, None), ed25519.Ed25519PrivateKey)
    rsa_pem = (domain_dir / "pk202601r.rsa.key").read_bytes()
    assert rsa_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    rsa_key = serialization.load_pem_private_key(rsa_pem, None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey) and rsa_key.key_size == 2048
    # dkimpy wants the Ed25519 seed as base64 and the RSA key as PKCS#1 PEM.
    assert len(base64.b64decode(keys.keys[0].private_key)) == 32
    assert keys.keys[1].private_key == rsa_pem
    # ensure() does not make a second pair, and the secret stays out of repr().
    assert store.ensure("example.com") == keys
    assert "PRIVATE" not in repr(keys)


def test_dns_records_publish_the_public_keys(store: KeyStore) -> None:
    """RFC 6376 §3.6.1 (k=rsa p=SubjectPublicKeyInfo), RFC 8463 §4.2 (k=ed25519 p=raw 32 octets)."""
    keys = store.ensure("example.com")
    records = store.dns_records("example.com")
    assert [record.name for record in records] == [
        "pk202601e._domainkey.example.com",
        "pk202601r._domainkey.example.com",
    ]
    ed_record, rsa_record = records
    assert ed_record.value.startswith("v=DKIM1; k=ed25519; p=")
    seed = base64.b64decode(keys.keys[0].private_key)
    expected = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert base64.b64decode(ed_record.value.split("p=")[1]) == expected
    assert ed_record.strings == (ed_record.value,)
    assert rsa_record.value.startswith("v=DKIM1; k=rsa; p=MII")
    public = serialization.load_der_public_key(base64.b64decode(rsa_record.value.split("p=")[1]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    # A 2048-bit key does not fit one 255-octet character-string (RFC 1035 §3.3).
    assert len(rsa_record.strings) == 2
    assert all(len(part.encode()) <= 255 for part in rsa_record.strings)
    assert "".join(rsa_record.strings) == rsa_record.value
    line = rsa_record.zone_line(300)
    assert line.startswith('pk202601r._domainkey.example.com. 300 IN TXT ( "v=DKIM1; k=rsa; p=')
    assert line.count('"') == 4


def test_rotate_retires_the_old_pair_and_keeps_it_published_for_the_grace_period(store: KeyStore, clock: Clock) -> None:
    """A rotated-out key must still verify mail in transit: published for 7 days, then removable."""
    first = store.ensure("example.com")
    clock.now += 86400
    second = store.rotate("example.com")
    assert [key.selector for key in second.keys] == ["pk202601-2e", "pk202601-2r"]
    assert store.active("example.com") == second
    statuses = {record.selector: record.status for record in store.dns_records("example.com")}
    assert statuses == {
        "pk202601e": "retiring",
        "pk202601r": "retiring",
        "pk202601-2e": "active",
        "pk202601-2r": "active",
    }
    assert store.prune("example.com") == []  # still in its grace period
    clock.now += DEFAULT_GRACE
    assert {record.selector for record in store.dns_records("example.com")} == {"pk202601-2e", "pk202601-2r"}
    assert sorted(store.prune("example.com")) == ["pk202601e", "pk202601r"]
    domain_dir = store.root / "example.com"
    assert sorted(path.name for path in domain_dir.glob("*.key")) == ["pk202601-2e.ed25519.key", "pk202601-2r.rsa.key"]
    # Removed selectors stay in the state file so that their names are never handed out again.
    state = json.loads((domain_dir / "state.json").read_text())
    assert [entry["selector"] for entry in state["selectors"]][:2] == [key.selector for key in first.keys]
    assert all(entry["removed"] for entry in state["selectors"][:2])
    clock.now += 40 * 86400  # next month
    third = store.rotate("example.com")
    assert [key.selector for key in third.keys] == ["pk202602e", "pk202602r"]
    assert len({sel.name for sel in store.selectors("example.com")}) == 6


def test_rotation_skips_names_of_orphaned_key_files(store: KeyStore) -> None:
    """A crash between writing the keys and the state leaves files whose names must not be reused."""
    domain_dir = store.root / "example.com"
    domain_dir.mkdir(parents=True)
    (domain_dir / "pk202601e.ed25519.key").write_bytes(b"junk")
    keys = store.ensure("example.com")
    assert [key.selector for key in keys.keys] == ["pk202601-2e", "pk202601-2r"]


def test_active_reuses_parsed_keys_until_the_state_changes(store: KeyStore, tmp_path: Path, clock: Clock) -> None:
    store.ensure("example.com")
    first = store.active("example.com")
    assert store.active("example.com") is first
    other = KeyStore(tmp_path, clock=clock)  # e.g. the admin CLI in another process
    other.rotate("example.com")
    assert store.active("example.com") != first
    assert store.domains() == ["example.com"]
    assert store.active("unknown.example") is None
    assert store.dns_records("unknown.example") == []


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../etc", "-x.example", "a..b", "x" * 64 + ".example"])
def test_domain_names_cannot_escape_the_key_directory(store: KeyStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.ensure(bad)


def test_internationalised_domain_is_stored_as_a_label() -> None:
    assert normalise_domain("Bücher.Example.") == "xn--bcher-kva.example"


def test_rsa_keys_under_1024_bits_are_refused(tmp_path: Path) -> None:
    """RFC 8301 §3.2: verifiers reject them, so we never make them."""
    with pytest.raises(ValueError):
        KeyStore(tmp_path, rsa_bits=768)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=2000))
def test_split_txt_makes_character_strings_of_at_most_255_octets(value: str) -> None:
    """RFC 1035 §3.3 / RFC 6376 §3.6.2.2: the strings concatenate back to the value."""
    parts = split_txt(value)
    assert "".join(parts) == value
    assert all(len(part) <= 255 for part in parts)
    assert all(len(part) == 255 for part in parts[:-1])
