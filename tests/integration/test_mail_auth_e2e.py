"""Message authentication end to end: two postkontor instances (a.test on 127.0.0.2, b.test on 127.0.0.3) and a DNS
server on loopback whose zone holds their SPF (RFC 7208), DKIM (RFC 6376, Ed25519 per RFC 8463 beside RSA) and
DMARC (RFC 7489) records. What B records is checked in its Authentication-Results (RFC 8601); dkimpy's
`dkimverify`, an independent verifier, checks the delivered message against the same DNS."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkworld import Instance, dns_server, require_root
from zonefile import zone_from

A_IP, B_IP, SPOOF_IP = "127.0.0.2", "127.0.0.3", "127.0.0.9"
# Filled from what `postkontor dns` prints for each domain (see `world`); the dict is served live, so a test may
# change a record.
ZONE: dict[tuple[str, str], list[str]] = {}
FAST_RETRIES = {"retry_first": 1.0, "retry_backoff": 1.0, "retry_max_interval": 1.0, "connect_timeout": 2.0}


def _publish(instance: Instance) -> None:
    """Every record `postkontor dns` prints for the instance's domain into the zone, as an administrator pastes
    them; a.test's owner then tightens the suggested DMARC policy to p=reject."""
    output = instance.cli("dns", instance.domain).stdout
    ZONE.update(zone_from(output))
    if instance.domain == "a.test":
        ZONE["_dmarc.a.test", "TXT"] = ['"v=DMARC1; p=reject"']
    else:
        ZONE["_dmarc.b.test", "TXT"] = ['"v=DMARC1; p=none"']


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance, str]]:
    require_root()
    root = tmp_path_factory.mktemp("authworld")
    with dns_server(ZONE) as dns:  # the server keeps the dict: records added below are served
        a = Instance(root / "a", "a.test", A_IP, dns, outbound=FAST_RETRIES)
        b = Instance(root / "b", "b.test", B_IP, dns, outbound=FAST_RETRIES)
        for instance in (a, b):
            instance.setup()
            _publish(instance)
        a.cli("user", "add", "alice@a.test", stdin="alice-pw\n")
        a.cli("user", "add", "carol@a.test", stdin="carol-pw\n")
        b.cli("user", "add", "bob@b.test", stdin="bob-pw\n")
        b.cli("alias", "add", "fwd@b.test", "carol@a.test", "bob@b.test")
        for instance in (a, b):
            instance.start()
        try:
            yield a, b, dns
        finally:
            for instance in (a, b):
                instance.stop()


def _submit(instance: Instance, sender: str, password: str, recipients: list[str], subject: str) -> None:
    context = ssl.create_default_context(cafile=str(instance.data / "tls" / "cert.pem"))
    context.check_hostname = False
    body = (
        f"From: Alice <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@a.test>\r\n\r\nhello from a.test\r\n"
    )
    with smtplib.SMTP(instance.ip, 587, timeout=20) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, password)
        smtp.sendmail(sender, recipients, body.encode())


def _spoof(target_ip: str, sender: str, recipient: str, subject: str, extra: str = "") -> tuple[int, bytes]:
    """Straight to the MX from an address outside a.test's SPF, unsigned; (code, text) of the end of DATA."""
    body = f"{extra}From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n\r\nplease pay\r\n"
    with smtplib.SMTP(target_ip, 25, timeout=30, source_address=(SPOOF_IP, 0)) as smtp:
        smtp.ehlo("spoofer.example")
        smtp.mail(sender)
        code, _ = smtp.rcpt(recipient)
        assert code == 250
        return smtp.data(body.encode())


def _auth_results(message: bytes, authserv_id: str) -> list[str]:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    fields = [" ".join(str(v).split()) for v in parsed.get_all("Authentication-Results", [])]
    return [f for f in fields if f.lower().startswith(authserv_id + ";")]


def _junk(instance: Instance, localpart: str) -> list[bytes]:
    path = instance.data / "mail" / instance.domain / localpart / ".Junk"
    try:
        box = mailbox.Maildir(path, create=False)
        return [box.get_bytes(key) for key in box.iterkeys()]
    except (FileNotFoundError, mailbox.NoSuchMailboxError):
        return []  # not made yet, or being made (new/ before cur/)


def test_rfc8601_signed_mail_arrives_with_spf_dkim_dmarc_pass(world: tuple[Instance, Instance, str]) -> None:
    """RFC 7208 §2.4, RFC 6376 §6, RFC 8463, RFC 7489 §6.6: A signs (Ed25519 and RSA), B verifies both, SPF passes
    for A's address and DMARC passes; B records it in one Authentication-Results with its hostname."""
    a, b, _dns = world
    subject = f"signed-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["bob@b.test"], subject)
    found = b.find("bob", subject)
    assert len(found) == 1
    message = found[0]
    assert message.count(b"DKIM-Signature:") == 2
    assert b"a=ed25519-sha256" in message and b"a=rsa-sha256" in message
    results = _auth_results(message, "mx.b.test")
    assert len(results) == 1, results
    ar = results[0]
    assert "spf=pass smtp.mailfrom=a.test" in ar
    assert len(re.findall(r"dkim=pass header\.d=a\.test", ar)) == 2, ar
    assert "dmarc=pass" in ar and "header.from=a.test" in ar
    assert "arc=none" in ar


