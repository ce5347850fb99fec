"""IMAP session engine on the selected mailbox: SELECT/EXAMINE, STORE, FETCH, COPY/MOVE, EXPUNGE, CLOSE/UNSELECT
(RFC 9051 §6.3.2-6.3.3, §6.4, RFC 7162 CONDSTORE, RFC 4315 UIDPLUS, RFC 6851 MOVE, RFC 3516 BINARY).

SEARCH, other sessions' changes and IDLE are in test_imap_session_sync.py; mailbox-level commands in
test_imap_session_mailboxes.py.
"""

from __future__ import annotations

import re

import pytest
from imap_session_harness import Client, World, message

FLAGS = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
PERMANENT = "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted"
MULTIPART = (
    b"From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n\r\npart one\r\n"
    b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
    b"--XX--\r\n"
)


def uidvalidity(client: Client) -> int:
    selected = client.session.selected
    assert selected is not None
    return selected.uidvalidity


async def selected(world: World, count: int, *, rev2: bool = False, command: str = "SELECT INBOX") -> Client:
    for number in range(1, count + 1):
        world.deliver(message(f"m{number}", f"body of message {number}\r\n"))
    client = await world.logged_in(rev2=rev2)
    reply = await client(command)
    assert reply.ok, reply.lines
    return client


# --- SELECT / EXAMINE (RFC 9051 §6.3.2, §6.3.3; RFC 3501 §6.3.1) ----------------------------------------------------
async def test_rfc3501_s6_3_1_select_response_set_rev1(world: World) -> None:
    world.deliver(message("one"))
    world.deliver(message("two"))
    client = await world.logged_in()
    reply = await client("SELECT INBOX")
    validity = uidvalidity(client)
    assert reply.lines == [
        FLAGS,
        PERMANENT,
        "* 2 EXISTS",
        "* 2 RECENT",
        "* OK [UNSEEN 1] First unseen",
        f"* OK [UIDVALIDITY {validity}] UIDs valid",
        "* OK [UIDNEXT 3] Predicted next UID",
        "* OK [HIGHESTMODSEQ 2] Highest",
        "a2 OK [READ-WRITE] SELECT completed",
    ]


