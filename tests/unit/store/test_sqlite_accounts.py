"""The SQLite account store: validation, aliases and their resolution order, caching across connections."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.auth.passwords import PasswordHasher
from postkontor.store.accounts import AccountError, AccountStore, Alias, Mailbox, Resolution, User
from postkontor.store.maildir import MaildirStore
from postkontor.store.sqlite_accounts import (
    _RECHECK_AFTER,
    SQLiteAccountStore,
    normalize_address,
    normalize_domain,
    normalize_localpart,
    normalize_user_address,
)

HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _open(path: Path, **kwargs: object) -> SQLiteAccountStore:
    return SQLiteAccountStore(path, hasher=HASHER, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteAccountStore]:
    accounts = _open(tmp_path / "accounts.sqlite3")
    accounts.add_domain("example.test")
    accounts.add_domain("other.test")
    accounts.add_user("alice@example.test", "alice-pw")
    accounts.add_user("bob@example.test", "bob-pw", quota=1000)
    yield accounts
    accounts.close()


def mbox(local: str, domain: str = "example.test") -> Mailbox:
    return Mailbox(domain, local)


def test_implements_the_protocol(store: SQLiteAccountStore) -> None:
    accounts: AccountStore = store
    assert accounts.list_domains() == ["example.test", "other.test"]


# --- domains ------------------------------------------------------------------------------------------------
def test_domains_are_lower_cased_and_idna_encoded(tmp_path: Path) -> None:
    with _open(tmp_path / "a.db") as accounts:
        accounts.add_domain("Mail.EXAMPLE.test.")
        accounts.add_domain("Bücher.test")
        assert accounts.list_domains() == ["mail.example.test", "xn--bcher-kva.test"]
        assert accounts.is_local_domain("MAIL.example.test")
        assert accounts.is_local_domain("bücher.test")
        assert accounts.is_local_domain("XN--BCHER-KVA.test")
        assert not accounts.is_local_domain("example.test")
        assert not accounts.is_local_domain("not a domain")
        with pytest.raises(AccountError, match="already exists"):
            accounts.add_domain("xn--bcher-kva.TEST")


@pytest.mark.parametrize(
    "bad",
    ["", ".", "a..b", ".a", "-a.test", "a-.test", "a_b.test", "a b.test", "a/b.test", "1.2.3.4",
     "ab--cd.test", "xn--zz.test", "a" * 64 + ".test", ".".join(["a" * 63] * 4) + ".test", "[1.2.3.4]",
     "a@b.test", "\ud800.test", "a\x00.test"],
)
def test_bad_domains_are_refused(store: SQLiteAccountStore, bad: str) -> None:
    with pytest.raises(AccountError, match="domain"):
        store.add_domain(bad)


def test_remove_domain_refuses_while_in_use(store: SQLiteAccountStore) -> None:
    with pytest.raises(AccountError, match=r"still has 2 user\(s\) and 0 alias"):
        store.remove_domain("example.test")
    store.add_alias("@other.test", ["alice@example.test"])
    with pytest.raises(AccountError, match=r"0 user\(s\) and 1 alias"):
        store.remove_domain("other.test")
    store.remove_alias("@other.test")
    store.remove_domain("Other.Test")
    assert store.list_domains() == ["example.test"]
    with pytest.raises(AccountError, match="no such domain"):
        store.remove_domain("other.test")


# --- users --------------------------------------------------------------------------------------------------
def test_users(store: SQLiteAccountStore) -> None:
    store.add_user("Carol.Smith@EXAMPLE.test", "pw", quota=5)
    assert store.get_user("carol.smith@example.test") == User("carol.smith@example.test", 5)
    assert store.get_user("CAROL.SMITH@example.TEST") == User("carol.smith@example.test", 5)
    assert store.get_user("nobody@example.test") is None
    assert store.get_user("garbage") is None
    assert [u.address for u in store.list_users()] == [
        "alice@example.test", "bob@example.test", "carol.smith@example.test"
    ]
    assert store.list_users("other.test") == []
    store.set_quota("carol.smith@example.test", 0)
    assert store.get_user("carol.smith@example.test") == User("carol.smith@example.test", 0)
    store.remove_user("Carol.Smith@example.test")
    assert store.get_user("carol.smith@example.test") is None
    with pytest.raises(AccountError, match="no such user"):
        store.remove_user("carol.smith@example.test")
    with pytest.raises(AccountError, match="no such user"):
        store.set_quota("carol.smith@example.test", 1)
    with pytest.raises(AccountError, match="no such user"):
        store.set_password("carol.smith@example.test", "x")


def test_user_needs_local_domain(store: SQLiteAccountStore) -> None:
    with pytest.raises(AccountError) as info:
        store.add_user("x@remote.test", "pw")
    assert str(info.value) == (
        "domain remote.test is not a local domain; add it with `postkontor domain add remote.test`"
    )


def test_duplicate_users_are_refused_case_insensitively(store: SQLiteAccountStore) -> None:
    with pytest.raises(AccountError, match="already exists"):
        store.add_user("ALICE@Example.Test", "pw")


def test_passwords_and_quotas_are_checked(store: SQLiteAccountStore) -> None:
    with pytest.raises(AccountError, match="password"):
        store.add_user("carol@example.test", "")
    with pytest.raises(AccountError, match="password"):
        store.set_password("alice@example.test", "")
    with pytest.raises(AccountError, match="quota"):
        store.add_user("carol@example.test", "pw", quota=-1)
    with pytest.raises(AccountError, match="quota"):
        store.set_quota("alice@example.test", -5)
    assert store.get_user("carol@example.test") is None


@pytest.mark.parametrize(
    "local",
    ["", ".alice", "alice.", "a..b", "a/b", "a\x00b", "a+b", "a b", "a@b", "a:b", "a\\b", "ä" * 33, "x" * 65,
     "\u0301abc", "a\u200bb", "a\nb", '"quoted"'],
)
def test_bad_user_local_parts_are_refused(store: SQLiteAccountStore, local: str) -> None:
    with pytest.raises(AccountError):
        store.add_user(f"{local}@example.test", "pw")
    assert len(store.list_users()) == 2


@pytest.mark.parametrize(
    ("given", "stored"),
    [("Jörg", "jörg"), ("ДМИТРИЙ", "дмитрий"), ("first.last", "first.last"), ("a_b-c", "a_b-c"),
     ("user2024", "user2024"), ("नमस्ते", "नमस्ते"), ("x" * 64, "x" * 64), ("e\u0301", "\u00e9")],
)
def test_unicode_local_parts(store: SQLiteAccountStore, given: str, stored: str) -> None:
    store.add_user(f"{given}@example.test", "pw")
    assert store.get_user(f"{stored}@example.test") == User(f"{stored}@example.test", 0)


def test_password_verification(store: SQLiteAccountStore) -> None:
    assert store.verify_password("alice@example.test", "alice-pw")
    assert store.verify_password("ALICE@example.test", "alice-pw")
    assert not store.verify_password("alice@example.test", "bob-pw")
    assert not store.verify_password("nobody@example.test", "alice-pw")
    assert not store.verify_password("not an address", "alice-pw")
    stored = store.password_hash("alice@example.test")
    assert stored is not None and stored.startswith("$argon2id$")
    assert store.password_hash("nobody@example.test") is None
    store.set_password("alice@example.test", "new-pw")
    assert store.verify_password("alice@example.test", "new-pw")
    assert not store.verify_password("alice@example.test", "alice-pw")


# --- aliases ------------------------------------------------------------------------------------------------
def test_alias_management(store: SQLiteAccountStore) -> None:
    store.add_alias("Info@Example.test", ["alice@example.test", "Ext.User@Remote.TEST"])
    store.add_alias("info@example.test", ["bob@example.test", "ALICE@example.test"])  # appends, no duplicate
    store.add_alias("@other.test", ["bob@example.test"])
    assert store.list_aliases() == [
        Alias("info@example.test", ("alice@example.test", "Ext.User@remote.test", "bob@example.test")),
        Alias("@other.test", ("bob@example.test",)),
    ]
    assert store.list_aliases("other.test") == [Alias("@other.test", ("bob@example.test",))]
    store.remove_alias("info@example.test", "Alice@Example.Test")
    assert store.list_aliases("example.test")[0].targets == ("Ext.User@remote.test", "bob@example.test")
    with pytest.raises(AccountError, match="has no target"):
        store.remove_alias("info@example.test", "alice@example.test")
    store.remove_alias("INFO@example.test")
    with pytest.raises(AccountError, match="no such alias"):
        store.remove_alias("info@example.test")
    with pytest.raises(AccountError, match="no such alias"):
        store.remove_alias("info@example.test", "bob@example.test")


@pytest.mark.parametrize(
    ("source", "targets", "message"),
    [
        ("x@remote.test", ["alice@example.test"], "not a local domain"),
        ("@remote.test", ["alice@example.test"], "not a local domain"),
        ("x@example.test", [], "at least one target"),
        ("x@example.test", ["@example.test"], "full address"),
        ("x@example.test", ["no-at-sign"], "local@domain"),
        ("x@example.test", ["a b@remote.test"], "not allowed"),
        ("x@example.test", ["a..b@remote.test"], "'.'"),
        ("x@example.test", ["a@bad_domain.test"], "domain"),
        ("x y@example.test", ["alice@example.test"], "not allowed"),
    ],
)
def test_bad_aliases_are_refused(
    store: SQLiteAccountStore, source: str, targets: list[str], message: str
) -> None:
    with pytest.raises(AccountError, match=message):
        store.add_alias(source, targets)
    assert store.list_aliases() == []


# --- resolution ---------------------------------------------------------------------------------------------
def test_user_resolves_to_mailbox(store: SQLiteAccountStore) -> None:
    assert store.resolve("alice@example.test") == Resolution(mailboxes=(mbox("alice"),))
    assert store.resolve("ALICE@Example.TEST") == Resolution(mailboxes=(mbox("alice"),))


def test_unknown_resolves_to_nothing(store: SQLiteAccountStore) -> None:
    for address in ["nobody@example.test", "alice@remote.test", "alice", "@example.test", "", "a@b@"]:
        result = store.resolve(address)
        assert result == Resolution() and not result.exists, address


def test_alias_wins_over_user(store: SQLiteAccountStore) -> None:
    store.add_alias("alice@example.test", ["bob@example.test"])
    assert store.resolve("alice@example.test") == Resolution(mailboxes=(mbox("bob"),))


def test_alias_listing_itself_keeps_a_copy(store: SQLiteAccountStore) -> None:
    store.add_alias("alice@example.test", ["alice@example.test", "fwd@remote.test"])
    expected = Resolution(mailboxes=(mbox("alice"),), remote=("fwd@remote.test",))
    assert store.resolve("alice@example.test") == expected
    # Without a user of that name the self-reference delivers nowhere (and is no loop).
    store.add_alias("ghost@example.test", ["ghost@example.test", "bob@example.test"])
    assert store.resolve("ghost@example.test") == Resolution(mailboxes=(mbox("bob"),))


def test_subaddressing(store: SQLiteAccountStore) -> None:
    assert store.resolve("alice+lists@example.test") == Resolution(mailboxes=(mbox("alice"),))
    assert store.resolve("Alice+Lists+More@example.test") == Resolution(mailboxes=(mbox("alice"),))
    store.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
    assert store.resolve("team+x@example.test").mailboxes == (mbox("alice"), mbox("bob"))
    store.add_alias("alice+special@example.test", ["bob@example.test"])  # the exact alias wins
    assert store.resolve("alice+special@example.test") == Resolution(mailboxes=(mbox("bob"),))
    assert not store.resolve("+tag@example.test").exists
    assert not store.resolve("nobody+tag@example.test").exists


def test_subaddress_separator_is_configurable(tmp_path: Path) -> None:
    with _open(tmp_path / "a.db", subaddress_separator="-") as accounts:
        accounts.add_domain("example.test")
        accounts.add_user("alice@example.test", "pw")
        with pytest.raises(AccountError, match="sub-address separator"):
            accounts.add_user("mary-jane@example.test", "pw")
        assert accounts.resolve("alice-tag@example.test").mailboxes == (mbox("alice"),)
        assert not accounts.resolve("alice+tag@example.test").exists
    with _open(tmp_path / "a.db", subaddress_separator="") as accounts:
        accounts.add_user("mary-jane@example.test", "pw")
        assert not accounts.resolve("alice-tag@example.test").exists


def test_catch_all(store: SQLiteAccountStore) -> None:
    store.add_alias("@example.test", ["bob@example.test"])
    assert store.resolve("anything@example.test") == Resolution(mailboxes=(mbox("bob"),))
    assert store.resolve("alice@example.test") == Resolution(mailboxes=(mbox("alice"),))  # users first
    # ... then the sub-address base.
    assert store.resolve("alice+tag@example.test") == Resolution(mailboxes=(mbox("alice"),))
    assert not store.resolve("anything@other.test").exists


def test_remote_forwards_and_nesting(store: SQLiteAccountStore) -> None:
    store.add_alias("all@example.test", ["staff@example.test", "Boss@Remote.test", "alice@example.test"])
    store.add_alias("staff@example.test", ["alice@example.test", "bob+x@example.test", "gone@example.test"])
    result = store.resolve("all@example.test")
    assert result == Resolution(mailboxes=(mbox("alice"), mbox("bob")), remote=("Boss@remote.test",))


def test_forward_into_another_local_domain(store: SQLiteAccountStore) -> None:
    store.add_user("carol@other.test", "pw")
    store.add_alias("carol@example.test", ["carol@other.test"])
    store.add_alias("@other.test", ["carol@other.test"])
    assert store.resolve("carol@example.test").mailboxes == (mbox("carol", "other.test"),)
    assert store.resolve("zzz@other.test").mailboxes == (mbox("carol", "other.test"),)


def test_forward_kept_case_until_its_domain_became_local(store: SQLiteAccountStore) -> None:
    store.add_alias("fwd@example.test", ["Dave@later.test"])
    assert store.resolve("fwd@example.test").remote == ("Dave@later.test",)
    store.add_domain("later.test")
    store.add_user("dave@later.test", "pw")
    assert store.resolve("fwd@example.test") == Resolution(mailboxes=(mbox("dave", "later.test"),))


def test_loop_is_detected(store: SQLiteAccountStore) -> None:
    store.add_alias("a@example.test", ["b@example.test"])
    store.add_alias("b@example.test", ["a@example.test", "alice@example.test"])
    result = store.resolve("a@example.test")
    assert result.loop
    assert store.resolve("b@example.test").loop


def test_catch_all_to_nowhere_is_a_loop_not_a_hang(store: SQLiteAccountStore) -> None:
    store.add_alias("@other.test", ["nobody@other.test"])
    assert store.resolve("x@other.test").loop


def test_diamond_is_no_loop(store: SQLiteAccountStore) -> None:
    store.add_alias("top@example.test", ["left@example.test", "right@example.test"])
    store.add_alias("left@example.test", ["alice@example.test"])
    store.add_alias("right@example.test", ["alice@example.test", "bob@example.test"])
    assert store.resolve("top@example.test") == Resolution(mailboxes=(mbox("alice"), mbox("bob")))


def test_exponential_alias_graph_is_cut_off(store: SQLiteAccountStore) -> None:
    # Every level lists all four names of the next one: 4 ** 8 paths to alice without an expansion budget
    # (Postfix bounds this with virtual_alias_expansion_limit).
    names = "abcd"
    for level in range(8):
        following = [f"l{level + 1}{n}@example.test" for n in names] if level < 7 else ["alice@example.test"]
        for name in names:
            store.add_alias(f"l{level}{name}@example.test", following)
    assert store.resolve("l6a@example.test") == Resolution(mailboxes=(mbox("alice"),))
    started = time.monotonic()
    assert store.resolve("l0a@example.test").loop
    assert time.monotonic() - started < 5


def test_depth_limit(tmp_path: Path) -> None:
    with _open(tmp_path / "a.db", max_alias_depth=3) as accounts:
        accounts.add_domain("example.test")
        accounts.add_user("end@example.test", "pw")
        chain = ["a1", "a2", "a3", "a4"]
        for source, target in zip(chain, [*chain[1:], "end"], strict=True):
            accounts.add_alias(f"{source}@example.test", [f"{target}@example.test"])
        assert accounts.resolve("a2@example.test") == Resolution(mailboxes=(mbox("end"),))  # 3 hops
        assert accounts.resolve("a1@example.test").loop  # 4 hops
    with pytest.raises(ValueError):
        _open(tmp_path / "b.db", max_alias_depth=0)


def test_idna_resolution(store: SQLiteAccountStore) -> None:
    store.add_domain("bücher.test")
    store.add_user("jörg@bücher.test", "pw")
    store.add_alias("shop@example.test", ["Jörg@BÜCHER.test", "kunde@grüße.test"])
    expected = Mailbox("xn--bcher-kva.test", "jörg")
    assert store.resolve("JÖRG@xn--bcher-kva.test").mailboxes == (expected,)
    assert store.resolve("jörg@Bücher.test").mailboxes == (expected,)
    # The stdlib codec is IDNA 2003 (RFC 3490): nameprep maps "ß" to "ss", like server.session.ascii_domain.
    assert store.resolve("shop@example.test") == Resolution(
        mailboxes=(expected,), remote=("kunde@xn--grsse-lva.test",)
    )


def test_addresses_of(store: SQLiteAccountStore) -> None:
    store.add_alias("info@example.test", ["alice@example.test", "bob@example.test"])
    store.add_alias("sales@other.test", ["ALICE@example.test"])
    store.add_alias("@other.test", ["alice@example.test"])
    store.add_alias("nested@example.test", ["info@example.test"])
    owned = {"alice@example.test", "info@example.test", "sales@other.test"}
    assert store.addresses_of("Alice@Example.test") == owned
    assert store.addresses_of("bob@example.test") == {"bob@example.test", "info@example.test"}
    assert store.addresses_of("nobody@example.test") == frozenset()


# --- persistence, caching, threads --------------------------------------------------------------------------
def test_schema_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "data" / "accounts.sqlite3"
    _open(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        conn.execute("PRAGMA user_version = 7")
    finally:
        conn.close()
    with pytest.raises(AccountError, match="version 7"):
        _open(path)


def test_data_survives_reopen(tmp_path: Path) -> None:
    with _open(tmp_path / "a.db") as accounts:
        accounts.add_domain("example.test")
        accounts.add_user("alice@example.test", "pw", quota=9)
        accounts.add_alias("x@example.test", ["alice@example.test"])
    with _open(tmp_path / "a.db") as accounts:
        assert accounts.get_user("alice@example.test") == User("alice@example.test", 9)
        assert accounts.verify_password("alice@example.test", "pw")
        assert accounts.resolve("x@example.test").mailboxes == (mbox("alice"),)


def test_changes_by_another_connection_are_seen(store: SQLiteAccountStore, tmp_path: Path) -> None:
    # Warm the caches, including negative answers.
    assert not store.resolve("carol@example.test").exists
    assert not store.is_local_domain("new.test")
    assert store.resolve("alice@example.test").mailboxes == (mbox("alice"),)
    with _open(tmp_path / "accounts.sqlite3") as cli:  # e.g. `postkontor user add` while the server runs
        cli.add_user("carol@example.test", "pw")
        cli.add_domain("new.test")
        cli.add_alias("alice@example.test", ["bob@example.test"])
    time.sleep(_RECHECK_AFTER * 2)
    assert store.resolve("carol@example.test").mailboxes == (mbox("carol"),)
    assert store.is_local_domain("new.test")
    assert store.resolve("alice@example.test").mailboxes == (mbox("bob"),)


def test_own_changes_invalidate_the_cache(store: SQLiteAccountStore) -> None:
    assert not store.resolve("carol@example.test").exists
    assert not store.is_local_domain("new.test")
    store.add_user("carol@example.test", "pw")
    store.add_domain("new.test")
    assert store.resolve("carol@example.test").exists
    assert store.is_local_domain("new.test")
    store.remove_user("carol@example.test")
    assert not store.resolve("carol@example.test").exists


def test_threads_share_one_store(store: SQLiteAccountStore) -> None:
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(200):
                assert store.resolve("alice@example.test").mailboxes == (mbox("alice"),)
                assert store.is_local_domain("example.test")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for n in range(20):
        store.add_alias(f"list{n}@example.test", ["alice@example.test"])
    for thread in threads:
        thread.join()
    assert errors == []


# --- properties ---------------------------------------------------------------------------------------------
@given(st.text(max_size=80))
@settings(max_examples=500, deadline=None)
def test_local_part_validation_is_total_and_path_safe(local: str) -> None:
    try:
        folded = normalize_localpart(local)
    except AccountError:
        return
    assert folded and not folded.startswith(".") and ".." not in folded
    assert "/" not in folded and "\x00" not in folded and "+" not in folded
    assert len(folded.encode("utf-8")) <= 64
    assert normalize_localpart(folded) == folded
    MaildirStore(Path("/nonexistent"), "h").path_for(Mailbox("example.test", folded))


@given(st.text(max_size=80), st.sampled_from(["example.test", "Bücher.test", "", "bad domain"]))
@settings(max_examples=500, deadline=None)
def test_address_validation_is_total(local: str, domain: str) -> None:
    for check in (normalize_user_address, normalize_address):
        try:
            check(f"{local}@{domain}")
        except AccountError:
            pass


@given(st.text(max_size=300))
@settings(max_examples=500, deadline=None)
def test_domain_validation_is_total(domain: str) -> None:
    try:
        ascii_name = normalize_domain(domain)
    except AccountError:
        return
    assert ascii_name.isascii() and ascii_name == ascii_name.lower() and len(ascii_name) <= 253
    assert normalize_domain(ascii_name) == ascii_name


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_store_accepts_or_refuses_any_local_part(
    tmp_path_factory: pytest.TempPathFactory, local: str
) -> None:
    with _open(tmp_path_factory.getbasetemp() / "property.sqlite3") as accounts:
        if not accounts.is_local_domain("example.test"):
            accounts.add_domain("example.test")
        try:
            accounts.add_user(f"{local}@example.test", "pw")
        except AccountError:
            return
        assert accounts.get_user(f"{local}@example.test") is not None
        assert accounts.resolve(f"{local}@example.test").exists
        accounts.remove_user(f"{local}@example.test")


def test_cached_user_quota_follows_changes_by_another_connection(store: SQLiteAccountStore, tmp_path: Path) -> None:
    """get_user is cached for the RCPT hot path; a quota set by the CLI (another connection) is seen within
    milliseconds (the store looks for changes at most every _RECHECK_AFTER seconds)."""
    assert store.get_user("alice@example.test") == User("alice@example.test", 0)
    other = _open(tmp_path / "accounts.sqlite3")
    try:
        other.set_quota("alice@example.test", 4096)
        time.sleep(_RECHECK_AFTER * 2)
        assert store.get_user("alice@example.test") == User("alice@example.test", 4096)
        other.remove_user("alice@example.test")
        time.sleep(_RECHECK_AFTER * 2)
        assert store.get_user("alice@example.test") is None
    finally:
        other.close()
