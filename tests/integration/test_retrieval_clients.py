"""Real third-party IMAP and POP3 clients against the running server: curl, mbsync (isync), fetchmail, getmail6
and the imapclient library (a second IMAP implementation besides imaplib)."""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import subprocess
import uuid
from pathlib import Path

import pytest
from pkharness import DEMO, DEMO_PASSWORD, HOST, DevServer, env_without_proxy


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: scripts/test-all installs it (apt-get install {package})")


def _run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, capture_output=True, timeout=120, env=env or env_without_proxy(), cwd=cwd, stdin=subprocess.DEVNULL
    )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"{args[0]} failed ({result.returncode}):\n{output}"
    return output


def _deliver(server: DevServer, marker: str, to: str = DEMO) -> bytes:
    data = f"From: a@remote.test\r\nTo: {to}\r\nSubject: {marker}\r\n\r\nbody of {marker}\r\n".encode()
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", [to], data)
    server.find(marker, address=to)
    return data


def _imap(server: DevServer) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    client.login(DEMO, DEMO_PASSWORD)
    return client


def _uid_of(client: imaplib.IMAP4, marker: str) -> int:
    typ, data = client.uid("SEARCH", f'SUBJECT "{marker}"')
    assert typ == "OK" and data[0], f"{marker} not found"
    return int(data[0].split()[0])


# --- curl ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["imap", "imaps"])
def test_curl_fetches_a_message_over_imap(server: DevServer, scheme: str) -> None:
    _require("curl", "curl")
    marker = f"curl-{scheme}-{uuid.uuid4()}"
    data = _deliver(server, marker)
    client = _imap(server)
    client.select("INBOX", readonly=True)
    uid = _uid_of(client, marker)
    client.logout()
    port = server.imap if scheme == "imap" else server.imaps
    url = f"{scheme}://{HOST}:{port}/INBOX;UID={uid}"
    output = _run(["curl", "-sS", "--ssl-reqd", "--cacert", str(server.cert), "-u", f"{DEMO}:{DEMO_PASSWORD}", url])
    assert output.encode().endswith(data)


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
def test_curl_lists_and_retrieves_over_pop3(server: DevServer, scheme: str) -> None:
    _require("curl", "curl")
    marker = f"curl-{scheme}-{uuid.uuid4()}"
    _deliver(server, marker)
    port = server.pop3 if scheme == "pop3" else server.pop3s
    base = ["curl", "-sS", "--ssl-reqd", "--cacert", str(server.cert), "-u", f"{DEMO}:{DEMO_PASSWORD}"]
    listing = _run([*base, f"{scheme}://{HOST}:{port}/"])
    numbers = [line.split()[0] for line in listing.splitlines() if line.strip()]
    assert numbers
    found = [_run([*base, f"{scheme}://{HOST}:{port}/{number}"]) for number in numbers]
    assert any(marker in text for text in found)


# --- mbsync ---------------------------------------------------------------------------------------------------------
def _mbsyncrc(server: DevServer, home: Path, local: Path) -> Path:
    rc = home / ".mbsyncrc"
    rc.write_text(
        f"""IMAPAccount pk
Host {HOST}
Port {server.imaps}
User {DEMO}
Pass {DEMO_PASSWORD}
SSLType IMAPS
CertificateFile {server.cert}

IMAPStore remote
Account pk

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
SyncState *
"""
    )
    rc.chmod(0o600)
    return rc


def _local_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for sub in ("new", "cur"):
        directory = folder / sub
        if directory.is_dir():
            for entry in directory.iterdir():
                files[entry.read_bytes().decode(errors="replace")] = entry
    return files


