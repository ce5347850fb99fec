"""SMTP AUTH abuse (RFC 4954, RFC 4616; SECURITY-CASES 17-23): malformed responses, cancellation, sequence
errors, the 12,288-octet response limit, no user enumeration by reply or timing, failure throttles per address
and per account (also across protocols), and bounded memory under 200 parallel password checks."""

from __future__ import annotations

import asyncio
import base64
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from adversarial.advsupport import (
    DEMO,
    DEMO_PASSWORD,
    DOMAIN,
    AdvServer,
    Wire,
    adv_server,
    fresh_source,
    rss_mib,
    tls_wire,
)

pytestmark = pytest.mark.timeout(90)
WORKERS = 2  # AdvServer's postkontor.toml
ARGON2_MIB = 19  # PasswordHasher's memory_cost, 19,456 KiB (auth/passwords.py)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _session(server: AdvServer, source: str | None = None) -> Wire:
    w = tls_wire(server, server.submissions, source or fresh_source())
    assert w.code() == 220
    w.command("EHLO client.test")
    return w


def _plain(server: AdvServer, user: str, password: str, source: str) -> tuple[int, list[str]]:
    with _session(server, source) as w:
        return w.command(f"AUTH PLAIN {_b64(chr(0) + user + chr(0) + password)}")


@pytest.mark.parametrize(
    "response",
    [
        "!!!notbase64",
        "Zm9v=",
        "Zm9v====",
        "=",
        "Zm9vYmFy\x01",
        "AGRlbW8=",
        _b64("\0\0"),
        _b64("a\0b\0c\0d"),
        _b64(f"other@{DOMAIN}\0{DEMO}\0{DEMO_PASSWORD}"),
        base64.b64encode(b"\0\xff\xfe\0\xc3\x28").decode(),
    ],
    ids=[
        "junk",
        "bad-pad",
        "extra-pad",
        "lone-pad",
        "control",
        "no-password",
        "empty-fields",
        "four-fields",
        "authzid-differs",
        "bad-utf8",
    ],
)
def test_malformed_plain_response_is_refused_cleanly(server: AdvServer, response: str) -> None:
    with _session(server) as w:
        code, text = w.command(f"AUTH PLAIN {response}")
        assert code in (501, 535), (code, text)
        assert w.command("NOOP")[0] == 250
        assert w.command(f"MAIL FROM:<{DEMO}>")[0] == 530, "not authenticated"


def test_malformed_continuation_and_star_cancel(server: AdvServer) -> None:
    """RFC 4954 §4: `*` cancels with 501; a non-base64 response is 501; the session goes on."""
    with _session(server) as w:
        assert w.command("AUTH LOGIN")[0] == 334
        assert w.command("*")[0] == 501
        assert w.command("AUTH PLAIN")[0] == 334
        assert w.command("*")[0] == 501
        assert w.command("AUTH LOGIN")[0] == 334
        assert w.command("%%%")[0] == 501
        assert w.command("AUTH LOGIN")[0] == 334
        assert w.command(_b64(DEMO))[0] == 334
        assert w.command("*")[0] == 501
        assert w.command("AUTH PLAIN")[0] == 334
        assert w.command(_b64(f"\0{DEMO}\0{DEMO_PASSWORD}"))[0] == 235


def test_auth_inside_transaction_and_twice_is_503(server: AdvServer) -> None:
    with _session(server) as w:
        assert w.command(f"AUTH PLAIN {_b64(chr(0) + DEMO + chr(0) + DEMO_PASSWORD)}")[0] == 235
        assert w.command(f"MAIL FROM:<{DEMO}>")[0] == 250
        assert w.command(f"AUTH PLAIN {_b64(chr(0) + DEMO + chr(0) + DEMO_PASSWORD)}")[0] == 503
        assert w.command("RSET")[0] == 250
        assert w.command("AUTH LOGIN")[0] == 503, "already authenticated"


