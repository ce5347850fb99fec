"""IMAP session engine: SEARCH (RFC 9051 §6.4.4, RFC 4731 ESEARCH, RFC 5182 SEARCHRES), changes by other
sessions and processes (RFC 9051 §7.5.1), new mail at NOOP and IDLE (RFC 2177)."""

from __future__ import annotations

import pytest
from imap_session_harness import ALICE, WAKE, Client, World, message


async def mailbox(world: World, *, rev2: bool = False) -> Client:
    """INBOX with: 1 flagged, 2 seen (body "second body"), 3 large (3000 x) and unseen."""
    world.deliver(message("one"))
    world.deliver(message("two", "second body\r\n"))
    world.deliver(message("three", "x" * 3000 + "\r\n", X_Mailer="Tester 1.0"))
    client = await world.logged_in(rev2=rev2)
    await client("SELECT INBOX")
    await client("STORE 1 +FLAGS.SILENT (\\Flagged)")
    await client("STORE 2 +FLAGS.SILENT (\\Seen)")
    return client


async def search(client: Client, criteria: str) -> str:
    reply = await client(f"SEARCH {criteria}")
    assert reply.ok, reply.lines
    assert len(reply.lines) == 2, reply.lines
    return reply.lines[0]


# --- SEARCH keys (RFC 9051 §6.4.4) --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", "* SEARCH 1 2 3"),
        ("FLAGGED", "* SEARCH 1"),
        ("UNFLAGGED", "* SEARCH 2 3"),
        ("SEEN", "* SEARCH 2"),
        ("UNSEEN", "* SEARCH 1 3"),
        ("KEYWORD $Junk", "* SEARCH"),
        ("RECENT", "* SEARCH 1 2 3"),
        ("NEW", "* SEARCH 1 3"),
        ("HEADER Subject two", "* SEARCH 2"),
        ("HEADER X-Mailer tester", "* SEARCH 3"),
        ("SUBJECT THR", "* SEARCH 3"),
        ("FROM someone@remote", "* SEARCH 1 2 3"),
        ("BODY second", "* SEARCH 2"),
        ("BODY remote.test", "* SEARCH"),
        ("TEXT remote.test", "* SEARCH 1 2 3"),
        ("LARGER 1000", "* SEARCH 3"),
        ("SMALLER 1000", "* SEARCH 1 2"),
        ("SENTON 27-Nov-2026", "* SEARCH 1 2 3"),
        ("SENTBEFORE 27-Nov-2026", "* SEARCH"),
        ("SENTSINCE 28-Nov-2026", "* SEARCH"),
        ("SINCE 1-Jan-2000", "* SEARCH 1 2 3"),
        ("BEFORE 1-Jan-2000", "* SEARCH"),
        ("UID 2:3", "* SEARCH 2 3"),
        ("2,3", "* SEARCH 2 3"),
        ("*", "* SEARCH 3"),
        ("OR FLAGGED SEEN", "* SEARCH 1 2"),
        ("NOT FLAGGED", "* SEARCH 2 3"),
        ("NOT OR FLAGGED SEEN", "* SEARCH 3"),
        ("(UNSEEN SMALLER 1000)", "* SEARCH 1"),
        ("CHARSET UTF-8 SUBJECT one", "* SEARCH 1"),
    ],
)
async def test_rfc9051_s6_4_4_search_keys(world: World, criteria: str, expected: str) -> None:
    client = await mailbox(world)
    assert await search(client, criteria) == expected