def test_mbsync_syncs_both_ways_with_flags_and_deletions(server: DevServer, tmp_path: Path) -> None:
    """isync pulls new mail, pushes a local message, a \\Seen flag and a deletion back (RFC 9051 APPEND/STORE/
    EXPUNGE with UIDPLUS as mbsync uses them)."""
    _require("mbsync", "isync")
    pulled, deleted = f"mbsync-pull-{uuid.uuid4()}", f"mbsync-del-{uuid.uuid4()}"
    _deliver(server, pulled)
    _deliver(server, deleted)
    local = tmp_path / "mail"
    local.mkdir()
    rc = _mbsyncrc(server, tmp_path, local)
    _run(["mbsync", "-c", str(rc), "-a"])
    files = _local_files(local / "INBOX")
    pulled_file = next(path for text, path in files.items() if pulled in text)
    deleted_file = next(path for text, path in files.items() if deleted in text)
    # Locally: mark one seen, delete the other, write a new message into Archive.
    seen_name = pulled_file.name.split(":2,")[0] + ":2,S"
    pulled_file.rename(local / "INBOX" / "cur" / seen_name)
    deleted_file.unlink()
    pushed = f"mbsync-push-{uuid.uuid4()}"
    archive_new = local / "Archive" / "new"
    archive_new.mkdir(parents=True, exist_ok=True)
    (local / "Archive" / "cur").mkdir(exist_ok=True)
    (local / "Archive" / "tmp").mkdir(exist_ok=True)
    (archive_new / f"1700000000.{uuid.uuid4().hex}.local").write_bytes(
        f"From: me@example.test\r\nSubject: {pushed}\r\n\r\nwritten offline\r\n".encode()
    )
    _run(["mbsync", "-c", str(rc), "-a"])
    client = _imap(server)
    try:
        client.select("INBOX", readonly=True)
        uid = _uid_of(client, pulled)
        _, data = client.uid("FETCH", str(uid), "(FLAGS)")
        assert b"\\Seen" in data[0]
        _typ, data = client.uid("SEARCH", f'SUBJECT "{deleted}"')
        assert data[0] == b"", "the message deleted locally is gone on the server"
        client.select("Archive", readonly=True)
        assert _uid_of(client, pushed) > 0
    finally:
        client.logout()


# --- fetchmail and getmail6 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["POP3", "IMAP"])
def test_fetchmail_retrieves_with_starttls(server: DevServer, tmp_path: Path, protocol: str) -> None:
    _require("fetchmail", "fetchmail")
    marker = f"fetchmail-{protocol}-{uuid.uuid4()}"
    _deliver(server, marker)
    out = tmp_path / "delivered"
    port = server.pop3 if protocol == "POP3" else server.imap
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll {HOST} service {port} protocol {protocol} auth password\n"
        f'  user "{DEMO}" password "{DEMO_PASSWORD}" is "root" here\n'
        f"  sslproto 'tls1.2+' sslcertck sslcertfile '{server.cert}' sslcommonname 'localhost'\n"
        f"  keep fetchall\n"
        f"  mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    env = {**env_without_proxy(), "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    _run(["fetchmail", "--nodetach", "--nosyslog", "-f", str(rc)], env=env)
    assert marker in out.read_text(errors="replace")


@pytest.mark.parametrize("retriever", ["SimplePOP3SSLRetriever", "SimpleIMAPSSLRetriever"])
def test_getmail6_retrieves_into_a_maildir(server: DevServer, tmp_path: Path, retriever: str) -> None:
    _require("getmail", "getmail6")
    marker = f"getmail-{retriever}-{uuid.uuid4()}"
    _deliver(server, marker)
    out = tmp_path / "delivered"
    port = server.pop3s if "POP3" in retriever else server.imaps
    rc = tmp_path / "getmailrc"
    rc.write_text(
        f"""[retriever]
type = {retriever}
server = {HOST}
port = {port}
username = {DEMO}
password = {DEMO_PASSWORD}
ca_certs = {server.cert}

[destination]
# The tests run as root, where getmail refuses Maildir delivery: an external MDA allowed to run as root instead.
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat >> {out}")
allow_root_commands = true

[options]
read_all = true
delete = false
verbose = 0
"""
    )
    _run(["getmail", "--getmaildir", str(tmp_path), "--rcfile", str(rc)])
    assert marker in out.read_text(errors="replace")


# --- imapclient -------------------------------------------------------------------------------------------------------
def test_imapclient_library(server: DevServer) -> None:
    """A second IMAP implementation: IDLE-less session with ENVELOPE parsing, SEARCH, flags and MOVE."""
    from imapclient import IMAPClient

    marker = f"imapclient-{uuid.uuid4()}"
    _deliver(server, marker)
    with IMAPClient(HOST, port=server.imaps, ssl_context=server.client_tls_context(), timeout=10) as client:
        client.login(DEMO, DEMO_PASSWORD)
        assert b"MOVE" in client.capabilities()
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", marker])
        assert len(uids) == 1
        fetched = client.fetch(uids, ["ENVELOPE", "FLAGS", "RFC822.SIZE"])
        envelope = fetched[uids[0]][b"ENVELOPE"]
        assert envelope.subject.decode() == marker
        assert envelope.from_[0].mailbox == b"a" and envelope.from_[0].host == b"remote.test"
        client.add_flags(uids, [b"\\Flagged"])
        assert b"\\Flagged" in client.get_flags(uids)[uids[0]]
        client.move(uids, "Archive")
        assert client.search(["SUBJECT", marker]) == []
        folders = {name for _, _, name in client.list_folders()}
        assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= folders