def test_independent_verifier_dkimverify_accepts_the_delivered_message(
    world: tuple[Instance, Instance, str], tmp_path: Path
) -> None:
    """dkimpy's `dkimverify` (a separate program, asking the same loopback DNS) verifies both signatures of what
    B stored, Return-Path, Received and Authentication-Results added on the way included (RFC 6376 §5.4)."""
    a, b, dns = world
    subject = f"dkimverify-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["bob@b.test"], subject)
    found = b.find("bob", subject)
    assert len(found) == 1
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os
            import dns.resolver
            host, port = os.environ["PK_TEST_DNS"].split(":")
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host]
            resolver.port = int(port)
            dns.resolver.default_resolver = resolver
            """
        )
    )
    program = shutil.which("dkimverify")
    command = [program] if program else [sys.executable, "-c", "from dkim.dkimverify import main; main()"]
    env = {**os.environ, "PK_TEST_DNS": dns, "PYTHONPATH": str(tmp_path)}
    for index in ("0", "1"):
        done = subprocess.run(
            [*command, "--index", index], input=found[0], capture_output=True, env=env, timeout=60, check=False
        )
        assert done.stdout.strip() == b"signature ok", done.stdout + done.stderr


def test_rfc7489_s6_7_spoofed_author_is_refused_under_p_reject(world: tuple[Instance, Instance, str]) -> None:
    """From: a.test, sent from 127.0.0.9 (not in a.test's SPF) without a signature: DMARC fails, a.test asks for
    reject: 550 5.7.1 at the end of DATA, nothing delivered."""
    _a, b, _dns = world
    subject = f"spoof-reject-{uuid.uuid4()}"
    code, text = _spoof(B_IP, "someone@a.test", "bob@b.test", subject)
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    assert b.find("bob", subject, timeout=1.0) == []
    assert all(subject.encode() not in m for m in _junk(b, "bob"))


def test_rfc8601_s5_forged_results_claiming_our_authserv_id_are_removed(
    world: tuple[Instance, Instance, str],
) -> None:
    """A sender's Authentication-Results naming mx.b.test is dropped; one naming someone else is kept; ours is
    the only one with our authserv-id (RFC 8601 §5)."""
    _a, b, _dns = world
    subject = f"forged-ar-{uuid.uuid4()}"
    forged = (
        "Authentication-Results: MX.B.TEST; dkim=pass header.d=a.test; dmarc=pass\r\n"
        "Authentication-Results: elsewhere.example; spf=pass\r\n"
    )
    code, _text = _spoof(B_IP, "someone@nodmarc.test", "bob@b.test", subject, extra=forged)
    assert code == 250
    found = b.find("bob", subject)
    assert len(found) == 1
    ours = _auth_results(found[0], "mx.b.test")
    assert len(ours) == 1 and "dmarc=none" in ours[0] and "spf=none" in ours[0], ours
    assert b"Authentication-Results: elsewhere.example; spf=pass" in found[0]


def test_rfc8617_alias_forward_is_sealed_and_signed_by_the_forwarder(world: tuple[Instance, Instance, str]) -> None:
    """fwd@b.test forwards to carol@a.test (and bob@b.test): B DKIM-signs the forward as b.test and adds an ARC set
    (RFC 8617 §5.1) carrying its results; A sees SPF fail (B's address is not in a.test's SPF) but DMARC passes
    through the original a.test signature, and the ARC chain validates. Bob's local copy has B's results only."""
    a, b, _dns = world
    subject = f"forward-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["fwd@b.test"], subject)
    local = b.find("bob", subject)
    assert len(local) == 1 and b"ARC-Seal:" not in local[0]
    found = a.find("carol", subject)
    assert len(found) == 1
    message = found[0]
    assert b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=b.test;" in message
    assert b"ARC-Authentication-Results: i=1; mx.b.test;" in message
    results = _auth_results(message, "mx.a.test")
    assert len(results) == 1, results
    ar = results[0]
    assert "spf=fail" in ar
    assert len(re.findall(r"dkim=pass header\.d=a\.test", ar)) == 2, ar
    assert len(re.findall(r"dkim=pass header\.d=b\.test", ar)) == 2, ar
    assert "dmarc=pass" in ar and "arc=pass" in ar


def test_rfc7489_p_quarantine_goes_to_junk(world: tuple[Instance, Instance, str]) -> None:
    """a.test now publishes p=quarantine (B restarted, so no cached record): the same spoof is accepted and lands
    in bob's Junk folder, not his INBOX (RFC 7489 §6.3 "quarantine")."""
    _a, b, _dns = world
    ZONE[("_dmarc.a.test", "TXT")] = ['"v=DMARC1; p=quarantine"']
    try:
        b.stop()
        b.start()
        subject = f"spoof-quarantine-{uuid.uuid4()}"
        code, _text = _spoof(B_IP, "someone@a.test", "bob@b.test", subject)
        assert code == 250
        deadline = time.monotonic() + 20
        junk = [m for m in _junk(b, "bob") if subject.encode() in m]
        while not junk and time.monotonic() < deadline:
            time.sleep(0.05)
            junk = [m for m in _junk(b, "bob") if subject.encode() in m]
        assert len(junk) == 1
        ar = _auth_results(junk[0], "mx.b.test")
        assert len(ar) == 1 and "dmarc=fail" in ar[0] and "dis=quarantine" in ar[0], ar
        assert "spf=fail" in ar[0]
        assert b.find("bob", subject, timeout=0.5) == []
    finally:
        ZONE[("_dmarc.a.test", "TXT")] = ['"v=DMARC1; p=reject"']
