"""IMAP session engine: greeting, CAPABILITY per state, LOGIN, AUTHENTICATE, ENABLE, ID, NAMESPACE, LOGOUT and
commands in the wrong state (RFC 9051 §3, §6.1-6.3, RFC 4959 SASL-IR, RFC 5161 ENABLE, RFC 2971 ID)."""

from __future__ import annotations

import pytest
from imap_session_harness import ALICE, ALICE_PW, World, plain

AUTHENTICATED_CAPS = (
    "IMAP4rev2 IMAP4rev1 LITERAL- ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN LIST-EXTENDED "
    "LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES QUOTA QUOTA=RES-STORAGE CONDSTORE BINARY "
    "STATUS=SIZE"
)


# --- CAPABILITY (RFC 9051 §6.1.1, §6.2.3) ---------------------------------------------------------------------
async def test_rfc9051_s6_2_3_cleartext_capability_has_logindisabled_and_starttls(world: World) -> None:
    client = world.client(tls_active=False, tls_available=True)
    reply = await client("CAPABILITY")
    assert reply.lines == [
        "* CAPABILITY IMAP4rev2 IMAP4rev1 SASL-IR LITERAL- ID ENABLE STARTTLS LOGINDISABLED",
        "a1 OK CAPABILITY completed",
    ]
    assert "AUTH=" not in reply.raw.decode()


async def test_rfc9051_s6_1_1_capability_after_tls_offers_auth_plain(world: World) -> None:
    client = world.client(tls_active=True)
    reply = await client("CAPABILITY")
    assert reply.untagged == ["* CAPABILITY IMAP4rev2 IMAP4rev1 SASL-IR LITERAL- ID ENABLE AUTH=PLAIN"]


async def test_rfc9051_s7_2_2_greeting_carries_the_capabilities(world: World) -> None:
    client = world.client(tls_active=True)
    assert client.session.greeting() == (
        b"* OK [CAPABILITY IMAP4rev2 IMAP4rev1 SASL-IR LITERAL- ID ENABLE AUTH=PLAIN] postkontor IMAP ready\r\n"
    )


async def test_rfc9051_s6_1_1_capability_when_authenticated(world: World) -> None:
    client = await world.logged_in()
    assert (await client("CAPABILITY")).untagged == [f"* CAPABILITY {AUTHENTICATED_CAPS}"]


async def test_rfc9051_s6_2_1_starttls_only_when_offered(world: World) -> None:
    client = world.client(tls_active=False, tls_available=True)
    reply = await client("STARTTLS")
    assert reply.lines == ["a1 OK Begin TLS negotiation now"]
    assert client.session.starttls_requested
    client.session.tls_started()
    assert (await client("STARTTLS")).lines == ["a2 BAD TLS is already active"]
    assert (await world.client(tls_active=False, tls_available=False)("STARTTLS")).lines == [
        "a1 BAD TLS is not available"
    ]


# --- LOGIN (RFC 9051 §6.2.3) ----------------------------------------------------------------------------------
async def test_rfc9051_s6_2_3_login_refused_before_tls(world: World) -> None:
    client = world.client(tls_active=False)
    reply = await client(f"LOGIN {ALICE} {ALICE_PW}")
    assert reply.lines == ["a1 NO [PRIVACYREQUIRED] Use STARTTLS first"]


async def test_rfc9051_s6_2_3_login_ok_reports_capabilities(world: World) -> None:
    client = world.client()
    reply = await client(f'LOGIN "{ALICE.upper()}" "{ALICE_PW}"')
    assert reply.lines == [f"a1 OK [CAPABILITY {AUTHENTICATED_CAPS}] LOGIN completed"]
    assert client.session.user == ALICE


async def test_rfc9051_s6_2_3_wrong_password_is_authenticationfailed(world: World) -> None:
    client = world.client()
    assert (await client(f"LOGIN {ALICE} wrong")).lines == ["a1 NO [AUTHENTICATIONFAILED] Invalid credentials"]
    assert (await client("LOGIN nobody@example.test x")).lines == ["a2 NO [AUTHENTICATIONFAILED] Invalid credentials"]
    assert (await client("SELECT INBOX")).lines == ["a3 BAD Log in first"]


