"""DKIM signing and verification (RFC 6376, RFC 8463 Ed25519, RFC 8301 crypto updates), over dkimpy.

dkimpy does the canonicalisation, hashing and the signature arithmetic; this module decides which headers we sign,
fetches keys through our own resolver (dkimpy's asyncio support needs aiodns and verifies one signature), verifies
*every* signature and turns each outcome into an RFC 8601 result.

Verification is three steps so that its CPU part can leave the event loop: `verify` parses the message and the
signatures (`_prepare`), fetches all keys concurrently (`_fetch_keys`), then checks each signature (`_check`:
canonicalisation, body hash, signature). With `offload=True` the first and last steps run in a worker thread
(`asyncio.to_thread`); worth it for large messages, whose body canonicalisation and hashing take milliseconds
per megabyte. `verify_with_keys` is the synchronous whole for callers that run it in their own executor.

Results (RFC 8601 §2.7.1) and the choices made:
- pass: the signature verifies and covers the whole body.
- fail: the signature or the body hash does not verify, or l= is larger than the body (RFC 6376 §6.1.3).
- policy: cryptographically valid but not acceptable here: an RSA key under 1024 bits or rsa-sha1 (RFC 8301 §3),
  or an l= that covers only part of the body: the content after it is unsigned and could be anything (the
  "DKIM replay with appended content" problem), so such a signature must not count as a pass for DMARC.
- neutral: the signature could not be evaluated: beyond the signature limit, or an unexpected library error.
- temperror: the key lookup failed for now (our DNSTemporaryError, or any DNSError that is not permanent).
- permerror: the signature header is malformed (missing or bad tags, i= outside d=, expired x=, t= in the future,
  h= without From),
  or the key is missing (NXDOMAIN or no record), revoked (empty p=), malformed or of the wrong type (RFC 6376 §6.1).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, Protocol

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy  # type: ignore[import-untyped]
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]

from postkontor.dns.resolver import DNSError, DNSPermanentError

from .keys import DomainKeys

__all__ = [
    "MAX_SIGNATURES",
    "DKIMResult",
    "KeyLookup",
    "Result",
    "TXTResolver",
    "sign",
    "sign_header_list",
    "verify",
    "verify_with_keys",
]

Result = Literal["pass", "fail", "neutral", "temperror", "permerror", "policy"]

MAX_SIGNATURES: Final = 10  # RFC 6376 §6.1: verifiers MAY limit how many signatures they look at
MIN_RSA_BITS: Final = 1024  # RFC 8301 §3.2
_B_PREFIX: Final = 8  # RFC 6008 §4: header.b carries at least the first 8 characters of b=
_WSP: Final = re.compile(rb"\s+")

# What we sign, rspamd's proven choice. "o": listed once more than present, even when absent, so none can be
# added (RFC 6376 §8.15); "x": listed once more than present if present (a second one would be a forgery);
# "": as many times as present.
_SIGN_SPEC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"from", "o"),
    (b"sender", "x"),
    (b"reply-to", "o"),
    (b"subject", "o"),
    (b"date", "x"),
    (b"message-id", "x"),
    (b"to", "o"),
    (b"cc", "o"),
    (b"mime-version", "x"),
    (b"content-type", "x"),
    (b"content-transfer-encoding", "x"),
    (b"in-reply-to", "x"),
    (b"references", "x"),
    (b"resent-to", ""),
    (b"resent-cc", ""),
    (b"resent-from", ""),
    (b"resent-sender", ""),
    (b"resent-message-id", ""),
    (b"list-id", ""),
    (b"list-help", ""),
    (b"list-owner", ""),
    (b"list-unsubscribe", ""),
    (b"list-unsubscribe-post", ""),
    (b"list-subscribe", ""),
    (b"list-post", ""),
    (b"openpgp", "x"),
    (b"autocrypt", "x"),
)

# dkimpy logs every failed signature at ERROR; our results carry the reasons instead.
_LIB_LOG: Final = logging.getLogger("postkontor.mailauth.dkimpy")
_LIB_LOG.addHandler(logging.NullHandler())
_LIB_LOG.propagate = False


class TXTResolver(Protocol):
    """What verification needs of `postkontor.dns.MailResolver`."""

    async def txt(self, name: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class DKIMResult:
    """The outcome for one DKIM-Signature, in the terms of an Authentication-Results dkim= entry (RFC 8601)."""

    domain: str  # d= (header.d)
    selector: str  # s= (header.s)
    algorithm: str  # a=
    result: Result
    reason: str
    b_prefix: str  # header.b (RFC 6008): tells apart several signatures of one domain
    identity: str = ""  # i= (header.i), "@" + d= when absent


# dkim.DKIM: dkimpy has no type information.
_Verifier = Any

# The key lookup for one "<selector>._domainkey.<domain>": its TXT records, or the resolver's error.
KeyLookup = list[str] | DNSError


def sign_header_list(header_names: Sequence[bytes]) -> list[bytes]:
    """The h= list for a message with these header field names (any case), oversigning as `_SIGN_SPEC` says."""
    counts: dict[bytes, int] = {}
    for name in header_names:
        lower = name.lower()
        counts[lower] = counts.get(lower, 0) + 1
    listed: list[bytes] = []
    for name, mode in _SIGN_SPEC:
        present = counts.get(name, 0)
        times = present + 1 if mode == "o" or (mode == "x" and present) else present
        listed.extend([name] * times)
    return listed


_openssl_keys: dict[int, rsa.RSAPrivateKey] = {}


def _openssl_rsa_sign(digest: Any, private_key: Mapping[str, int]) -> bytes:
    """RSASSA-PKCS1-v1_5 by OpenSSL for dkimpy's signer (DKIM and ARC). dkimpy's own does the modular
    exponentiation in Python: about 7 ms per RSA-2048 signature holding the GIL, and not constant-time (its
    timing depends on the private key). Same inputs, same signature bytes (PKCS#1 v1.5 is deterministic)."""
    modulus = private_key["modulus"]
    key = _openssl_keys.get(modulus)
    if key is None:
        public = rsa.RSAPublicNumbers(private_key["publicExponent"], modulus)
        key = rsa.RSAPrivateNumbers(
            private_key["prime1"],
            private_key["prime2"],
            private_key["privateExponent"],
            private_key["exponent1"],
            private_key["exponent2"],
            private_key["coefficient"],
            public,
        ).private_key()
        if len(_openssl_keys) > 64:  # rotated-away keys; a handful are in use at a time
            _openssl_keys.clear()
        _openssl_keys[modulus] = key
    algorithm = hashes.SHA256() if digest.name == "sha256" else hashes.SHA1()
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign

_parse_pem_private_key: Final = dkim.parse_pem_private_key
_parsed_keys: dict[bytes, Any] = {}


def _cached_pem_private_key(data: bytes) -> Any:
    """dkimpy parses the PEM private key (ASN.1 in Python) for every signature, three times per forwarded message
    (DKIM, ARC-Message-Signature, ARC-Seal); the parse is the same each time. Callers only read the result."""
    parsed = _parsed_keys.get(data)
    if parsed is None:
        parsed = _parse_pem_private_key(data)
        if len(_parsed_keys) > 64:  # rotated-away keys; a handful are in use at a time
            _parsed_keys.clear()
        _parsed_keys[data] = parsed
    return parsed


dkim.parse_pem_private_key = _cached_pem_private_key


def sign(message: bytes, domain: str, keys: DomainKeys) -> bytes:
    """DKIM-Signature header lines (CRLF-terminated) to prepend to `message`: one per active key, Ed25519 first.

    relaxed/relaxed (survives the re-folding and trailing-space changes of relays), t= set, no l= (RFC 6376
    §8.2), no x=. Raises ValueError for a message without From (RFC 6376 §5.4: it MUST be signed) or no keys.
    CPU: an Ed25519 signature costs well under a millisecond, an RSA-2048 one about 1 ms (OpenSSL, see
    `_openssl_rsa_sign`); run it in a thread for large volumes.
    """
    if not keys.keys:
        raise ValueError(f"no DKIM keys for {domain}")
    try:
        signer = dkim.DKIM(message, logger=_LIB_LOG)
    except dkim.DKIMException as exc:
        raise ValueError(f"message cannot be signed: {exc}") from exc
    names = [name for name, _value in signer.headers]
    if not any(name.lower() == b"from" for name in names):
        raise ValueError("message has no From header field (RFC 6376 §5.4)")
    include = sign_header_list(names)
    domain_b = domain.encode("ascii")
    lines: list[bytes] = []
    for key in keys.keys:
        algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
        try:
            line = signer.sign(
                key.selector.encode("ascii"),
                domain_b,
                key.private_key,
                signature_algorithm=algorithm,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"DKIM signing with {key.selector} failed: {exc}") from exc
        lines.append(line)
    return b"".join(lines)


@dataclass(slots=True)
class _Signature:
    index: int  # among the DKIM-Signature fields, top first: dkimpy's idx
    tags: dict[bytes, bytes]
    error: DKIMResult | None = None  # decided before any DNS lookup

    def key_name(self) -> str:
        return (self.tags[b"s"] + b"._domainkey." + self.tags[b"d"]).decode("utf-8", "replace").lower()


_BYTES_REPR: Final = re.compile(r"""b(['"])(.*?)\1""")


def _lib_text(exc: BaseException) -> str:
    """dkimpy's message with its bytes reprs (b'bh') shown as text: the reason ends up in a header comment."""
    return _BYTES_REPR.sub(r"\2", str(exc))


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def _prepare(message: bytes, limit: int) -> tuple[_Verifier, list[_Signature]] | list[DKIMResult]:
    """The parsed message and its signatures; or the final results if there is nothing to look up."""
    try:
        verifier = dkim.DKIM(message, logger=_LIB_LOG, minkey=MIN_RSA_BITS)
    except dkim.DKIMException as exc:
        header_end = message.find(b"\r\n\r\n")
        if b"dkim-signature:" in message[: header_end if header_end >= 0 else len(message)].lower():
            return [DKIMResult("", "", "", "permerror", f"unparsable message header: {_lib_text(exc)}", "")]
        return []
    raw = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    signatures: list[_Signature] = []
    for index, value in enumerate(raw):
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList as exc:
            tags = {}
            error = f"malformed tag list: {_lib_text(exc)}"
        else:
            error = ""
        sig = _Signature(index, tags)
        if index >= limit:
            sig.error = _result(sig, "neutral", f"not evaluated: more than {limit} signatures")
        elif error:
            sig.error = _result(sig, "permerror", error)
        else:
            try:
                dkim.validate_signature_fields(tags)
            except dkim.DKIMException as exc:
                sig.error = _result(sig, "permerror", f"invalid signature: {_lib_text(exc)}")
            else:
                signed = [name.strip().lower() for name in tags[b"h"].split(b":")]
                if b"from" not in signed:
                    # RFC 6376 §6.1.1: a signature that does not cover From says nothing about the author.
                    sig.error = _result(sig, "permerror", "From is not signed (h= lacks from)")
                elif tags[b"a"] == b"rsa-sha1":
                    sig.error = _result(sig, "policy", "rsa-sha1 is not accepted (RFC 8301 §3.1)")
        signatures.append(sig)
    return verifier, signatures


def _result(sig: _Signature, result: Result, reason: str, b_prefix: str = "") -> DKIMResult:
    tags = sig.tags
    domain = _text(tags.get(b"d"))
    identity = _text(tags.get(b"i")) or (f"@{domain}" if domain else "")
    return DKIMResult(domain, _text(tags.get(b"s")), _text(tags.get(b"a")), result, reason, b_prefix, identity)


async def _fetch_keys(resolver: TXTResolver, names: set[str]) -> dict[str, KeyLookup]:
    async def one(name: str) -> KeyLookup:
        try:
            return await resolver.txt(name)
        except DNSError as exc:
            return exc

    ordered = sorted(names)
    found = await asyncio.gather(*(one(name) for name in ordered))
    return dict(zip(ordered, found, strict=True))


def _key_problem(sig: _Signature, lookup: KeyLookup | None) -> tuple[DKIMResult | None, bytes | None, str]:
    """(a final result, or None and the key record to verify with, and a note for the reason)."""
    name = sig.key_name()
    if isinstance(lookup, DNSPermanentError):
        return _result(sig, "permerror", f"no key for signature: {lookup}"), None, ""
    if isinstance(lookup, DNSError):  # DNSTemporaryError, or anything the resolver could not classify
        return _result(sig, "temperror", f"key lookup failed: {lookup}"), None, ""
    if not lookup:
        return _result(sig, "permerror", f"no key record at {name}"), None, ""
    # RFC 6376 §6.1.2: with several records a verifier may pick one; prefer one that says it is a DKIM key.
    record = next((text for text in lookup if text.lstrip().startswith("v=DKIM1")), lookup[0]).encode()
    try:
        key_tags = parse_tag_value(record)
    except InvalidTagValueList as exc:
        return _result(sig, "permerror", f"malformed key record at {name}: {_lib_text(exc)}"), None, ""
    if not key_tags.get(b"p"):
        return _result(sig, "permerror", f"key revoked (empty p=) at {name}"), None, ""
    try:
        _pk, keysize, ktag, _tlsrpt = dkim.evaluate_pk(name.encode(), record)
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        return _result(sig, "permerror", f"unusable key at {name}: {_lib_text(exc)}"), None, ""
    algorithm = sig.tags[b"a"]
    if not algorithm.startswith(ktag + b"-"):
        return _result(sig, "permerror", f"key type {_text(ktag)} does not fit a={_text(algorithm)}"), None, ""
    hashes = key_tags.get(b"h")
    if hashes is not None and b"sha256" not in [h.strip() for h in hashes.split(b":")]:
        return _result(sig, "permerror", f"key at {name} does not allow sha256 (h={_text(hashes)})"), None, ""
    flags = [flag.strip() for flag in key_tags.get(b"t", b"").split(b":")]
    if b"s" in flags:
        # RFC 6376 §3.6.1 t=s: the i= domain must be d= itself, not a subdomain.
        identity = sig.tags.get(b"i", b"@" + sig.tags[b"d"])
        if identity.rpartition(b"@")[2].lower() != sig.tags[b"d"].lower():
            return _result(sig, "permerror", "key has t=s but i= is a subdomain of d="), None, ""
    if ktag == b"rsa" and keysize < MIN_RSA_BITS:
        return _result(sig, "policy", f"RSA key of {keysize} bits is too small (RFC 8301 §3.2)"), None, ""
    return None, record, " (key in testing mode, t=y)" if b"y" in flags else ""


def _check(verifier: _Verifier, sigs: list[_Signature], keys: Mapping[str, KeyLookup]) -> list[DKIMResult]:
    """Verify each signature against its key; CPU only, no IO: may run in a thread."""
    prefixes = _b_prefixes([_WSP.sub(b"", sig.tags.get(b"b", b"")).decode("ascii", "replace") for sig in sigs])
    results: list[DKIMResult] = []
    for sig, prefix in zip(sigs, prefixes, strict=True):
        result = sig.error or _check_one(verifier, sig, keys.get(sig.key_name()))
        results.append(replace(result, b_prefix=prefix))
    return results


def _check_one(verifier: _Verifier, sig: _Signature, lookup: KeyLookup | None) -> DKIMResult:
    final, record, note = _key_problem(sig, lookup)
    if final is not None:
        return final
    try:
        valid = verifier.verify(sig.index, dnsfunc=lambda _name, timeout=0: record)
    except (dkim.MessageFormatError, dkim.ValidationError) as exc:
        text = _lib_text(exc)
        if text.startswith("body hash mismatch"):
            return _result(sig, "fail", "body hash did not verify" + note)
        return _result(sig, "permerror", f"invalid signature: {text}")
    except dkim.DKIMException as exc:
        return _result(sig, "permerror", f"{exc.__class__.__name__}: {_lib_text(exc)}")
    except Exception as exc:  # a library bug must not lose the other signatures' results
        return _result(sig, "neutral", f"verification error: {exc.__class__.__name__}: {exc}")
    if not valid:
        return _result(sig, "fail", "signature did not verify" + note)
    if b"l" in sig.tags:
        return _length_result(verifier, sig, note)
    return _result(sig, "pass", "signature verified" + note)


def _length_result(verifier: _Verifier, sig: _Signature, note: str) -> DKIMResult:
    """A verified signature with l=: a pass only if it covers the whole canonicalised body (RFC 6376 §8.2)."""
    length = int(sig.tags[b"l"])
    policy = CanonicalizationPolicy.from_c_value(sig.tags.get(b"c", b"simple/simple"))
    body_length = len(policy.canonicalize_body(verifier.body))
    if length > body_length:
        return _result(sig, "fail", f"l={length} is longer than the body ({body_length} octets, RFC 6376 §6.1.3)")
    if length < body_length:
        unsigned = body_length - length
        return _result(sig, "policy", f"l={length} leaves {unsigned} body octets unsigned" + note)
    return _result(sig, "pass", "signature verified" + note)


def _b_prefixes(values: list[str]) -> list[str]:
    """The shortest prefix of each b= (at least 8 characters) that no other signature's b= starts with."""
    prefixes: list[str] = []
    for i, value in enumerate(values):
        others = [other for j, other in enumerate(values) if j != i and other != value]
        length = _B_PREFIX
        while length < len(value) and any(other.startswith(value[:length]) for other in others):
            length += 1
        prefixes.append(value[:length])
    return prefixes


def verify_with_keys(message: bytes, keys: Mapping[str, KeyLookup], *, limit: int = MAX_SIGNATURES) -> list[DKIMResult]:
    """`verify` with the key lookups already done: {"<s>._domainkey.<d>" (lower case): lookup}. Synchronous."""
    prepared = _prepare(message, limit)
    if isinstance(prepared, list):
        return prepared
    verifier, sigs = prepared
    return _check(verifier, sigs, keys)


async def verify(
    message: bytes, resolver: TXTResolver, *, limit: int = MAX_SIGNATURES, offload: bool = False
) -> list[DKIMResult]:
    """One result per DKIM-Signature field, top first ([] for an unsigned message). Never raises for bad input.

    The keys of all signatures are looked up at once. `offload` runs parsing and checking in a worker thread.
    """
    prepared = await asyncio.to_thread(_prepare, message, limit) if offload else _prepare(message, limit)
    if isinstance(prepared, list):
        return prepared
    verifier, sigs = prepared
    keys = await _fetch_keys(resolver, {sig.key_name() for sig in sigs if sig.error is None})
    if offload:
        return await asyncio.to_thread(_check, verifier, sigs, keys)
    return _check(verifier, sigs, keys)
