"""The self-signed certificate: what it names, how its key is stored, and that TLS clients accept it."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postkontor.admin.certs import make_self_signed


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    make_self_signed(cert, key, ["mail.example.test", "localhost"], ["127.0.0.1", "::1"], days=30)
    return cert, key


def test_certificate_names_and_validity(pair: tuple[Path, Path]) -> None:
    cert = x509.load_pem_x509_certificate(pair[0].read_bytes())
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attribute.value for attribute in common_names] == ["mail.example.test"]
    assert cert.issuer == cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.test", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    assert datetime.timedelta(days=29) < cert.not_valid_after_utc - now <= datetime.timedelta(days=30)


def test_key_is_p256_private_and_matches(pair: tuple[Path, Path]) -> None:
    cert_path, key_path = pair
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.public_key() == key.public_key()
    assert sorted(path.name for path in cert_path.parent.iterdir()) == ["cert.pem", "key.pem"], (
        "no temp files"
    )


def test_regenerating_replaces_both_files(pair: tuple[Path, Path]) -> None:
    cert_path, key_path = pair
    before = cert_path.read_bytes(), key_path.read_bytes()
    make_self_signed(cert_path, key_path, ["other.test"], [])
    assert (cert_path.read_bytes(), key_path.read_bytes()) != before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["other.test"]
    assert san.get_values_for_type(x509.IPAddress) == []


def test_a_name_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DNS name"):
        make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", [], ["127.0.0.1"])
    assert not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize("server_name", ["localhost", "mail.example.test", "127.0.0.1"])
def test_a_verifying_tls_client_that_trusts_the_file_connects(
    pair: tuple[Path, Path], server_name: str
) -> None:
    """What `dev` users do: point their client's CA file at cert.pem and verify the name or IP."""
    cert_path, key_path = pair
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    client_context = ssl.create_default_context(cafile=str(cert_path))
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    left, right = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(right, server_side=True) as tls:
                tls.sendall(b"220 ok")
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(left, server_hostname=server_name) as tls:
            assert tls.recv(6) == b"220 ok"
    finally:
        thread.join(10)
    assert not errors
