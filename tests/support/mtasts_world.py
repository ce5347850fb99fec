"""Test helpers for MTA-STS (RFC 8461): a test CA issuing server certificates, a tiny HTTPS server that answers
every request with bytes it is given (so that broken responses can be served), and an SMTP sink with STARTTLS
made of our own server engine. Everything listens on 127.0.0.0/8 only."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from postkontor.protocol.smtp import (
    MailFrom,
    MessageReceived,
    RcptTo,
    Reply,
    ServerSettings,
    SMTPServerConnection,
    StartTLSRequested,
)

__all__ = ["HTTPSServer", "SMTPSink", "TestCA", "http_response"]


class TestCA:
    """A throw-away certificate authority: `ca_file` is the trust anchor to give the client."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postkontor test CA")])
        now = datetime.datetime.now(datetime.UTC)
        public = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, label: str, names: list[str], *, expired: bool = False) -> tuple[Path, Path]:
        """A server certificate for `names` (subjectAltName dNSName); returns (cert.pem, key.pem)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
            if expired
            else (
                now - datetime.timedelta(hours=1),
                now + datetime.timedelta(days=10),
            )
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{label}.crt", self.directory / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def server_context(self, label: str, names: list[str], *, expired: bool = False) -> ssl.SSLContext:
        cert, key = self.issue(label, names, expired=expired)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context


def http_response(
    body: bytes | str,
    *,
    status: str = "200 OK",
    content_type: str | None = "text/plain",
    length: bool = True,
    chunked: bool = False,
    extra: str = "",
) -> bytes:
    """An HTTP/1.1 response as bytes; `chunked` sends the body in 1000-byte chunks."""
    data = body.encode() if isinstance(body, str) else body
    head = f"HTTP/1.1 {status}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
        data = b"".join(
            b"%x\r\n%s\r\n" % (len(data[i : i + 1000]), data[i : i + 1000]) for i in range(0, len(data), 1000)
        )
        data += b"0\r\n\r\n"
    elif length:
        head += f"Content-Length: {len(data)}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode() + data


@dataclass
class HTTPSServer:
    """Answers every request on ip:port (0 = any free port) with `response`; records the request heads."""

    ip: str
    context: ssl.SSLContext
    response: bytes = b""
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.ip, self.port, ssl=self.context)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(self.response)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()


@dataclass
class SMTPSink:
    """An SMTP server on ip:port with STARTTLS (unless `context` is None); records messages and TLS use."""

    ip: str
    port: int
    context: ssl.SSLContext | None
    messages: list[tuple[bytes, bool]] = field(default_factory=list)  # (data, over TLS)
    connections: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.ip, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        settings = ServerSettings(hostname="sink.test", max_message_size=1 << 20, starttls=self.context is not None)
        engine = SMTPServerConnection(settings)
        engine.start()
        tls = False
        try:
            async with asyncio.timeout(30):
                while True:
                    event = engine.next_event()
                    if event is None:
                        writer.write(engine.data_to_send())
                        await writer.drain()
                        if engine.close_requested:
                            return
                        data = await reader.read(65536)
                        if not data:
                            return
                        engine.receive_data(data)
                    elif isinstance(event, StartTLSRequested):
                        assert self.context is not None
                        writer.write(engine.data_to_send())
                        await writer.drain()
                        await writer.start_tls(self.context)
                        engine.tls_started()
                        tls = True
                    elif isinstance(event, MailFrom):
                        engine.send(Reply(250, "2.1.0", "Sender ok"))
                    elif isinstance(event, RcptTo):
                        engine.send(Reply(250, "2.1.5", "Recipient ok"))
                    elif isinstance(event, MessageReceived):
                        self.messages.append((event.data, tls))
                        engine.send(Reply(250, "2.0.0", "Ok: queued"))
        except (OSError, TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