def test_auth_response_12288_octets_accepted_12289_refused(server: AdvServer) -> None:
    """RFC 4954 §4: a server must take a 12,288-octet response line; one octet more is 500 5.5.6."""
    prefix = f"\0ghost-long@{DOMAIN}\0"
    password = "p" * (12288 * 3 // 4 - len(prefix))
    response = _b64(prefix + password)
    assert len(response) == 12288
    with _session(server) as w:
        assert w.command("AUTH PLAIN")[0] == 334
        code, text = w.command(response)
        assert code == 535, (code, text)
        assert w.command("AUTH PLAIN")[0] == 334
        code, text = w.command(response + "=")
        assert code == 500 and text[0].startswith("5.5.6"), (code, text)
        assert w.command("NOOP")[0] == 250, "in step after the over-long line"


def test_unknown_user_and_wrong_password_identical_reply_and_timing(server: AdvServer) -> None:
    """No user enumeration (RFC 4954 §9): same code, same text, similar time (argon2 runs for unknown users)."""
    for n in range(2):
        server.cli("user", "add", f"timing{n}@{DOMAIN}", stdin="the-right-one\n")
    times: dict[str, list[float]] = {"wrong": [], "unknown": []}
    replies: dict[str, set[tuple[int, tuple[str, ...]]]] = {"wrong": set(), "unknown": set()}
    for n in range(10):
        for kind in ("wrong", "unknown"):
            # Fresh addresses and at most five failures per account: the throttles must not answer instead.
            user = f"timing{n % 2}@{DOMAIN}" if kind == "wrong" else f"nobody{n}@{DOMAIN}"
            with _session(server) as w:
                started = time.perf_counter()
                code, text = w.command(f"AUTH PLAIN {_b64(chr(0) + user + chr(0) + 'guess-' + str(n))}")
                times[kind].append(time.perf_counter() - started)
            replies[kind].add((code, tuple(text)))
    assert replies["wrong"] == replies["unknown"] == {(535, ("5.7.8 Authentication credentials invalid",))}
    ratio = statistics.median(times["unknown"]) / statistics.median(times["wrong"])
    assert 0.5 < ratio < 2.0, (ratio, times)


def test_ip_throttle_blocks_the_attacker_across_protocols_only(server: AdvServer) -> None:
    """SECURITY-CASES 17: ten failures from one address; then even a right password from it is 454, IMAP LOGIN
    from it is refused too (one throttle for all protocols), and 127.0.0.2 still logs in."""
    attacker = fresh_source()
    codes = [_plain(server, f"spray{n}@{DOMAIN}", "password1", attacker)[0] for n in range(10)]
    assert codes == [535] * 10
    code, text = _plain(server, DEMO, DEMO_PASSWORD, attacker)
    assert code == 454 and text[0].startswith("4.7.0")
    # IMAP from the same address (imaplib cannot choose a source address: by hand).
    raw = socket.create_connection(("127.0.0.1", server.imaps), source_address=(attacker, 0), timeout=10)
    tls = server.client_tls_context().wrap_socket(raw, server_hostname="localhost")
    w = Wire.__new__(Wire)
    w.sock, w.buffer = tls, b""
    with w:
        while b"\r\n" not in w.buffer:
            w._fill()
        w.buffer = b""
        w.send(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
        while b"\r\n" not in w.buffer:
            assert w._fill()
        assert w.buffer.startswith(b"a NO"), w.buffer
    assert _plain(server, DEMO, DEMO_PASSWORD, "127.0.0.2")[0] == 235


def test_account_throttle_against_distributed_guessing(server: AdvServer) -> None:
    """SECURITY-CASES 18: one account attacked from twelve addresses, one guess each: the account is throttled
    from everywhere (also a fresh address with the right password), other accounts are not."""
    victim = f"distributed@{DOMAIN}"
    server.cli("user", "add", victim, stdin="right-password\n")
    codes = [_plain(server, victim, f"guess{n}", fresh_source())[0] for n in range(12)]
    assert codes[:10] == [535] * 10 and codes[10:] == [454, 454], codes
    assert _plain(server, victim, "right-password", fresh_source())[0] == 454
    assert _plain(server, DEMO, DEMO_PASSWORD, fresh_source())[0] == 235


async def _one_attempt(server: AdvServer, n: int, source: str, gate: asyncio.Event) -> int:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        server.submissions,
        ssl=server.client_tls_context(),
        server_hostname="localhost",
        local_addr=(source, 0),
    )
    try:
        await reader.readline()
        writer.write(b"EHLO flood.test\r\n")
        while (await reader.readline())[3:4] != b" ":
            pass
        await gate.wait()
        writer.write(f"AUTH PLAIN {_b64(chr(0) + f'flood{n}@{DOMAIN}' + chr(0) + 'x' * 64)}\r\n".encode())
        return int((await reader.readline())[:3])
    finally:
        writer.close()


def test_200_parallel_auth_attempts_keep_memory_bounded(tmp_path: Path) -> None:
    """SECURITY-CASES 23: argon2 needs 19 MiB per check; 200 at once must queue behind the bound
    (max_parallel_password_checks), not take 4 GiB. With the bound at 1 (the default thread pool would run six
    checks per worker), the server may grow by one check's memory per worker, plus slack for 200 TLS sessions. A
    legitimate login still works afterwards."""
    with adv_server(tmp_path, max_parallel_password_checks=1) as (server, _sink):
        assert _plain(server, DEMO, DEMO_PASSWORD, fresh_source())[0] == 235  # code paths warm before measuring
        before = rss_mib(server)
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mib(server))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()

        async def flood() -> list[int]:
            gate = asyncio.Event()
            tasks = [asyncio.create_task(_one_attempt(server, n, fresh_source(), gate)) for n in range(200)]
            await asyncio.sleep(0.5)
            gate.set()
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

        started = time.monotonic()
        try:
            codes = asyncio.run(flood())
        finally:
            done.set()
            sampler.join()
        assert codes == [535] * 200, sorted(set(codes))
        bound = WORKERS * ARGON2_MIB + 30
        assert peak - before < bound, f"RSS grew from {before:.0f} to {peak:.0f} MiB (bound {bound} MiB)"
        assert time.monotonic() - started < 60
        assert _plain(server, DEMO, DEMO_PASSWORD, fresh_source())[0] == 235
        assert server.alive(), server.log()[-3000:]