async def test_rfc9051_s6_4_4_uid_search_answers_uids(world: World) -> None:
    client = await mailbox(world)
    await client("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await client("EXPUNGE")
    assert (await client("UID SEARCH ALL")).lines[0] == "* SEARCH 2 3"
    assert (await client("SEARCH ALL")).lines[0] == "* SEARCH 1 2"


async def test_rfc9051_s6_4_4_unknown_charset_is_badcharset(world: World) -> None:
    client = await mailbox(world)
    assert (await client("SEARCH CHARSET KOI8-R ALL")).lines == [
        "a5 NO [BADCHARSET (UTF-8 US-ASCII)] Only UTF-8 and US-ASCII searches"
    ]


async def test_rfc7162_s3_1_5_search_modseq_reports_highest(world: World) -> None:
    client = await mailbox(world)
    assert await search(client, "MODSEQ 3") == "* SEARCH 1 2 (MODSEQ 4)"


# --- ESEARCH and SEARCHRES (RFC 4731, RFC 5182, RFC 9051 §6.4.4.1) --------------------------------------------------
async def test_rfc4731_s3_1_return_options(world: World) -> None:
    client = await mailbox(world)
    assert (await client("SEARCH RETURN (MIN MAX COUNT) ALL")).lines[0] == '* ESEARCH (TAG "a5") MIN 1 MAX 3 COUNT 3'
    assert (await client("SEARCH RETURN () UNSEEN")).lines[0] == '* ESEARCH (TAG "a6") ALL 1,3'
    assert (await client("UID SEARCH RETURN (COUNT) UNSEEN")).lines[0] == '* ESEARCH (TAG "a7") UID COUNT 2'
    # No match: only the tag (and COUNT 0 when asked for).
    assert (await client("SEARCH RETURN (MIN ALL) DRAFT")).lines[0] == '* ESEARCH (TAG "a8")'
    assert (await client("SEARCH RETURN (COUNT) DRAFT")).lines[0] == '* ESEARCH (TAG "a9") COUNT 0'


async def test_rfc9051_s6_3_1_rev2_search_answers_esearch(world: World) -> None:
    client = await mailbox(world, rev2=True)
    assert (await client("SEARCH UNSEEN")).lines == ['* ESEARCH (TAG "a6") ALL 1,3', "a6 OK SEARCH completed"]
    assert (await client("UID SEARCH 5:9")).lines == ['* ESEARCH (TAG "a7") UID', "a7 OK SEARCH completed"]


async def test_rfc5182_s2_save_then_dollar(world: World) -> None:
    client = await mailbox(world)
    assert (await client("SEARCH RETURN (SAVE) UNSEEN")).lines == ["a5 OK SEARCH completed"]
    assert (await client("FETCH $ (UID)")).lines == ["* 1 FETCH (UID 1)", "* 3 FETCH (UID 3)", "a6 OK FETCH completed"]
    assert (await client("SEARCH $ LARGER 1000")).lines[0] == "* SEARCH 3"
    assert (await client("SEARCH OR $ SEEN")).lines[0] == "* SEARCH 1 2 3"
    assert (await client("UID STORE $ +FLAGS.SILENT (\\Answered)")).lines == ["a9 OK STORE completed"]
    assert await search(client, "ANSWERED") == "* SEARCH 1 3"


async def test_rfc5182_s2_4_save_with_min_or_max_saves_only_those(world: World) -> None:
    client = await mailbox(world)
    assert (await client("SEARCH RETURN (SAVE MIN) ALL")).lines == [
        '* ESEARCH (TAG "a5") MIN 1',
        "a5 OK SEARCH completed",
    ]
    assert (await client("FETCH $ UID")).lines == ["* 1 FETCH (UID 1)", "a6 OK FETCH completed"]
    await client("SEARCH RETURN (SAVE MIN MAX) ALL")
    assert (await client("FETCH $ UID")).lines == ["* 1 FETCH (UID 1)", "* 3 FETCH (UID 3)", "a8 OK FETCH completed"]
    await client("SEARCH RETURN (SAVE MAX COUNT) ALL")  # with COUNT: everything that matched
    assert len((await client("FETCH $ UID")).lines) == 4


# --- other sessions' changes (RFC 9051 §7.5.1, §7.4.1) --------------------------------------------------------------
async def two_sessions(world: World, count: int) -> tuple[Client, Client]:
    for number in range(1, count + 1):
        world.deliver(message(f"m{number}"))
    first, second = await world.logged_in(), await world.logged_in()
    await first("SELECT INBOX")
    await second("SELECT INBOX")
    return first, second


async def test_rfc9051_s7_5_1_expunge_not_reported_during_fetch_store_search(world: World) -> None:
    first, second = await two_sessions(world, 4)
    await second("STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert (await second("EXPUNGE")).lines == ["* 2 EXPUNGE", "a4 OK EXPUNGE completed"]
    reply = await first("FETCH 1:* UID")
    assert "EXPUNGE" not in reply.raw.decode() and reply.ok
    # The numbers stay as the client knows them: message 4 is still number 4.
    assert (await first("FETCH 4 UID")).lines == ["* 4 FETCH (UID 4)", "a4 OK FETCH completed"]
    assert "EXPUNGE" not in (await first("STORE 3 +FLAGS (\\Seen)")).raw.decode()
    assert (await first("SEARCH ALL")).lines == ["* SEARCH 1 2 3 4", "a6 OK SEARCH completed"]
    assert (await first("NOOP")).lines == ["* 2 EXPUNGE", "a7 OK NOOP completed"]
    assert (await first("FETCH 1:* UID")).lines == [
        "* 1 FETCH (UID 1)",
        "* 2 FETCH (UID 3)",
        "* 3 FETCH (UID 4)",
        "a8 OK FETCH completed",
    ]


async def test_rfc9051_s7_5_1_uid_commands_may_report_expunges(world: World) -> None:
    first, second = await two_sessions(world, 2)
    await second("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await second("EXPUNGE")
    assert (await first("UID SEARCH ALL")).lines == ["* SEARCH 1 2", "* 1 EXPUNGE", "a3 OK SEARCH completed"]


async def test_rfc9051_s7_5_1_other_process_expunge_held_back_until_noop(world: World) -> None:
    first, _ = await two_sessions(world, 3)
    other = world.other_index()
    other.store_flags("INBOX", [1], "+", ["\\Deleted"])
    assert other.expunge("INBOX") == [1]
    other.append("INBOX", message("late"))
    reply = await first("FETCH 1:* FLAGS")
    # New mail may be announced at once; the expunge waits, so the count includes the expunged message.
    assert "EXPUNGE" not in reply.raw.decode()
    assert "* 4 EXISTS" in reply.lines
    assert (await first("NOOP")).lines == ["* 1 EXPUNGE", "a4 OK NOOP completed"]
    assert (await first("UID SEARCH ALL")).lines[0] == "* SEARCH 2 3 4"


async def test_rfc9051_s7_4_1_flag_changes_by_another_session_reach_noop(world: World) -> None:
    first, second = await two_sessions(world, 2)
    await second("STORE 2 +FLAGS.SILENT (\\Answered)")
    assert first.io.wakes >= 1  # the hub woke the other session watching INBOX
    assert (await first("NOOP")).lines == ["* 2 FETCH (FLAGS (\\Answered \\Recent) UID 2)", "a3 OK NOOP completed"]


async def test_rfc9051_s7_4_1_new_mail_is_exists_at_noop(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    assert (await client("NOOP")).lines == ["a3 OK NOOP completed"]
    world.deliver(message("fresh"))
    assert (await client("NOOP")).lines == ["* 1 EXISTS", "* 1 RECENT", "a4 OK NOOP completed"]
    world.other_index().append("INBOX", message("appended"))
    assert (await client("NOOP")).lines == ["* 2 EXISTS", "* 2 RECENT", "a5 OK NOOP completed"]


async def test_rfc9051_s7_3_1_rev2_new_mail_has_no_recent(world: World) -> None:
    client = await world.logged_in(rev2=True)
    await client("SELECT INBOX")
    world.deliver(message("fresh"))
    assert (await client("NOOP")).lines == ["* 1 EXISTS", "a4 OK NOOP completed"]


async def test_rfc9051_s7_1_selected_mailbox_deleted_elsewhere_ends_session(world: World) -> None:
    first, second = await world.logged_in(), await world.logged_in()
    await first("CREATE Work")
    await first("SELECT Work")
    await second("DELETE Work")
    assert (await first("NOOP")).lines[0] == "* BYE The selected mailbox no longer exists"
    assert first.session.finished


# --- IDLE (RFC 2177, RFC 9051 §6.3.13) ------------------------------------------------------------------------------
async def test_rfc2177_idle_done(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    client.io.script = [b"DONE"]
    assert (await client("IDLE")).lines == ["+ idling", "a3 OK IDLE terminated"]


async def test_rfc2177_idle_reports_new_mail_on_wake(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    other = world.other_index()
    client.io.script = [WAKE, lambda: other.append("INBOX", message("idle")), b"done"]
    assert (await client("IDLE")).lines == ["+ idling", "* 1 EXISTS", "* 1 RECENT", "a3 OK IDLE terminated"]


async def test_rfc2177_idle_reports_expunge_by_another_session(world: World) -> None:
    first, second = await two_sessions(world, 2)

    async def expunge_elsewhere() -> None:
        await second("STORE 1 +FLAGS.SILENT (\\Deleted)")
        await second("EXPUNGE")

    first.io.script = [expunge_elsewhere, b"DONE"]
    assert (await first("IDLE")).lines == ["+ idling", "* 1 EXPUNGE", "a3 OK IDLE terminated"]


async def test_rfc2177_idle_anything_but_done_is_bad(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    client.io.script = [b"NOOP"]
    assert (await client("IDLE")).lines == ["+ idling", "a3 BAD Expected DONE"]


async def test_rfc9051_s6_3_13_idle_in_authenticated_state(world: World) -> None:
    client = await world.logged_in(ALICE)
    client.io.script = [WAKE, b"DONE"]
    assert (await client("IDLE")).lines == ["+ idling", "a2 OK IDLE terminated"]


async def test_rfc2177_idle_connection_gone_ends_quietly(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    assert (await client("IDLE")).lines == ["+ idling"]


async def test_rfc9051_s7_1_5_idle_ends_after_bye_without_waiting_for_done(world: World) -> None:
    first, second = await world.logged_in(), await world.logged_in()
    await first("CREATE Work")
    await first("SELECT Work")

    async def delete_elsewhere() -> None:
        await second("DELETE Work")

    first.io.script = [delete_elsewhere, b"DONE"]
    assert (await first("IDLE")).lines == ["+ idling", "* BYE The selected mailbox no longer exists"]
    assert first.session.finished
    assert first.io.script == [b"DONE"]  # never read: the connection closes after BYE


async def test_rfc3501_s6_3_2_examine_does_not_claim_recent_at_noop(world: World) -> None:
    examiner = await world.logged_in()
    await examiner("EXAMINE INBOX")
    world.deliver(message("fresh"))
    assert (await examiner("NOOP")).lines[0] == "* 1 EXISTS"
    selector = await world.logged_in()
    assert "* 1 RECENT" in (await selector("SELECT INBOX")).lines