async def test_rfc9051_s6_3_2_select_response_set_rev2_has_list_and_no_recent(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in(rev2=True)
    reply = await client("SELECT INBOX")
    validity = uidvalidity(client)
    assert reply.lines == [
        FLAGS,
        PERMANENT,
        "* 1 EXISTS",
        f"* OK [UIDVALIDITY {validity}] UIDs valid",
        "* OK [UIDNEXT 2] Predicted next UID",
        "* OK [HIGHESTMODSEQ 2] Highest",
        '* LIST () "/" INBOX',
        "a3 OK [READ-WRITE] SELECT completed",
    ]


async def test_rfc9051_s6_3_3_examine_is_read_only_with_empty_permanentflags(world: World) -> None:
    client = await world.logged_in()
    reply = await client("EXAMINE Sent")
    assert reply.lines[:4] == [FLAGS, "* OK [PERMANENTFLAGS ()] Read-only mailbox", "* 0 EXISTS", "* 0 RECENT"]
    assert reply.tagged == "a2 OK [READ-ONLY] EXAMINE completed"


async def test_rfc9051_s7_1_reselect_sends_closed_first(world: World) -> None:
    client = await selected(world, 1)
    reply = await client("EXAMINE INBOX")
    assert reply.lines[0] == "* OK [CLOSED] Previous mailbox closed"
    assert reply.lines[1] == FLAGS
    reply = await client("SELECT Nope")
    assert reply.lines == ["* OK [CLOSED] Previous mailbox closed", "a4 NO [NONEXISTENT] no mailbox 'Nope'"]
    assert (await client("FETCH 1 FLAGS")).lines == ["a5 BAD No mailbox selected"]


async def test_rfc9051_s6_3_2_recent_goes_to_the_first_session_only(world: World) -> None:
    """RFC 3501 §2.3.2 \\Recent: one session sees it; a later SELECT elsewhere does not."""
    first = await selected(world, 2)
    second = await world.logged_in()
    assert "* 0 RECENT" in (await second("SELECT INBOX")).lines
    assert (await first("FETCH 1 FLAGS")).lines[0] == "* 1 FETCH (FLAGS (\\Recent))"


async def test_rfc7162_s3_1_8_select_condstore_enables_modseq(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in()
    await client("SELECT INBOX (CONDSTORE)")
    reply = await client("STORE 1 +FLAGS (\\Flagged)")
    assert reply.lines == ["* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (3))", "a3 OK STORE completed"]


# --- STORE (RFC 9051 §6.4.6) ---------------------------------------------------------------------------------------
async def test_rfc9051_s6_4_6_store_add_remove_replace(world: World) -> None:
    client = await selected(world, 2)
    assert (await client("STORE 1 +FLAGS (\\Flagged \\Seen)")).lines == [
        "* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))",
        "a3 OK STORE completed",
    ]
    assert (await client("STORE 1 -FLAGS (\\Seen)")).lines == [
        "* 1 FETCH (FLAGS (\\Flagged \\Recent))",
        "a4 OK STORE completed",
    ]
    assert (await client("STORE 1:2 FLAGS (\\Answered)")).lines == [
        "* 1 FETCH (FLAGS (\\Answered \\Recent))",
        "* 2 FETCH (FLAGS (\\Answered \\Recent))",
        "a5 OK STORE completed",
    ]
    assert (await client("UID STORE 2 FLAGS ()")).lines == [
        "* 2 FETCH (FLAGS (\\Recent) UID 2)",
        "a6 OK STORE completed",
    ]


async def test_rfc9051_s6_4_6_store_silent_sends_no_fetch(world: World) -> None:
    client = await selected(world, 2)
    assert (await client("STORE 1:2 +FLAGS.SILENT (\\Seen)")).lines == ["a3 OK STORE completed"]
    assert (await client("FETCH 1:2 FLAGS")).lines == [
        "* 1 FETCH (FLAGS (\\Seen \\Recent))",
        "* 2 FETCH (FLAGS (\\Seen \\Recent))",
        "a4 OK FETCH completed",
    ]


async def test_rfc9051_s7_3_5_new_keyword_updates_flags_and_permanentflags(world: World) -> None:
    client = await selected(world, 1)
    reply = await client("STORE 1 +FLAGS.SILENT ($Forwarded)")
    assert reply.lines == [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)",
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] Flags permitted",
        "a3 OK STORE completed",
    ]


async def test_rfc9051_s2_3_2_storing_recent_or_unknown_system_flag_is_bad(world: World) -> None:
    client = await selected(world, 1)
    assert (await client("STORE 1 +FLAGS (\\Recent)")).lines == ["a3 BAD Invalid flag"]
    assert (await client("STORE 1 +FLAGS (\\Bogus)")).lines == ["a4 BAD Invalid flag"]


async def test_rfc9051_s6_3_3_store_on_examined_mailbox_is_no(world: World) -> None:
    client = await selected(world, 1, command="EXAMINE INBOX")
    assert (await client("STORE 1 +FLAGS (\\Seen)")).lines == ["a3 NO [READ-ONLY] Mailbox is read-only"]
    assert (await client("EXPUNGE")).lines == ["a4 NO [READ-ONLY] Mailbox is read-only"]
    assert (await client("MOVE 1 Trash")).lines == ["a5 NO [READ-ONLY] Mailbox is read-only"]


async def test_rfc9051_s9_store_beyond_exists_is_bad(world: World) -> None:
    client = await selected(world, 2)
    assert (await client("STORE 3 +FLAGS (\\Seen)")).lines == ["a3 BAD Invalid message sequence number"]
    assert (await client("STORE 0 +FLAGS (\\Seen)")).lines[-1].startswith("a4 BAD")
    assert (await client("UID STORE 3:9 +FLAGS (\\Seen)")).lines == ["a5 OK STORE completed"]


async def test_rfc7162_s3_1_3_unchangedsince_reports_modified(world: World) -> None:
    client = await selected(world, 3)
    await client("STORE 2 +FLAGS.SILENT (\\Seen)")  # message 2 now has modseq 3; the others 2
    reply = await client("STORE 1:3 (UNCHANGEDSINCE 2) +FLAGS (\\Flagged)")
    assert reply.lines == [
        "* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (4))",
        "* 3 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (4))",
        "a4 OK [MODIFIED 2] STORE completed",
    ]
    reply = await client("UID STORE 1:3 (UNCHANGEDSINCE 3) +FLAGS.SILENT (\\Answered)")
    assert reply.lines == ["* 2 FETCH (MODSEQ (5) UID 2)", "a5 OK [MODIFIED 1,3] STORE completed"]


