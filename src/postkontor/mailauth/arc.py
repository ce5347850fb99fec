"""ARC (RFC 8617): verifying a received chain and sealing mail we forward (aliases to remote addresses), over dkimpy.

A forward breaks SPF and often DKIM; an ARC set records what we saw on arrival (our Authentication-Results, as
ARC-Authentication-Results), signs the message as we pass it on (ARC-Message-Signature) and seals the chain
(ARC-Seal), so the final receiver can decide to trust our results.

As in `dkim.py`, the keys are fetched through our resolver first, concurrently, and dkimpy then verifies with
them (CPU only; `offload=True` runs that in a worker thread). ARC defines only rsa-sha256 (RFC 8617 §4.1.3 via
RFC 6376), so sealing uses the domain's RSA key.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import dkim  # type: ignore[import-untyped]
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]

from postkontor.dns.resolver import DNSError, DNSPermanentError

from .dkim import MIN_RSA_BITS, KeyLookup, TXTResolver, sign_header_list
from .keys import DomainKeys

__all__ = ["MAX_INSTANCES", "ARCResult", "ChainValidation", "seal", "verify_arc", "verify_arc_with_keys"]

ChainValidation = Literal["none", "pass", "fail"]

MAX_INSTANCES: Final = 50  # RFC 8617 §4.2.1: i= is 1 to 50
_ARC_HEADERS: Final = frozenset({b"arc-seal", b"arc-message-signature", b"arc-authentication-results"})
_AR: Final = b"authentication-results"
_CV: Final[dict[bytes | None, ChainValidation]] = {b"pass": "pass", b"none": "none", b"fail": "fail", None: "fail"}

_LIB_LOG: Final = logging.getLogger("postkontor.mailauth.dkimpy")  # set up (quiet) in dkim.py


@dataclass(frozen=True, slots=True)
class ARCResult:
    """The chain's validation status (RFC 8617 §5.2), for an Authentication-Results arc= entry.

    `instance` is the highest i= seen (0: no chain). `temporary` marks a fail that a key lookup failing for now
    may have caused: the caller can treat it as "could not decide" rather than as a broken chain.
    """

    cv: ChainValidation
    reason: str
    instance: int = 0
    temporary: bool = False


def _key_names(verifier: Any) -> tuple[int, set[str]]:
    """(highest instance, the "<s>._domainkey.<d>" names of every ARC-Seal and ARC-Message-Signature)."""
    max_instance, headers = verifier.sorted_arc_headers()
    names: set[str] = set()
    for _instance, (name, value) in headers:
        if name.lower() not in (b"arc-seal", b"arc-message-signature"):
            continue
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            continue  # dkimpy reports the broken set itself
        if b"s" in tags and b"d" in tags:
            names.add((tags[b"s"] + b"._domainkey." + tags[b"d"]).decode("utf-8", "replace").lower())
    return max_instance, names


def _prepare(message: bytes) -> tuple[Any, int, set[str]] | ARCResult:
    try:
        verifier = dkim.ARC(message, logger=_LIB_LOG, minkey=MIN_RSA_BITS)
        max_instance, names = _key_names(verifier)
    except dkim.DKIMException as exc:
        return ARCResult("fail", f"unparsable message: {exc}")
    if max_instance == 0:
        return ARCResult("none", "no ARC sets")
    if max_instance > MAX_INSTANCES:
        return ARCResult("fail", f"i={max_instance} is beyond the limit of {MAX_INSTANCES}", max_instance)
    return verifier, max_instance, names


def _check(verifier: Any, max_instance: int, keys: Mapping[str, KeyLookup]) -> ARCResult:
    def dnsfunc(name: bytes, timeout: float = 0) -> bytes | None:
        lookup = keys.get(name.decode("utf-8", "replace").rstrip(".").lower())
        if not isinstance(lookup, list) or not lookup:
            return None
        return next((text for text in lookup if text.lstrip().startswith("v=DKIM1")), lookup[0]).encode()

    try:
        cv, _details, reason = verifier.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        cv, reason = dkim.CV_Fail, str(exc)
    except Exception as exc:  # a library bug is a chain we cannot vouch for, not a crash
        cv, reason = dkim.CV_Fail, f"verification error: {exc.__class__.__name__}: {exc}"
    result: ChainValidation = _CV.get(cv, "fail")
    temporary = result == "fail" and any(
        isinstance(lookup, DNSError) and not isinstance(lookup, DNSPermanentError) for lookup in keys.values()
    )
    return ARCResult(result, str(reason), max_instance, temporary)


async def _fetch(resolver: TXTResolver, names: set[str]) -> dict[str, KeyLookup]:
    async def one(name: str) -> KeyLookup:
        try:
            return await resolver.txt(name)
        except DNSError as exc:
            return exc

    ordered = sorted(names)
    found = await asyncio.gather(*(one(name) for name in ordered))
    return dict(zip(ordered, found, strict=True))


def verify_arc_with_keys(message: bytes, keys: Mapping[str, KeyLookup]) -> ARCResult:
    """`verify_arc` with the key lookups already done ({"<s>._domainkey.<d>": lookup}). Synchronous."""
    prepared = _prepare(message)
    if isinstance(prepared, ARCResult):
        return prepared
    verifier, max_instance, _names = prepared
    return _check(verifier, max_instance, keys)


async def verify_arc(message: bytes, resolver: TXTResolver, *, offload: bool = False) -> ARCResult:
    """Validate the message's ARC chain (RFC 8617 §5.2). Never raises for bad input."""
    prepared = await asyncio.to_thread(_prepare, message) if offload else _prepare(message)
    if isinstance(prepared, ARCResult):
        return prepared
    verifier, max_instance, names = prepared
    keys = await _fetch(resolver, names)
    if offload:
        return await asyncio.to_thread(_check, verifier, max_instance, keys)
    return _check(verifier, max_instance, keys)