async def test_rfc9051_s6_2_login_twice_is_bad(world: World) -> None:
    client = await world.logged_in()
    assert (await client(f"LOGIN {ALICE} {ALICE_PW}")).lines == ["a2 BAD Already authenticated"]
    assert (await client("AUTHENTICATE PLAIN")).lines == ["a3 BAD Already authenticated"]
    assert (await client("STARTTLS")).lines == ["a4 BAD Already authenticated"]


# --- AUTHENTICATE PLAIN (RFC 9051 §6.2.2, RFC 4959, RFC 4616) -----------------------------------------------------
async def test_rfc9051_s6_2_2_authenticate_plain_with_continuation(world: World) -> None:
    client = world.client()
    client.io.script = [plain().encode()]
    reply = await client("AUTHENTICATE PLAIN")
    assert reply.lines == ["+ ", f"a1 OK [CAPABILITY {AUTHENTICATED_CAPS}] AUTHENTICATE completed"]
    assert client.session.user == ALICE


async def test_rfc4959_s3_authenticate_plain_with_initial_response(world: World) -> None:
    client = world.client()
    reply = await client(f"AUTHENTICATE PLAIN {plain()}")
    assert reply.lines == [f"a1 OK [CAPABILITY {AUTHENTICATED_CAPS}] AUTHENTICATE completed"]


async def test_rfc9051_s6_2_2_cancel_with_star_is_bad(world: World) -> None:
    client = world.client()
    client.io.script = [b"*"]
    reply = await client("AUTHENTICATE PLAIN")
    assert reply.lines == ["+ ", "a1 BAD AUTHENTICATE failed: authentication cancelled by the client"]
    assert client.session.user is None


async def test_rfc9051_s6_2_2_invalid_base64_is_bad(world: World) -> None:
    client = world.client()
    client.io.script = [b"!!notbase64"]
    assert (await client("AUTHENTICATE PLAIN")).lines == [
        "+ ",
        "a1 BAD AUTHENTICATE failed: invalid base64 in client response",
    ]


async def test_rfc9051_s6_2_2_wrong_password_via_sasl_is_no(world: World) -> None:
    client = world.client()
    assert (await client(f"AUTHENTICATE PLAIN {plain(password='nope')}")).lines == [
        "a1 NO [AUTHENTICATIONFAILED] Invalid credentials"
    ]


async def test_rfc9051_s6_2_2_malformed_plain_message_is_no(world: World) -> None:
    """A message that decodes but is no PLAIN message: credentials rejected (NO), not a syntax error (BAD)."""
    client = world.client()
    reply = await client("AUTHENTICATE PLAIN =")  # RFC 4959 §3: "=" is an empty initial response
    assert reply.lines == ["a1 NO [AUTHENTICATIONFAILED] AUTHENTICATE failed: PLAIN needs exactly two NUL separators"]


async def test_rfc4616_s2_other_authzid_is_authorizationfailed(world: World) -> None:
    client = world.client()
    reply = await client(f"AUTHENTICATE PLAIN {plain(authzid='bob@example.test')}")
    assert reply.lines == ["a1 NO [AUTHORIZATIONFAILED] Acting as another user is not allowed"]


async def test_rfc9051_s6_2_2_unsupported_mechanism_and_no_tls(world: World) -> None:
    assert (await world.client()("AUTHENTICATE CRAM-MD5")).lines == ["a1 NO [CANNOT] Unsupported mechanism"]
    assert (await world.client(tls_active=False)(f"AUTHENTICATE PLAIN {plain()}")).lines == [
        "a1 NO [PRIVACYREQUIRED] Use STARTTLS first"
    ]


async def test_authenticate_client_gone_mid_exchange_sends_nothing_more(world: World) -> None:
    client = world.client()
    reply = await client("AUTHENTICATE PLAIN")  # the script is empty: the connection is gone
    assert reply.lines == ["+ "]
    assert client.session.user is None


