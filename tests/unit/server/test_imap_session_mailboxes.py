"""IMAP session engine, mailbox-level commands: LIST (RFC 9051 §6.3.9, RFC 5258 LIST-EXTENDED, RFC 6154
SPECIAL-USE, RFC 5819 LIST-STATUS), LSUB (RFC 3501 §6.3.9), STATUS (§6.3.11), APPEND (§6.3.12, RFC 4315),
CREATE/DELETE/RENAME (§6.3.4-6.3.6), QUOTA (RFC 9208)."""

from __future__ import annotations

import pytest
from imap_session_harness import BOB, BOB_PW, BOB_QUOTA, Client, World, message

from postkontor.protocol.imap import commands as c

DEFAULT_LIST = [
    '* LIST (\\HasNoChildren) "/" INBOX',
    '* LIST (\\HasNoChildren \\Archive) "/" Archive',
    '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
    '* LIST (\\HasNoChildren \\Junk) "/" Junk',
    '* LIST (\\HasNoChildren \\Sent) "/" Sent',
    '* LIST (\\HasNoChildren \\Trash) "/" Trash',
]


async def with_tree(world: World) -> Client:
    client = await world.logged_in()
    assert (await client("CREATE Work/Projects/2026")).ok
    assert (await client("CREATE Work/Notes/")).ok  # RFC 9051 §6.3.4: the trailing separator is dropped
    return client


# --- LIST ------------------------------------------------------------------------------------------------------
async def test_rfc9051_s6_3_9_list_star_for_a_new_user(world: World) -> None:
    client = await world.logged_in()
    assert (await client('LIST "" *')).lines == [*DEFAULT_LIST, "a2 OK LIST completed"]


async def test_rfc9051_s6_3_9_empty_pattern_gives_the_separator(world: World) -> None:
    client = await world.logged_in()
    assert (await client('LIST "" ""')).lines == ['* LIST (\\Noselect) "/" ""', "a2 OK LIST completed"]


async def test_rfc9051_s6_3_9_percent_stops_at_the_separator(world: World) -> None:
    client = await with_tree(world)
    top = (await client('LIST "" %')).lines
    assert '* LIST (\\HasChildren) "/" Work' in top
    assert not any("Work/" in line for line in top)
    assert (await client('LIST "" Work/%')).lines == [
        '* LIST (\\HasNoChildren) "/" Work/Notes',
        '* LIST (\\HasChildren) "/" Work/Projects',
        "a5 OK LIST completed",
    ]
    assert (await client("LIST Work/ *")).lines == [
        '* LIST (\\HasNoChildren) "/" Work/Notes',
        '* LIST (\\HasChildren) "/" Work/Projects',
        '* LIST (\\HasNoChildren) "/" Work/Projects/2026',
        "a6 OK LIST completed",
    ]


async def test_rfc9051_s6_3_9_inbox_matches_without_case(world: World) -> None:
    client = await world.logged_in()
    assert (await client('LIST "" inbox')).lines == ['* LIST (\\HasNoChildren) "/" INBOX', "a2 OK LIST completed"]


async def test_rfc5258_s3_1_subscribed_selection(world: World) -> None:
    client = await with_tree(world)
    await client("SUBSCRIBE Work/Notes")
    await client("UNSUBSCRIBE Junk")
    reply = await client('LIST (SUBSCRIBED) "" *')
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" Work/Notes' in reply.lines
    assert '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" Sent' in reply.lines
    assert not any('"Junk"' in line or line.endswith(" Junk") for line in reply.lines)
    assert not any("Work/Projects" in line for line in reply.lines)