async def test_rfc7162_s3_1_status_highestmodseq_enables_modseq_in_the_open_mailbox(world: World) -> None:
    """STATUS ... (HIGHESTMODSEQ) is a CONDSTORE enabling command: later FETCH responses carry MODSEQ."""
    client = await selected(world, 1)
    assert (await client("STATUS INBOX (HIGHESTMODSEQ)")).lines[0] == "* STATUS INBOX (HIGHESTMODSEQ 2)"
    assert (await client("STORE 1 +FLAGS (\\Flagged)")).lines == [
        "* 1 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (3))",
        "a4 OK STORE completed",
    ]


# --- FETCH (RFC 9051 §6.4.5) ---------------------------------------------------------------------------------------
async def test_rfc9051_s6_4_5_body_sets_seen_and_reports_flags(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in()
    await client("SELECT INBOX")
    body = message("one")
    reply = await client("FETCH 1 BODY[]")
    assert reply.raw == (
        b"* 1 FETCH (BODY[] {%d}\r\n%s FLAGS (\\Seen \\Recent))\r\na3 OK FETCH completed\r\n" % (len(body), body)
    )
    # Already \Seen: no second FLAGS item.
    assert (await client("FETCH 1 BODY[]")).raw.endswith(b"%s)\r\na4 OK FETCH completed\r\n" % body)


async def test_rfc9051_s6_4_5_body_peek_does_not_set_seen(world: World) -> None:
    client = await selected(world, 1)
    reply = await client("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert (
        reply.raw == b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: m1\r\n\r\n)\r\n"
        b"a3 OK FETCH completed\r\n"
    )
    assert (await client("FETCH 1 FLAGS")).lines[0] == "* 1 FETCH (FLAGS (\\Recent))"


async def test_rfc9051_s6_4_5_rfc822_sets_seen_rfc822_header_does_not(world: World) -> None:
    client = await selected(world, 2)
    reply = await client("FETCH 1 RFC822.HEADER")
    assert b"FLAGS" not in reply.raw
    reply = await client("FETCH 2 RFC822.TEXT")
    assert (
        reply.raw == b"* 2 FETCH (RFC822.TEXT {19}\r\nbody of message 2\r\n FLAGS (\\Seen \\Recent))\r\n"
        b"a4 OK FETCH completed\r\n"
    )


async def test_rfc9051_s6_4_5_body_on_examined_mailbox_does_not_set_seen(world: World) -> None:
    client = await selected(world, 1, command="EXAMINE INBOX")
    assert b"FLAGS" not in (await client("FETCH 1 BODY[TEXT]")).raw
    assert (await client("FETCH 1 FLAGS")).lines[0] == "* 1 FETCH (FLAGS ())"


async def test_rfc7162_s3_1_implicit_seen_reports_modseq_under_condstore(world: World) -> None:
    client = await selected(world, 1, command="SELECT INBOX (CONDSTORE)")
    reply = await client("FETCH 1 BODY[TEXT]")
    assert reply.raw == (
        b"* 1 FETCH (BODY[TEXT] {19}\r\nbody of message 1\r\n FLAGS (\\Seen \\Recent) MODSEQ (3))\r\n"
        b"a3 OK FETCH completed\r\n"
    )


async def test_rfc9051_s6_4_5_sections_partials_and_missing_parts(world: World) -> None:
    world.deliver(MULTIPART)
    client = await world.logged_in()
    await client("SELECT INBOX")
    reply = await client("FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[3] BODY.PEEK[TEXT]<2.4>)")
    assert reply.raw == (
        b"* 1 FETCH (BODY[1] {8}\r\npart one BODY[1.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n"
        b' BODY[3] "" BODY[TEXT]<2> {4}\r\nXX\r\n)\r\na3 OK FETCH completed\r\n'
    )
    # RFC 9051 §6.4.5: an origin beyond the end gives an empty string.
    reply = await client("FETCH 1 BODY.PEEK[]<5000.10>")
    assert reply.raw == b"* 1 FETCH (BODY[]<5000> {0}\r\n)\r\na4 OK FETCH completed\r\n"
    reply = await client("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (From Content-Type MIME-Version)]")
    assert reply.raw == (
        b"* 1 FETCH (BODY[HEADER.FIELDS.NOT (FROM CONTENT-TYPE MIME-VERSION)] {18}\r\nSubject: parts\r\n\r\n)\r\n"
        b"a5 OK FETCH completed\r\n"
    )