# --- ENABLE (RFC 5161, RFC 9051 §6.3.1) ----------------------------------------------------------------------------
async def test_rfc5161_s3_1_enable_needs_authentication(world: World) -> None:
    assert (await world.client()("ENABLE IMAP4rev2")).lines == ["a1 BAD Log in first"]


async def test_rfc5161_s3_2_enable_reports_only_what_it_enabled(world: World) -> None:
    client = await world.logged_in()
    reply = await client("ENABLE IMAP4rev2 CONDSTORE UNKNOWN-EXT")
    assert reply.lines == ["* ENABLED IMAP4rev2 CONDSTORE", "a2 OK ENABLE completed"]
    assert (await client("ENABLE X-NOTHING")).lines == ["* ENABLED", "a3 OK ENABLE completed"]


async def test_rfc9051_s6_3_1_rev2_drops_lsub_and_check(world: World) -> None:
    client = await world.logged_in(rev2=True)
    assert (await client('LSUB "" *')).lines == ["a3 BAD LSUB is not part of IMAP4rev2"]
    await client("SELECT INBOX")
    assert (await client("CHECK")).lines == ["a5 BAD CHECK is not part of IMAP4rev2"]


async def test_rfc3501_s6_4_1_check_in_rev1(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    assert (await client("CHECK")).lines == ["a3 OK CHECK completed"]


# --- any state: NOOP, ID, LOGOUT; NAMESPACE ---------------------------------------------------------------------
async def test_rfc9051_s6_1_noop_and_id_in_any_state(world: World) -> None:
    client = world.client()
    assert (await client("NOOP")).lines == ["a1 OK NOOP completed"]
    assert (await client('ID ("name" "test-client" "version" "1")')).lines == [
        '* ID ("name" "postkontor")',
        "a2 OK ID completed",
    ]
    assert (await client("ID NIL")).lines == ['* ID ("name" "postkontor")', "a3 OK ID completed"]


async def test_rfc9051_s6_1_3_logout(world: World) -> None:
    client = await world.logged_in()
    assert (await client("LOGOUT")).lines == ["* BYE postkontor IMAP signing off", "a2 OK LOGOUT completed"]
    assert client.session.finished


async def test_rfc2342_namespace(world: World) -> None:
    client = await world.logged_in()
    assert (await client("NAMESPACE")).lines == ['* NAMESPACE (("" "/")) NIL NIL', "a2 OK NAMESPACE completed"]


# --- wrong state (RFC 9051 §3) ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        "SELECT INBOX",
        "EXAMINE INBOX",
        "CREATE x",
        'LIST "" *',
        "STATUS INBOX (MESSAGES)",
        "APPEND INBOX {1+}\r\nx",
        "IDLE",
        "NAMESPACE",
        "GETQUOTAROOT INBOX",
        "FETCH 1 FLAGS",
        "UID SEARCH ALL",
        "CLOSE",
    ],
)
async def test_rfc9051_s3_1_commands_before_login_are_bad(world: World, command: str) -> None:
    client = world.client()
    assert (await client(command)).lines[-1] == "a1 BAD Log in first"


@pytest.mark.parametrize(
    "command",
    [
        "FETCH 1 FLAGS",
        "UID FETCH 1 FLAGS",
        "STORE 1 +FLAGS (\\Seen)",
        "SEARCH ALL",
        "UID SEARCH ALL",
        "COPY 1 Trash",
        "MOVE 1 Trash",
        "EXPUNGE",
        "UID EXPUNGE 1",
        "CLOSE",
        "UNSELECT",
        "CHECK",
    ],
)
async def test_rfc9051_s3_2_selected_state_commands_without_a_mailbox_are_bad(world: World, command: str) -> None:
    client = await world.logged_in()
    assert (await client(command)).lines == ["a2 BAD No mailbox selected"]


async def test_rfc9051_s7_1_unknown_command_is_bad_with_its_tag(world: World) -> None:
    client = await world.logged_in()
    reply = await client("FROBNICATE")
    assert reply.lines == ["a2 BAD unknown command FROBNICATE"]
