"""DKIM signing keys in the data directory: generation, rotation, DNS records (RFC 6376 §3.6, RFC 8463, RFC 8301).

Layout, one directory per signing domain::

    <data>/dkim/<domain>/            mode 0700
        state.json                   the selectors, when made, when retired (the commit point of every change)
        <selector>.ed25519.key       PKCS#8 PEM, mode 0600
        <selector>.rsa.key           PKCS#1 PEM ("RSA PRIVATE KEY", what dkimpy parses), mode 0600

Every domain signs with a pair of keys at once (RFC 8463 §5: Ed25519 beside RSA until every verifier knows
Ed25519). `rotate` makes a new pair and retires the previous one; a retired selector stays published for a grace
period (default 7 days) so that mail signed just before the rotation still verifies while in transit, then `prune`
deletes its key files. Selector names are never reused: a verifier or a DNS cache may still hold the old key.

Writers (the admin CLI) take an flock on the domain directory; readers (every worker, per message) only stat
`state.json` and reuse the parsed keys while it is unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = [
    "DEFAULT_GRACE",
    "Algorithm",
    "DKIMRecord",
    "DomainKeys",
    "KeyStore",
    "Selector",
    "SigningKey",
    "normalise_domain",
    "split_txt",
]

Algorithm = Literal["ed25519", "rsa"]
Status = Literal["active", "retiring", "expired", "removed"]

DEFAULT_GRACE: Final = 7 * 86400.0
RSA_BITS: Final = 2048  # RFC 8301 §3.2: at least 1024, SHOULD be 2048
_STATE: Final = "state.json"
_LOCK: Final = ".lock"
_SUFFIX: Final[dict[Algorithm, str]] = {"ed25519": "e", "rsa": "r"}
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN_RE: Final = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z")
_SELECTOR_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
# A TXT character-string holds at most 255 octets (RFC 1035 §3.3); longer values are split (RFC 6376 §3.6.2.2).
_TXT_CHUNK: Final = 255


def normalise_domain(domain: str) -> str:
    """The domain as an ASCII (A-label) lower-case name without trailing dot; ValueError if it is not a domain.

    Also what keeps a domain from naming a path outside the key directory ("..", "/").
    """
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid domain {domain!r}: {exc}") from exc
    if not _DOMAIN_RE.match(name):
        raise ValueError(f"invalid domain {domain!r}")
    return name


def split_txt(value: str) -> tuple[str, ...]:
    """`value` as TXT character-strings of at most 255 octets each (the record values are ASCII)."""
    data = value.encode("ascii")
    return tuple(data[i : i + _TXT_CHUNK].decode("ascii") for i in range(0, len(data), _TXT_CHUNK)) or ("",)


@dataclass(frozen=True, slots=True)
class Selector:
    """One key of a domain as state.json records it (times are Unix seconds)."""

    name: str
    algorithm: Algorithm
    created: int
    retired: int | None = None
    removed: int | None = None

    def status(self, now: float, grace: float) -> Status:
        if self.removed is not None:
            return "removed"
        if self.retired is None:
            return "active"
        return "retiring" if now < self.retired + grace else "expired"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key in the form dkimpy signs with: base64 of the 32-byte seed (Ed25519), PKCS#1 PEM (RSA)."""

    selector: str
    algorithm: Algorithm
    private_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DomainKeys:
    """The active keys of one signing domain, Ed25519 first."""

    domain: str
    keys: tuple[SigningKey, ...]

    def get(self, algorithm: Algorithm) -> SigningKey | None:
        return next((key for key in self.keys if key.algorithm == algorithm), None)

    @property
    def ed25519(self) -> SigningKey | None:
        return self.get("ed25519")

    @property
    def rsa(self) -> SigningKey | None:
        return self.get("rsa")