_ARC_RESULT_RE: Final = re.compile(r"(?:^|;)\s*arc\s*=", re.IGNORECASE)


def seal(
    message: bytes,
    domain: str,
    keys: DomainKeys,
    authserv_id: str,
    auth_results_value: str,
    *,
    timestamp: int | None = None,
) -> bytes:
    """The next ARC set for `message` as header lines (CRLF-terminated) to prepend: ARC-Seal,
    ARC-Message-Signature, ARC-Authentication-Results.

    `auth_results_value` is what follows "authserv-id;" in our Authentication-Results for this message, e.g.
    "dkim=pass header.d=example.org; spf=fail smtp.mailfrom=example.org; arc=none". It must carry our arc=
    result (from `verify_arc`) when the message already has a chain: that becomes the seal's cv= (RFC 8617
    §5.1.1); without a chain it may be left out (cv=none). Authentication-Results fields already in the message
    are ignored (no AR is ever signed by ARC). Raises ValueError when the message cannot be sealed.
    """
    rsa_key = keys.rsa
    if rsa_key is None:
        raise ValueError(f"ARC sealing needs an RSA key for {domain} (RFC 8617 allows only rsa-sha256)")
    value = auth_results_value.strip().strip(";").strip()
    ar_line = f"Authentication-Results: {authserv_id}; {value}\r\n".encode()
    try:
        sealer = dkim.ARC(ar_line + message, logger=_LIB_LOG, signature_algorithm=b"rsa-sha256")
    except dkim.DKIMException as exc:
        raise ValueError(f"message cannot be sealed: {exc}") from exc
    if any(name.lower() in _ARC_HEADERS for name, _ in sealer.headers) and not _ARC_RESULT_RE.search(value):
        raise ValueError("the message has an ARC chain: auth_results_value must carry its arc= result")
    # Only our own line counts: dkimpy would merge every AR field of this authserv-id into the AAR.
    sealer.headers = [sealer.headers[0]] + [h for h in sealer.headers[1:] if h[0].lower() != _AR]
    include = [name for name in sign_header_list([name for name, _ in sealer.headers]) if name != _AR]
    try:
        lines = sealer.sign(
            rsa_key.selector.encode("ascii"),
            domain.encode("ascii"),
            rsa_key.private_key,
            authserv_id.encode(),
            include_headers=include,
            timestamp=timestamp,
        )
    except dkim.DKIMException as exc:
        raise ValueError(f"ARC sealing failed: {exc}") from exc
    if not lines:
        raise ValueError(f"ARC sealing produced nothing: unparsable Authentication-Results value {value!r}")
    return b"".join(lines)