async def test_rfc5258_s3_2_return_subscribed_special_use_status(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in()
    await client("UNSUBSCRIBE Drafts")
    reply = await client('LIST "" % RETURN (SUBSCRIBED SPECIAL-USE STATUS (MESSAGES UNSEEN))')
    assert reply.lines == [
        '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        "* STATUS INBOX (MESSAGES 1 UNSEEN 1)",
        '* LIST (\\HasNoChildren \\Subscribed \\Archive) "/" Archive',
        "* STATUS Archive (MESSAGES 0 UNSEEN 0)",
        '* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
        "* STATUS Drafts (MESSAGES 0 UNSEEN 0)",
        '* LIST (\\HasNoChildren \\Subscribed \\Junk) "/" Junk',
        "* STATUS Junk (MESSAGES 0 UNSEEN 0)",
        '* LIST (\\HasNoChildren \\Subscribed \\Sent) "/" Sent',
        "* STATUS Sent (MESSAGES 0 UNSEEN 0)",
        '* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" Trash',
        "* STATUS Trash (MESSAGES 0 UNSEEN 0)",
        "a3 OK LIST completed",
    ]


async def test_rfc6154_s5_1_special_use_selection(world: World) -> None:
    client = await with_tree(world)
    assert (await client('LIST (SPECIAL-USE) "" *')).lines == [*DEFAULT_LIST[1:], "a4 OK LIST completed"]


async def test_rfc3501_s6_3_9_lsub_in_rev1(world: World) -> None:
    client = await with_tree(world)
    await client("SUBSCRIBE Work")
    await client("UNSUBSCRIBE Junk")
    assert (await client('LSUB "" *')).lines == [
        '* LSUB () "/" INBOX',
        '* LSUB () "/" Archive',
        '* LSUB () "/" Drafts',
        '* LSUB () "/" Sent',
        '* LSUB () "/" Trash',
        '* LSUB () "/" Work',
        "a6 OK LSUB completed",
    ]


async def test_rfc9051_s6_3_7_subscribe_missing_mailbox_is_no(world: World) -> None:
    client = await world.logged_in()
    assert (await client("SUBSCRIBE Nope")).lines == ["a2 NO [NONEXISTENT] no mailbox 'Nope'"]
    assert (await client("UNSUBSCRIBE Nope")).lines == ["a3 OK UNSUBSCRIBE completed"]


# --- STATUS ----------------------------------------------------------------------------------------------------
async def test_rfc9051_s6_3_11_status_items(world: World) -> None:
    world.deliver(message("one"))
    world.deliver(message("two"))
    client = await world.logged_in()
    await client("SELECT INBOX")
    await client("STORE 1 +FLAGS.SILENT (\\Seen \\Deleted)")
    await client("UNSELECT")
    size = len(message("one")) + len(message("two"))
    reply = await client("STATUS INBOX (MESSAGES UIDNEXT UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ)")
    assert reply.lines == [
        f"* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UNSEEN 1 DELETED 1 SIZE {size} RECENT 0 HIGHESTMODSEQ 3)",
        "a5 OK STATUS completed",
    ]
    validity = (await client("STATUS INBOX (UIDVALIDITY)")).lines[0]
    assert validity.startswith("* STATUS INBOX (UIDVALIDITY ") and validity.endswith(")")


async def test_rfc9051_s6_3_11_status_of_fresh_mail_counts_recent(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in()
    assert (await client("STATUS INBOX (MESSAGES RECENT)")).lines[0] == "* STATUS INBOX (MESSAGES 1 RECENT 1)"


async def test_rfc9051_s6_3_11_status_errors(world: World) -> None:
    client = await world.logged_in()
    assert (await client("STATUS Nope (MESSAGES)")).lines == ["a2 NO [NONEXISTENT] no mailbox 'Nope'"]
    assert (await client("STATUS INBOX (BOGUS)")).lines[-1].startswith("a3 BAD")


async def test_rfc9051_s6_3_11_session_rejects_items_the_parser_lets_through(world: World) -> None:
    client = await world.logged_in()
    await client.session.execute(c.Status("t1", "INBOX", ("MESSAGES", "X-ITEM")))
    assert client.io.out.endswith(b"t1 BAD Unknown STATUS item X-ITEM\r\n")


# --- APPEND ----------------------------------------------------------------------------------------------------
async def test_rfc4315_s3_append_with_flags_and_date_reports_appenduid(world: World) -> None:
    client = await world.logged_in()
    data = message("appended")
    reply = await client.send(
        b'p1 APPEND INBOX (\\Seen $Forwarded) "05-Jan-2024 10:11:12 +0100" {%d}\r\n' % len(data) + data + b"\r\n",
        "p1",
    )
    await client("SELECT INBOX")
    validity = client.session.selected.uidvalidity if client.session.selected else 0
    assert reply.lines == ["+ Ready for literal data", f"p1 OK [APPENDUID {validity} 1] APPEND completed"]
    assert (await client("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)")).lines[0] == (
        f'* 1 FETCH (FLAGS ($Forwarded \\Seen \\Recent) INTERNALDATE "05-Jan-2024 09:11:12 +0000" '
        f"RFC822.SIZE {len(data)})"
    )


async def test_rfc9051_s6_3_12_append_to_selected_mailbox_announces_exists(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT INBOX")
    reply = await client(b"APPEND INBOX {5+}\r\nhello")
    validity = client.session.selected.uidvalidity if client.session.selected else 0
    assert reply.lines == ["* 1 EXISTS", "* 1 RECENT", f"a3 OK [APPENDUID {validity} 1] APPEND completed"]


async def test_rfc9051_s6_3_12_append_to_missing_mailbox_is_trycreate(world: World) -> None:
    client = await world.logged_in()
    assert (await client(b"APPEND Nope {5+}\r\nhello")).lines == ["a2 NO [TRYCREATE] No such mailbox"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"APPEND INBOX (\\Recent) {5+}\r\nhello", "a2 BAD Invalid flag in APPEND"),
        (b"APPEND INBOX (\\Bogus) {5+}\r\nhello", "a2 BAD Invalid flag in APPEND"),
        (b"APPEND INBOX {0+}\r\n\r\n", "a2 NO [CANNOT] Empty message"),
    ],
)
async def test_rfc9051_s6_3_12_append_refusals(world: World, command: bytes, expected: str) -> None:
    client = await world.logged_in()
    assert (await client(command)).lines == [expected]


async def test_rfc9208_append_over_quota_is_overquota(world: World) -> None:
    client = await world.logged_in(BOB, BOB_PW)
    big = b"x" * (BOB_QUOTA + 1)
    client.framer = type(client.framer)(max_line=64 * 1024, max_literal=BOB_QUOTA * 2)
    reply = await client(b"APPEND INBOX {%d}\r\n" % len(big) + big)
    assert reply.lines == ["+ Ready for literal data", "a2 NO [OVERQUOTA] quota exceeded"]


# --- CREATE / DELETE / RENAME --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["INBOX", "inbox", "InBoX/"])
async def test_rfc9051_s6_3_4_create_inbox_is_alreadyexists(world: World, name: str) -> None:
    client = await world.logged_in()
    assert (await client(f"CREATE {name}")).lines == ["a2 NO [ALREADYEXISTS] INBOX always exists"]


async def test_rfc9051_s6_3_4_create_existing_is_alreadyexists(world: World) -> None:
    client = await world.logged_in()
    assert (await client("CREATE Sent")).lines == ["a2 NO [ALREADYEXISTS] mailbox 'Sent' already exists"]


async def test_rfc6154_s3_create_with_use(world: World) -> None:
    client = await world.logged_in()
    assert (await client("CREATE Outbox (USE (\\Sent))")).lines == ["a2 OK CREATE completed"]
    assert (await client('LIST "" Outbox')).lines[0] == '* LIST (\\HasNoChildren \\Sent) "/" Outbox'
    assert (await client("CREATE Two (USE (\\Sent \\Trash))")).lines == ["a4 NO [USEATTR] One special use per mailbox"]


async def test_rfc6154_s3_create_with_unknown_use_is_useattr(world: World) -> None:
    client = await world.logged_in()
    assert (await client("CREATE Box (USE (\\Bogus))")).lines == ["a2 NO [USEATTR] Unknown special use \\Bogus"]


async def test_rfc9051_s6_3_4_create_bad_names_are_no(world: World) -> None:
    client = await world.logged_in()
    assert (await client("CREATE a//b")).lines == ["a2 NO [CANNOT] empty hierarchy level in mailbox name"]
    assert (await client("CREATE Work/../x")).lines == ["a3 NO [CANNOT] mailbox name components cannot be . or .."]


async def test_rfc9051_s6_3_5_delete_the_selected_mailbox_deselects(world: World) -> None:
    client = await world.logged_in()
    await client("CREATE Work")
    await client("SELECT Work")
    assert (await client("DELETE Work")).lines == ["a4 OK DELETE completed"]
    assert (await client("NOOP")).lines == ["a5 OK NOOP completed"]
    assert (await client("FETCH 1 FLAGS")).lines == ["a6 BAD No mailbox selected"]
    assert (await client("DELETE INBOX")).lines == ["a7 NO [CANNOT] INBOX cannot be deleted"]


async def test_rfc9051_s6_3_6_rename_the_selected_mailbox_does_not_end_the_session(world: World) -> None:
    client = await world.logged_in()
    await client("CREATE Work/Sub")
    await client("SELECT Work/Sub")
    assert (await client("RENAME Work Job")).lines == ["a4 OK RENAME completed"]
    assert (await client("NOOP")).lines == ["a5 OK NOOP completed"]
    assert not client.session.finished
    assert (await client('LIST "" Job/*')).lines == ['* LIST (\\HasNoChildren) "/" Job/Sub', "a6 OK LIST completed"]


async def test_rfc9051_s6_3_6_rename_inbox_keeps_it_selected_and_empties_it(world: World) -> None:
    world.deliver(message("one"))
    client = await world.logged_in()
    await client("SELECT INBOX")
    assert (await client("RENAME INBOX Old")).lines == ["a3 OK RENAME completed"]
    assert (await client("NOOP")).lines == ["* 1 EXPUNGE", "a4 OK NOOP completed"]
    assert (await client("STATUS Old (MESSAGES)")).lines[0] == "* STATUS Old (MESSAGES 1)"


async def test_rfc9051_s6_3_6_failed_rename_keeps_the_selection(world: World) -> None:
    client = await world.logged_in()
    await client("SELECT Sent")
    assert (await client("RENAME Sent Drafts")).lines == ["a3 NO [ALREADYEXISTS] mailbox 'Drafts' already exists"]
    assert (await client("SEARCH ALL")).lines == ["* SEARCH", "a4 OK SEARCH completed"]


# --- QUOTA (RFC 9208) ----------------------------------------------------------------------------------------------
async def test_rfc9208_s4_3_getquotaroot_without_a_quota(world: World) -> None:
    client = await world.logged_in()
    assert (await client("GETQUOTAROOT INBOX")).lines == ["* QUOTAROOT INBOX", "a2 OK GETQUOTAROOT completed"]
    assert (await client('GETQUOTA ""')).lines == ["a3 NO [NONEXISTENT] No such quota root"]


async def test_rfc9208_s4_2_getquota_with_a_quota(world: World) -> None:
    client = await world.logged_in(BOB, BOB_PW)
    await client(b"APPEND INBOX {3000+}\r\n" + b"x" * 3000)
    limit = BOB_QUOTA // 1024
    assert (await client("GETQUOTAROOT INBOX")).lines == [
        '* QUOTAROOT INBOX ""',
        f'* QUOTA "" (STORAGE 3 {limit})',
        "a3 OK GETQUOTAROOT completed",
    ]
    assert (await client('GETQUOTA ""')).lines == [f'* QUOTA "" (STORAGE 3 {limit})', "a4 OK GETQUOTA completed"]
    assert (await client("GETQUOTA other")).lines == ["a5 NO [NONEXISTENT] No such quota root"]
    assert (await client("GETQUOTAROOT Nope")).lines == ["a6 NO [NONEXISTENT] No such mailbox"]
    assert (await client('SETQUOTA "" (STORAGE 1)')).lines == ["a7 NO [NOPERM] Quotas are set by the administrator"]


async def test_rfc5258_s3_1_subscribed_lists_deleted_mailbox_as_nonexistent(world: World) -> None:
    client = await world.logged_in()
    await client("CREATE Gone")
    await client("SUBSCRIBE Gone")
    await client("DELETE Gone")
    assert (await client('LIST (SUBSCRIBED) "" Gone')).lines == [
        '* LIST (\\NonExistent \\Subscribed) "/" Gone',
        "a5 OK LIST completed",
    ]