@dataclass(frozen=True, slots=True)
class DKIMRecord:
    """One TXT record to publish at `name` (RFC 6376 §3.6.2.1: <selector>._domainkey.<domain>)."""

    name: str
    selector: str
    algorithm: Algorithm
    status: Status
    value: str

    @property
    def strings(self) -> tuple[str, ...]:
        return split_txt(self.value)

    def zone_line(self, ttl: int = 3600) -> str:
        quoted = " ".join(f'"{part}"' for part in self.strings)
        return f"{self.name}. {ttl} IN TXT ( {quoted} )"


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """tmp + fsync + rename + directory fsync: a crash leaves the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _generate(algorithm: Algorithm, rsa_bits: int) -> tuple[bytes, str]:
    """A new key as (file contents, public key for p=)."""
    if algorithm == "ed25519":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        pem = ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # RFC 8463 §4.2: p= is the bare 32-byte public key, not a SubjectPublicKeyInfo.
        return pem, base64.b64encode(ed_key.public_key().public_bytes_raw()).decode("ascii")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return pem, _rsa_public(rsa_key)


def _rsa_public(key: rsa.RSAPrivateKey) -> str:
    # RFC 6376 §3.6.1: p= for k=rsa is the DER SubjectPublicKeyInfo.
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _load(algorithm: Algorithm, pem: bytes) -> tuple[bytes, str]:
    """(what dkimpy signs with, public key for p=) from a key file."""
    key = serialization.load_pem_private_key(pem, password=None)
    if algorithm == "ed25519":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        public = base64.b64encode(key.public_key().public_bytes_raw()).decode("ascii")
        return base64.b64encode(key.private_bytes_raw()), public
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    # dkimpy parses only PKCS#1; a PKCS#8 file put there by hand is converted.
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return pkcs1, _rsa_public(key)


class KeyStore:
    """The DKIM keys under `<data_dir>/dkim`. `clock` is injectable for the rotation tests."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        grace: float = DEFAULT_GRACE,
        rsa_bits: int = RSA_BITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rsa_bits < 1024:
            raise ValueError("RSA keys under 1024 bits are not accepted by verifiers (RFC 8301 §3.2)")
        self.root = Path(data_dir) / "dkim"
        self.grace = grace
        self.rsa_bits = rsa_bits
        self._clock = clock
        # domain -> (state.json (mtime_ns, size, inode), keys): a stat per signed message instead of a PEM parse.
        self._cache: dict[str, tuple[tuple[int, int, int], DomainKeys]] = {}

    # -- reading ---------------------------------------------------------------------------------------------------

    def _dir(self, domain: str) -> Path:
        return self.root / normalise_domain(domain)

    def _key_path(self, domain_dir: Path, selector: Selector) -> Path:
        return domain_dir / f"{selector.name}.{selector.algorithm}.key"

    def domains(self) -> list[str]:
        """Every domain with a state file."""
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if (entry / _STATE).is_file())

    def selectors(self, domain: str) -> list[Selector]:
        """All selectors ever made for `domain`, oldest first ([] if none)."""
        try:
            raw = (self._dir(domain) / _STATE).read_bytes()
        except FileNotFoundError:
            return []
        return _parse_state(raw)

    def active(self, domain: str) -> DomainKeys | None:
        """The keys to sign `domain`'s mail with now, or None if it has none."""
        domain_dir = self._dir(domain)
        try:
            st = (domain_dir / _STATE).stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(domain_dir.name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        selectors = _parse_state((domain_dir / _STATE).read_bytes())
        keys = [
            SigningKey(sel.name, sel.algorithm, _load(sel.algorithm, self._key_path(domain_dir, sel).read_bytes())[0])
            for sel in selectors
            if sel.retired is None and sel.removed is None
        ]
        keys.sort(key=lambda key: key.algorithm != "ed25519")
        result = DomainKeys(domain_dir.name, tuple(keys)) if keys else None
        if result is not None:
            self._cache[domain_dir.name] = (stamp, result)
        return result

    def dns_records(self, domain: str) -> list[DKIMRecord]:
        """The TXT records to publish: active and retiring selectors (expired ones may be withdrawn)."""
        domain_dir = self._dir(domain)
        now = self._clock()
        records: list[DKIMRecord] = []
        for sel in self.selectors(domain):
            status = sel.status(now, self.grace)
            if status not in ("active", "retiring"):
                continue
            public = _load(sel.algorithm, self._key_path(domain_dir, sel).read_bytes())[1]
            value = f"v=DKIM1; k={sel.algorithm}; p={public}"
            records.append(
                DKIMRecord(f"{sel.name}._domainkey.{domain_dir.name}", sel.name, sel.algorithm, status, value)
            )
        return records

    # -- changing --------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, domain: str) -> Iterator[Path]:
        domain_dir = self._dir(domain)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        domain_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(domain_dir, 0o700)  # mkdir's mode is masked by the umask, and the directory may predate us
        fd = os.open(domain_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield domain_dir
        finally:
            os.close(fd)

    def ensure(self, domain: str) -> DomainKeys:
        """The active keys of `domain`, made first if it has none."""
        keys = self.active(domain)
        return keys if keys is not None else self.rotate(domain)

    def rotate(self, domain: str) -> DomainKeys:
        """Make a new Ed25519 + RSA pair and retire the active selectors (published for `grace` seconds more)."""
        with self._locked(domain) as domain_dir:
            selectors = _read_state(domain_dir)
            now = int(self._clock())
            stem = _new_stem(now, {sel.name for sel in selectors}, domain_dir)
            fresh: list[Selector] = []
            for algorithm in ("ed25519", "rsa"):
                sel = Selector(stem + _SUFFIX[algorithm], algorithm, now)
                pem, _public = _generate(algorithm, self.rsa_bits)
                # The key files first, the state last: a crash in between leaves unused files, never a selector
                # without its key.
                _atomic_write(self._key_path(domain_dir, sel), pem)
                fresh.append(sel)
            retired = [
                replace(sel, retired=now) if sel.retired is None and sel.removed is None else sel for sel in selectors
            ]
            _write_state(domain_dir, [*retired, *fresh])
        keys = self.active(domain)
        if keys is None:  # only if another writer retired them between our unlock and this read
            raise RuntimeError(f"DKIM keys of {domain} changed during rotation")
        return keys

    def prune(self, domain: str) -> list[str]:
        """Delete the key files of selectors retired more than `grace` ago; returns their names.

        Their names stay in state.json (marked removed) so that they are never handed out again. Withdraw their
        TXT records from DNS before or after: `dns_records` no longer lists them.
        """
        with self._locked(domain) as domain_dir:
            selectors = _read_state(domain_dir)
            now = self._clock()
            removed: list[str] = []
            updated: list[Selector] = []
            for sel in selectors:
                if sel.status(now, self.grace) == "expired":
                    self._key_path(domain_dir, sel).unlink(missing_ok=True)
                    sel = replace(sel, removed=int(now))
                    removed.append(sel.name)
                updated.append(sel)
            if removed:
                _write_state(domain_dir, updated)
        return removed


def _new_stem(now: int, taken: set[str], domain_dir: Path) -> str:
    """pk<yyyymm>, then pk<yyyymm>-2, -3 ... for further rotations in the same month (UTC)."""
    base = "pk" + time.strftime("%Y%m", time.gmtime(now))
    n = 1
    while True:
        stem = base if n == 1 else f"{base}-{n}"
        names = [stem + suffix for suffix in _SUFFIX.values()]
        # Files without a state entry (a crash mid-rotation) block their names too.
        if not any(name in taken or any(domain_dir.glob(f"{name}.*.key")) for name in names):
            return stem
        n += 1


def _read_state(domain_dir: Path) -> list[Selector]:
    try:
        return _parse_state((domain_dir / _STATE).read_bytes())
    except FileNotFoundError:
        return []


def _parse_state(raw: bytes) -> list[Selector]:
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("selectors"), list):
        raise ValueError("unrecognised DKIM state file")
    selectors: list[Selector] = []
    for entry in data["selectors"]:
        name, algorithm = entry["selector"], entry["algorithm"]
        if algorithm not in _SUFFIX or not isinstance(name, str) or not _SELECTOR_RE.match(name):
            raise ValueError(f"bad selector entry in DKIM state file: {entry!r}")
        selectors.append(Selector(name, algorithm, int(entry["created"]), entry.get("retired"), entry.get("removed")))
    return selectors


def _write_state(domain_dir: Path, selectors: list[Selector]) -> None:
    entries = [
        {"selector": s.name, "algorithm": s.algorithm, "created": s.created, "retired": s.retired, "removed": s.removed}
        for s in selectors
    ]
    data = json.dumps({"version": 1, "selectors": entries}, indent=2).encode() + b"\n"
    _atomic_write(domain_dir / _STATE, data)