async def test_rfc3516_binary_decodes_and_sizes(world: World) -> None:
    world.deliver(MULTIPART)
    client = await world.logged_in()
    await client("SELECT INBOX")
    reply = await client("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[9])")
    assert reply.raw == (
        b"* 1 FETCH (BINARY[2] ~{3}\r\n\x00\x01\x02 BINARY.SIZE[2] 3 BINARY[9] NIL)\r\na3 OK FETCH completed\r\n"
    )
    assert (await client("FETCH 1 BINARY[1]")).raw == (
        b"* 1 FETCH (BINARY[1] {8}\r\npart one FLAGS (\\Seen \\Recent))\r\na4 OK FETCH completed\r\n"
    )


async def test_rfc9051_s6_4_5_attributes(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in()
    await client("SELECT INBOX")
    reply = await client("FETCH 1 (UID RFC822.SIZE INTERNALDATE FLAGS)")
    line = reply.lines[0]
    assert re.fullmatch(
        rf'\* 1 FETCH \(UID 1 RFC822.SIZE {len(message("one"))} INTERNALDATE "\d\d-\w\w\w-\d{{4}} \d\d:\d\d:\d\d '
        r'\+0000" FLAGS \(\\Recent\)\)',
        line,
    ), line
    reply = await client("FETCH 1 ENVELOPE")
    assert reply.lines[0].startswith('* 1 FETCH (ENVELOPE ("Fri, 27 Nov 2026 10:00:00 +0000" "one" ')


async def test_rfc9051_s9_fetch_beyond_exists_is_bad(world: World) -> None:
    client = await selected(world, 2)
    assert (await client("FETCH 3 FLAGS")).lines == ["a3 BAD Invalid message sequence number"]
    assert (await client("FETCH 1:5 FLAGS")).lines == ["a4 BAD Invalid message sequence number"]
    assert (await client("FETCH 2:* FLAGS")).lines == ["* 2 FETCH (FLAGS (\\Recent))", "a5 OK FETCH completed"]


async def test_rfc9051_s6_4_9_uid_fetch_of_missing_uids_is_ok_and_empty(world: World) -> None:
    client = await selected(world, 2)
    assert (await client("UID FETCH 5:9 FLAGS")).lines == ["a3 OK FETCH completed"]
    # "*" is the largest UID in use, so 5:* names UID 2 (RFC 9051 §6.4.9).
    assert (await client("UID FETCH 5:* FLAGS")).lines == [
        "* 2 FETCH (UID 2 FLAGS (\\Recent))",
        "a4 OK FETCH completed",
    ]


async def test_rfc7162_s3_1_4_changedsince(world: World) -> None:
    client = await selected(world, 3)
    await client("STORE 2 +FLAGS.SILENT (\\Seen)")
    assert (await client("FETCH 1:* (FLAGS) (CHANGEDSINCE 2)")).lines == [
        "* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (3))",
        "a4 OK FETCH completed",
    ]


# --- COPY / MOVE (RFC 9051 §6.4.7-6.4.8, RFC 4315 §3, RFC 6851) ------------------------------------------------------
async def test_rfc4315_s3_copy_reports_copyuid(world: World) -> None:
    client = await selected(world, 3)
    trash = (await client("STATUS Trash (UIDVALIDITY)")).lines[0].split()[-1].rstrip(")")
    assert (await client("COPY 1,3 Trash")).lines == [f"a4 OK [COPYUID {trash} 1,3 1:2] COPY completed"]
    assert (await client("UID COPY 2:3 Trash")).lines == [f"a5 OK [COPYUID {trash} 2:3 3:4] COPY completed"]
    assert (await client("STATUS Trash (MESSAGES)")).lines[0] == "* STATUS Trash (MESSAGES 4)"


async def test_rfc9051_s6_4_7_copy_to_missing_mailbox_is_trycreate(world: World) -> None:
    client = await selected(world, 1)
    assert (await client("COPY 1 Nope")).lines == ["a3 NO [TRYCREATE] No such mailbox"]
    assert (await client("COPY 2 Trash")).lines == ["a4 BAD Invalid message sequence number"]
    assert (await client("UID COPY 7 Trash")).lines == ["a5 OK COPY completed (no messages)"]


async def test_rfc6851_s4_3_move_sends_copyuid_before_expunges(world: World) -> None:
    client = await selected(world, 4)
    archive = (await client("STATUS Archive (UIDVALIDITY)")).lines[0].split()[-1].rstrip(")")
    assert (await client("MOVE 2:3 Archive")).lines == [
        f"* OK [COPYUID {archive} 2:3 1:2] Moved",
        "* 2 EXPUNGE",
        "* 2 EXPUNGE",
        "a4 OK MOVE completed",
    ]
    assert (await client("UID MOVE 4 Archive")).lines == [
        f"* OK [COPYUID {archive} 4 3] Moved",
        "* 2 EXPUNGE",
        "a5 OK MOVE completed",
    ]
    assert (await client("UID FETCH 1:* UID")).lines == ["* 1 FETCH (UID 1)", "a6 OK FETCH completed"]


# --- EXPUNGE, CLOSE, UNSELECT (RFC 9051 §6.4.1-6.4.3, RFC 4315 §2.1) -------------------------------------------------
async def test_rfc9051_s6_4_3_expunge_reports_each_in_order(world: World) -> None:
    client = await selected(world, 4)
    await client("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    assert (await client("EXPUNGE")).lines == ["* 2 EXPUNGE", "* 2 EXPUNGE", "a4 OK EXPUNGE completed"]
    assert (await client("FETCH 1:* UID")).lines == ["* 1 FETCH (UID 1)", "* 2 FETCH (UID 4)", "a5 OK FETCH completed"]


async def test_rfc4315_s2_1_uid_expunge_only_the_given_uids(world: World) -> None:
    client = await selected(world, 3)
    await client("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert (await client("UID EXPUNGE 2:3")).lines == ["* 2 EXPUNGE", "* 2 EXPUNGE", "a4 OK EXPUNGE completed"]
    assert (await client("UID FETCH 1:* FLAGS")).lines == [
        "* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))",
        "a5 OK FETCH completed",
    ]


async def test_rfc9051_s6_4_1_close_expunges_silently(world: World) -> None:
    client = await selected(world, 2)
    await client("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert (await client("CLOSE")).lines == ["a4 OK CLOSE completed"]
    assert (await client("STATUS INBOX (MESSAGES)")).lines[0] == "* STATUS INBOX (MESSAGES 1)"
    assert (await client("FETCH 1 FLAGS")).lines == ["a6 BAD No mailbox selected"]


async def test_rfc9051_s6_4_2_unselect_does_not_expunge(world: World) -> None:
    client = await selected(world, 2)
    await client("STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert (await client("UNSELECT")).lines == ["a4 OK UNSELECT completed"]
    assert (await client("STATUS INBOX (MESSAGES DELETED)")).lines[0] == "* STATUS INBOX (MESSAGES 2 DELETED 1)"


async def test_rfc9051_s6_4_1_close_of_examined_mailbox_keeps_deleted(world: World) -> None:
    client = await selected(world, 1)
    await client("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await client("EXAMINE INBOX")
    assert (await client("CLOSE")).lines == ["a5 OK CLOSE completed"]
    assert (await client("STATUS INBOX (MESSAGES)")).lines[0] == "* STATUS INBOX (MESSAGES 1)"


@pytest.mark.parametrize("verb", ["FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "EXPUNGE"])
async def test_rfc9051_s3_3_no_mailbox_after_close(world: World, verb: str) -> None:
    client = await selected(world, 1)
    await client("CLOSE")
    assert (await client(verb)).lines == ["a4 BAD No mailbox selected"]


async def test_rfc6851_s3_3_move_into_the_selected_mailbox(world: World) -> None:
    client = await selected(world, 2)
    validity = uidvalidity(client)
    assert (await client("MOVE 1 INBOX")).lines == [
        f"* OK [COPYUID {validity} 1 3] Moved",
        "* 1 EXPUNGE",
        "* 2 EXISTS",
        "* 2 RECENT",
        "a3 OK MOVE completed",
    ]
    assert (await client("COPY 1 INBOX")).lines == [
        "* 3 EXISTS",
        "* 3 RECENT",
        f"a4 OK [COPYUID {validity} 2 4] COPY completed",
    ]
