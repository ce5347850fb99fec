"""TLS configuration scan with sslyze against a running `postkontor dev`, every TLS port: implicit TLS on 465
(submissions), 993 (imaps), 995 (pop3s) (RFC 8314 §3.3), STARTTLS on 587 and 25 (RFC 3207), 143 (RFC 9051 §6.2.1)
and 110 (RFC 2595 STLS).

What BCP 195 (RFC 8996, RFC 9325) and RFC 8314 §4.1 ask of a mail server, and what `server/tls.py` promises: no SSL
2/3, TLS 1.0 or 1.1 (RFC 8996 §5); TLS 1.2 only with forward-secret key exchange (ECDHE/DHE) and AEAD ciphers
(RFC 9325 §4.2); TLS 1.3 offered (RFC 9325 §3.1.1); no TLS compression (CRIME, RFC 9325 §3.3); no client-initiated
renegotiation. Port 25 stays reachable in plaintext: a public MX must accept mail from peers without TLS and offer
STARTTLS (RFC 3207 §4).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

sslyze = pytest.importorskip("sslyze")

from pkharness import DEMO, HOST, DevServer, Wire, running_server  # noqa: E402
from sslyze import (  # noqa: E402
    ProtocolWithOpportunisticTlsEnum,
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
    ServerScanStatusEnum,
)

pytestmark = pytest.mark.timeout(600)

_REJECTED_VERSIONS = (
    ("SSL 2.0", "ssl_2_0_cipher_suites"),
    ("SSL 3.0", "ssl_3_0_cipher_suites"),
    ("TLS 1.0", "tls_1_0_cipher_suites"),
    ("TLS 1.1", "tls_1_1_cipher_suites"),
)
_COMMANDS = {
    ScanCommand.SSL_2_0_CIPHER_SUITES,
    ScanCommand.SSL_3_0_CIPHER_SUITES,
    ScanCommand.TLS_1_0_CIPHER_SUITES,
    ScanCommand.TLS_1_1_CIPHER_SUITES,
    ScanCommand.TLS_1_2_CIPHER_SUITES,
    ScanCommand.TLS_1_3_CIPHER_SUITES,
    ScanCommand.TLS_COMPRESSION,
    ScanCommand.SESSION_RENEGOTIATION,
}
# RFC 8446 §B.4: every TLS 1.3 suite is AEAD and (ECDHE/DHE key share) forward secret.
_TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256"}
)
_OPPORTUNISTIC = ProtocolWithOpportunisticTlsEnum
# (name, DevServer property, STARTTLS protocol or None for implicit TLS)
PORTS: tuple[tuple[str, str, ProtocolWithOpportunisticTlsEnum | None], ...] = (
    ("465 submissions (implicit)", "submissions", None),
    ("587 submission (STARTTLS)", "submission", _OPPORTUNISTIC.SMTP),
    ("993 imaps (implicit)", "imaps", None),
    ("995 pop3s (implicit)", "pop3s", None),
    ("25 mx (STARTTLS)", "mx", _OPPORTUNISTIC.SMTP),
    ("143 imap (STARTTLS)", "imap", _OPPORTUNISTIC.IMAP),
    ("110 pop3 (STLS)", "pop3", _OPPORTUNISTIC.POP3),
)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    # Its own `postkontor dev`: the folder's shared `server` has no pop3s listener.
    data: Path = tmp_path_factory.mktemp("tls-scan")
    with running_server(data) as server:
        yield server


@pytest.fixture(scope="module")
def scans(dev_server: DevServer) -> dict[str, ServerScanResult]:
    """One sslyze scan of every port, run concurrently (sslyze's own thread pool)."""
    scanner = Scanner(per_server_concurrent_connections_limit=8, concurrent_server_scans_limit=7)
    requests = []
    for _name, attribute, protocol in PORTS:
        location = ServerNetworkLocation(hostname="localhost", port=getattr(dev_server, attribute), ip_address=HOST)
        config = ServerNetworkConfiguration(
            tls_server_name_indication="localhost", tls_opportunistic_encryption=protocol, network_timeout=10
        )
        requests.append(
            ServerScanRequest(server_location=location, network_configuration=config, scan_commands=_COMMANDS)
        )
    scanner.queue_scans(requests)
    by_port = {getattr(dev_server, attribute): name for name, attribute, _ in PORTS}
    return {by_port[result.server_location.port]: result for result in scanner.get_results()}


def _attempt(result: ServerScanResult, field: str) -> object:
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    assert result.scan_result is not None
    attempt = getattr(result.scan_result, field)
    assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, f"{field}: {attempt.error_trace}"
    return attempt.result


@pytest.mark.parametrize("name", [name for name, _, _ in PORTS])
def test_rfc8996_no_ssl_tls10_tls11(scans: dict[str, ServerScanResult], name: str) -> None:
    """RFC 8996 §2-5 / RFC 8314 §4.1: SSL 2.0, SSL 3.0, TLS 1.0 and TLS 1.1 are refused (not one suite accepted)."""
    for version, field in _REJECTED_VERSIONS:
        accepted = _attempt(scans[name], field).accepted_cipher_suites  # type: ignore[attr-defined]
        assert not accepted, f"{name} accepts {version}: {[s.cipher_suite.name for s in accepted]}"


@pytest.mark.parametrize("name", [name for name, _, _ in PORTS])
def test_rfc9325_s4_2_tls12_only_forward_secret_aead(scans: dict[str, ServerScanResult], name: str) -> None:
    """RFC 9325 §4.2: TLS 1.2 suites are ECDHE/DHE (forward secrecy) with an AEAD cipher (GCM, ChaCha20-Poly1305)."""
    accepted = _attempt(scans[name], "tls_1_2_cipher_suites").accepted_cipher_suites  # type: ignore[attr-defined]
    names = [suite.cipher_suite.name for suite in accepted]
    print(f"{name}: TLS 1.2 suites {names}")
    assert names, f"{name} offers no TLS 1.2 suite (clients without TLS 1.3 could not connect)"
    for suite in names:
        assert suite.startswith(("TLS_ECDHE_", "TLS_DHE_")), f"{name}: {suite} is not forward secret"
        assert "_GCM_" in suite or "CHACHA20_POLY1305" in suite, f"{name}: {suite} is not AEAD"


@pytest.mark.parametrize("name", [name for name, _, _ in PORTS])
def test_rfc9325_s3_1_1_tls13_offered(scans: dict[str, ServerScanResult], name: str) -> None:
    """RFC 9325 §3.1.1: TLS 1.3 is supported, with its (all AEAD, forward-secret) suites only."""
    accepted = _attempt(scans[name], "tls_1_3_cipher_suites").accepted_cipher_suites  # type: ignore[attr-defined]
    names = {suite.cipher_suite.name for suite in accepted}
    print(f"{name}: TLS 1.3 suites {sorted(names)}")
    assert names, f"{name} does not offer TLS 1.3"
    assert names <= _TLS13_SUITES, f"{name}: unexpected TLS 1.3 suites {names - _TLS13_SUITES}"


@pytest.mark.parametrize("name", [name for name, _, _ in PORTS])
def test_rfc9325_s3_3_no_compression_no_client_renegotiation(scans: dict[str, ServerScanResult], name: str) -> None:
    """RFC 9325 §3.3: no TLS-level compression (CRIME); client-initiated renegotiation refused (a CPU DoS)."""
    assert not _attempt(scans[name], "tls_compression").supports_compression  # type: ignore[attr-defined]
    renegotiation = _attempt(scans[name], "session_renegotiation")
    assert not renegotiation.is_vulnerable_to_client_renegotiation_dos  # type: ignore[attr-defined]


def test_rfc3207_s4_port25_accepts_plaintext_and_offers_starttls(dev_server: DevServer) -> None:
    """RFC 3207 §4: a publicly-referenced MX must not require TLS; it offers STARTTLS and accepts mail in clear."""
    wire = Wire(dev_server.mx)
    try:
        assert wire.code() == 220
        code, lines = wire.command("EHLO client.test")
        assert code == 250
        assert "STARTTLS" in [line.upper() for line in lines]
        assert wire.command("MAIL FROM:<sender@remote.test>")[0] == 250
        assert wire.command(f"RCPT TO:<{DEMO}>")[0] == 250
        assert wire.command("RSET")[0] == 250
        assert wire.command("QUIT")[0] == 221
    finally:
        wire.sock.close()


def test_rfc8314_s3_3_submission_offers_no_auth_before_starttls(dev_server: DevServer) -> None:
    """RFC 8314 §3.3 / RFC 4954 §4: port 587 offers STARTTLS and keeps AUTH back until TLS is active."""
    wire = Wire(dev_server.submission)
    try:
        assert wire.code() == 220
        code, lines = wire.command("EHLO client.test")
        assert code == 250
        keywords = [line.split()[0].upper() for line in lines[1:] if line.split()]
        assert "STARTTLS" in keywords
        assert "AUTH" not in keywords
    finally:
        wire.sock.close()
