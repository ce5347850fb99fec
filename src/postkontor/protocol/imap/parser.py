"""The IMAP command parser (RFC 9051 §9 formal syntax, RFC 3501 for IMAP4rev1, and the extensions we offer:
RFC 2971 ID, 3516 BINARY, 4315 UIDPLUS, 4731/5182 ESEARCH/SEARCHRES, 4959 SASL-IR, 5161 ENABLE, 5258/5819
LIST-EXTENDED/LIST-STATUS, 6154 SPECIAL-USE, 6855 UTF8, 7162 CONDSTORE, 9208 QUOTA).

`parse_command` turns a framed `RawCommand` into a typed command of `commands`, or raises `IMAPParseError`
(answered with a tagged BAD, or an untagged one when even the tag was unreadable). Tokens are matched with
precompiled regular expressions at a cursor; literals are taken from the frame where the framer left their
markers, at the end of a line piece.
"""

from __future__ import annotations

import binascii
import datetime
from collections.abc import Callable
from typing import Literal

from postkontor.protocol.imap import commands as c
from postkontor.protocol.imap.framing import RawCommand
from postkontor.protocol.imap.lexer import (
    ATOM,
    BASE64,
    DATE_TIME,
    FETCH_NAME,
    MAX32,
    MAX63,
    MAX_SEARCH_DEPTH,
    MONTHS,
    PART,
    PARTIAL,
    SEQSET,
    TAG,
    Cursor,
    IMAPParseError,
    parse_sequence_set,
    seqset_from,
)

__all__ = ["MAX_SEARCH_DEPTH", "IMAPParseError", "parse_command", "parse_sequence_set"]

_STATUS_ITEMS = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT"}
)
_LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
_SEARCH_RETURN = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
_USE_ATTRS = {a.upper(): a for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")}
_SIMPLE_FETCH = frozenset(
    {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "UID", "RFC822", "RFC822.HEADER",
     "RFC822.TEXT", "MODSEQ"}
)  # fmt: skip
_FAST = ("FLAGS", "INTERNALDATE", "RFC822.SIZE")
_MACROS = {"FAST": _FAST, "ALL": (*_FAST, "ENVELOPE"), "FULL": (*_FAST, "ENVELOPE", "BODY")}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True), "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False), "UNSEEN": ("\\Seen", False),
}  # fmt: skip
_HEADER_KEYS = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT"})
_DATE_KEYS: dict[str, tuple[Literal["internal", "sent"], Literal["before", "on", "since"]]] = {
    "BEFORE": ("internal", "before"), "ON": ("internal", "on"), "SINCE": ("internal", "since"),
    "SENTBEFORE": ("sent", "before"), "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since"),
}  # fmt: skip


# --- the commands ------------------------------------------------------------------------------------------------
def parse_command(raw: RawCommand, utf8: bool = False) -> c.AnyCommand:
    """Parse one framed command. `utf8`: mailbox names are UTF-8 (after ENABLE UTF8=ACCEPT or IMAP4rev2),
    otherwise modified UTF-7 (IMAP4rev1)."""
    cur = Cursor(raw, utf8)
    m = TAG.match(cur.s)
    if m is None or cur.s[m.end() : m.end() + 1] != b" ":
        raise IMAPParseError(None, "missing or invalid tag")
    cur.tag = m.group().decode("ascii")
    cur.i = m.end() + 1
    name = cur.match(ATOM, "a command name").group().decode("ascii").upper()
    tag = cur.tag
    if name == "UID":
        cur.sp()
        sub = cur.word()
        handler = _UID_COMMANDS.get(sub)
        if handler is None:
            raise cur.fail(f"unknown UID command {sub[:20]}")
        cur.sp()
        command = handler(cur, tag, True)
    else:
        simple = _NO_ARGS.get(name)
        if simple is not None:
            command = simple(tag)
        else:
            full = _COMMANDS.get(name)
            if full is None:
                raise cur.fail(f"unknown command {name[:20]}")
            cur.sp()
            command = full(cur, tag)
    cur.end()
    return command


_NO_ARGS: dict[str, Callable[[str], c.AnyCommand]] = {
    "CAPABILITY": c.Capability, "NOOP": c.Noop, "CHECK": c.Check, "LOGOUT": c.Logout, "STARTTLS": c.StartTLS,
    "IDLE": c.Idle, "CLOSE": c.Close, "UNSELECT": c.Unselect, "NAMESPACE": c.Namespace, "EXPUNGE": c.Expunge,
}  # fmt: skip


def _authenticate(cur: Cursor, tag: str) -> c.Authenticate:
    mechanism = cur.word()
    initial: bytes | None = None
    if cur.take(b" "):
        # SASL-IR (RFC 4959): base64, or "=" for an empty initial response.
        if cur.s[cur.i :] == b"=" and cur.k == len(cur.segs) - 1:
            cur.i += 1
            initial = b""
        else:
            data = cur.match(BASE64, "base64").group()
            try:
                initial = binascii.a2b_base64(data, strict_mode=True) if data else None
            except binascii.Error:
                initial = None
            if initial is None:
                raise cur.fail("invalid base64 in the initial response")
    return c.Authenticate(tag, mechanism, initial)


def _login(cur: Cursor, tag: str) -> c.Login:
    user = cur.text(cur.astring())
    cur.sp()
    return c.Login(tag, user, cur.text(cur.astring()))


def _enable(cur: Cursor, tag: str) -> c.Enable:
    caps = [cur.word()]
    while cur.take(b" "):
        caps.append(cur.word())
    return c.Enable(tag, tuple(caps))


def _select(cur: Cursor, tag: str, readonly: bool) -> c.Select:
    mailbox = cur.mailbox()
    condstore = False
    if cur.take(b" "):
        for param in cur.atoms_upper(empty_ok=False):
            if param != "CONDSTORE":
                raise cur.fail(f"unsupported SELECT parameter {param[:20]}")
            condstore = True
    return c.Select(tag, mailbox, readonly, condstore)


def _create(cur: Cursor, tag: str) -> c.Create:
    mailbox = cur.mailbox()
    uses: list[str] = []
    if cur.take(b" "):

        def param() -> None:
            if cur.word() != "USE":
                raise cur.fail("unsupported CREATE parameter")
            cur.sp()

            def attr() -> None:
                # Any syntactically valid attribute parses: RFC 6154 §3 wants NO [USEATTR] for an unknown one,
                # which the session decides.
                flag = cur.flag()
                uses.append(_USE_ATTRS.get(flag.upper(), flag))

            cur.paren_list(attr)

        cur.paren_list(param, empty_ok=False)
    return c.Create(tag, mailbox, tuple(uses))


def _one_mailbox(kind: Callable[[str, str], c.AnyCommand]) -> Callable[[Cursor, str], c.AnyCommand]:
    return lambda cur, tag: kind(tag, cur.mailbox())


def _rename(cur: Cursor, tag: str) -> c.Rename:
    old = cur.mailbox()
    cur.sp()
    return c.Rename(tag, old, cur.mailbox())


def _list(cur: Cursor, tag: str) -> c.List:
    select: list[str] = []
    if cur.peek() == 0x28:
        select = cur.atoms_upper()
        if any(o not in _LIST_SELECT for o in select):
            raise cur.fail("unknown LIST selection option")
        # RFC 5258 §3.1: RECURSIVEMATCH needs another selection option besides REMOTE.
        if "RECURSIVEMATCH" in select and not set(select) - {"RECURSIVEMATCH", "REMOTE"}:
            raise cur.fail("RECURSIVEMATCH without a selection option it could modify")
        cur.sp()
    reference = cur.mailbox()
    cur.sp()
    patterns: list[str] = []
    if cur.peek() == 0x28:
        cur.paren_list(lambda: patterns.append(cur.list_mailbox()), empty_ok=False)
    else:
        patterns.append(cur.list_mailbox())
    ret: list[str] = []
    status: tuple[str, ...] | None = None
    if cur.take(b" "):
        if cur.word() != "RETURN":
            raise cur.fail("expected RETURN")
        cur.sp()

        def option() -> None:
            nonlocal status
            word = cur.word()
            if word == "STATUS" and status is None:
                cur.sp()
                status = _status_items(cur)
            elif word in _LIST_RETURN:
                ret.append(word)
            else:
                raise cur.fail(f"unknown LIST return option {word[:20]}")

        cur.paren_list(option)
    return c.List(tag, reference, tuple(patterns), tuple(select), tuple(ret), status)


def _lsub(cur: Cursor, tag: str) -> c.Lsub:
    reference = cur.mailbox()
    cur.sp()
    return c.Lsub(tag, reference, cur.list_mailbox())


def _status_items(cur: Cursor) -> tuple[str, ...]:
    items = cur.atoms_upper(empty_ok=False)
    for item in items:
        if item not in _STATUS_ITEMS:
            raise cur.fail(f"unknown STATUS item {item[:20]}")
    return tuple(items)


def _status(cur: Cursor, tag: str) -> c.Status:
    mailbox = cur.mailbox()
    cur.sp()
    return c.Status(tag, mailbox, _status_items(cur))


def _append(cur: Cursor, tag: str) -> c.Append:
    mailbox = cur.mailbox()
    cur.sp()
    flags: tuple[str, ...] = ()
    when: datetime.datetime | None = None
    if cur.peek() == 0x28:
        flags = cur.flag_list()
        cur.sp()
    if cur.peek() == 0x22:
        when = _date_time(cur)
        cur.sp()
    if _peek_word(cur, b"UTF8 "):
        # RFC 6855 §4: APPEND ... UTF8 (~{n}) carries a message with UTF-8 headers.
        cur.i += 5
        cur.expect(b"(", '"("')
        message, is8 = cur.literal(allow8=True)
        if not is8:
            raise cur.fail("UTF8 APPEND needs a literal8")
        cur.expect(b")", '")"')
        return c.Append(tag, mailbox, flags, when, message, utf8=True)
    message, _ = cur.literal(allow8=True)
    return c.Append(tag, mailbox, flags, when, message)


def _date_time(cur: Cursor) -> datetime.datetime:
    m = cur.match(DATE_TIME, 'a date-time ("dd-Mon-yyyy hh:mm:ss +zzzz")')
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    month = MONTHS.get(mon.decode("ascii").upper())
    try:
        if month is None or int(zm) > 59:
            raise ValueError
        offset = datetime.timedelta(hours=int(zh), minutes=int(zm))
        zone = datetime.timezone(-offset if sign == b"-" else offset)
        return datetime.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=zone)
    except ValueError:
        raise cur.fail("invalid date-time") from None


def _expunge(cur: Cursor, tag: str, uid: bool) -> c.Expunge:
    return c.Expunge(tag, cur.seqset())


def _copy_move(kind: type[c.Copy] | type[c.Move]) -> Callable[[Cursor, str, bool], c.AnyCommand]:
    def parse(cur: Cursor, tag: str, uid: bool) -> c.AnyCommand:
        seq = cur.seqset()
        cur.sp()
        return kind(tag, seq, cur.mailbox(), uid)

    return parse


def _store(cur: Cursor, tag: str, uid: bool) -> c.Store:
    seq = cur.seqset()
    cur.sp()
    unchanged: int | None = None
    if cur.peek() == 0x28:
        cur.expect(b"(", '"("')
        if cur.word() != "UNCHANGEDSINCE":
            raise cur.fail("unsupported STORE modifier")
        cur.sp()
        unchanged = cur.number(MAX63)
        cur.expect(b")", '")"')
        cur.sp()
    mode: Literal["+", "-", ""] = "+" if cur.take(b"+") else "-" if cur.take(b"-") else ""
    word = cur.word()
    if word not in ("FLAGS", "FLAGS.SILENT"):
        raise cur.fail("expected FLAGS or FLAGS.SILENT")
    cur.sp()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
    else:
        items = [cur.flag()]
        while cur.take(b" "):
            items.append(cur.flag())
        flags = tuple(items)
    return c.Store(tag, seq, mode, word == "FLAGS.SILENT", flags, uid, unchanged)


def _id(cur: Cursor, tag: str) -> c.Id:
    params = cur.nstring() if cur.peek() != 0x28 else b""
    if params is None:
        return c.Id(tag, None)
    pairs: list[tuple[str, str | None]] = []

    def pair() -> None:
        key = cur.text(cur.string())
        cur.sp()
        value = cur.nstring()
        pairs.append((key, None if value is None else cur.text(value)))

    cur.paren_list(pair)
    return c.Id(tag, tuple(pairs))


def _getquota(cur: Cursor, tag: str) -> c.GetQuota:
    return c.GetQuota(tag, cur.text(cur.astring()))


def _setquota(cur: Cursor, tag: str) -> c.SetQuota:
    root = cur.text(cur.astring())
    cur.sp()
    limits: list[tuple[str, int]] = []

    def resource() -> None:
        name = cur.word()
        cur.sp()
        limits.append((name, cur.number(MAX63)))

    cur.paren_list(resource)
    return c.SetQuota(tag, root, tuple(limits))


# FETCH and SEARCH live in their own functions below; the table is filled at the end of the module.
_COMMANDS: dict[str, Callable[[Cursor, str], c.AnyCommand]] = {}
_UID_COMMANDS: dict[str, Callable[[Cursor, str, bool], c.AnyCommand]] = {}


# --- FETCH (RFC 9051 §6.4.5, RFC 3516, RFC 7162) ---------------------------------------------------------------
def _fetch(cur: Cursor, tag: str, uid: bool) -> c.Fetch:
    seq = cur.seqset()
    cur.sp()
    items: list[c.FetchItem] = []
    if cur.peek() == 0x28:
        cur.paren_list(lambda: items.append(_fetch_att(cur)), empty_ok=False)
    else:
        m = ATOM.match(cur.s, cur.i)
        macro = _MACROS.get(m.group().decode("ascii").upper()) if m else None
        if macro is not None and m is not None:
            cur.i = m.end()
            items.extend(c.FetchAttribute(n) for n in macro)
        else:
            items.append(_fetch_att(cur))
    changed: int | None = None
    if cur.take(b" "):
        cur.expect(b"(", '"("')
        if cur.word() != "CHANGEDSINCE":
            raise cur.fail("unsupported FETCH modifier")
        cur.sp()
        changed = cur.number(MAX63)
        cur.expect(b")", '")"')
    return c.Fetch(tag, seq, tuple(items), uid, changed)


def _fetch_att(cur: Cursor) -> c.FetchItem:
    name = cur.match(FETCH_NAME, "a FETCH item").group().decode("ascii").upper()
    if cur.peek() != 0x5B:  # "["
        if name not in _SIMPLE_FETCH:
            raise cur.fail(f"unknown FETCH item {name[:20]}")
        return c.FetchAttribute(name)
    if name in ("BODY", "BODY.PEEK"):
        section = _section(cur)
        return c.FetchBody(section, name == "BODY.PEEK", _partial(cur))
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        cur.expect(b"[", '"["')
        part = _part(cur) if cur.peek() != 0x5D else ()
        cur.expect(b"]", '"]"')
        if name == "BINARY.SIZE":
            return c.FetchBinarySize(part)
        return c.FetchBody(c.Section(part), name == "BINARY.PEEK", _partial(cur), binary=True)
    raise cur.fail(f"unknown FETCH item {name[:20]}")


def _part(cur: Cursor) -> tuple[int, ...]:
    text = cur.match(PART, "a part number").group()
    numbers = tuple(int(n) if len(n) <= 10 else MAX32 + 1 for n in text.split(b"."))
    if max(numbers) > MAX32:
        raise cur.fail("part number out of range")
    return numbers


def _section(cur: Cursor) -> c.Section:
    cur.expect(b"[", '"["')
    part: tuple[int, ...] = ()
    text: str | None = None
    fields: list[str] = []
    if cur.peek() != 0x5D:
        if 0x30 <= cur.peek() <= 0x39:
            part = _part(cur)
            if cur.peek() == 0x2E:
                cur.i += 1
            else:
                cur.expect(b"]", '"]"')
                return c.Section(part)
        text = cur.match(FETCH_NAME, "a section text").group().decode("ascii").upper()
        if text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT") and not (text == "MIME" and part):
            raise cur.fail("invalid section")
        if text.startswith("HEADER.FIELDS"):
            cur.sp()
            cur.paren_list(lambda: fields.append(cur.text(cur.astring()).upper()), empty_ok=False)
    cur.expect(b"]", '"]"')
    return c.Section(part, text, tuple(fields))


def _partial(cur: Cursor) -> tuple[int, int] | None:
    if cur.peek() != 0x3C:  # "<"
        return None
    m = cur.match(PARTIAL, "<offset.count>")
    if len(m.group(1)) > 10 or len(m.group(2)) > 10:
        raise cur.fail("partial out of range")
    offset, count = int(m.group(1)), int(m.group(2))
    if offset > MAX32 or count > MAX32 or count == 0:
        raise cur.fail("partial out of range")
    return offset, count


# --- SEARCH (RFC 9051 §6.4.4, RFC 4731, RFC 5182, RFC 7162 §3.1.5) ---------------------------------------------
def _search(cur: Cursor, tag: str, uid: bool) -> c.Search:
    ret: tuple[str, ...] | None = None
    if _peek_word(cur, b"RETURN "):
        cur.i += 7
        options = cur.atoms_upper()
        if any(o not in _SEARCH_RETURN for o in options):
            raise cur.fail("unknown SEARCH return option")
        ret = tuple(options)
        cur.sp()
    if _peek_word(cur, b"CHARSET "):
        cur.i += 8
        cur.charset = cur.text(cur.astring()).upper()
        cur.sp()
    keys = [_search_key(cur, 0)]
    while cur.take(b" "):
        keys.append(_search_key(cur, 0))
    key = keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
    return c.Search(tag, key, uid, cur.charset, ret)


def _peek_word(cur: Cursor, word: bytes) -> bool:
    return cur.s[cur.i : cur.i + len(word)].upper() == word


def _search_key(cur: Cursor, depth: int) -> c.SearchKey:
    if depth >= MAX_SEARCH_DEPTH:
        raise cur.fail("search keys nested too deeply")
    if cur.take(b"("):
        keys = [_search_key(cur, depth + 1)]
        while cur.take(b" "):
            keys.append(_search_key(cur, depth + 1))
        cur.expect(b")", '")"')
        return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
    m = SEQSET.match(cur.s, cur.i)
    if m and (m.end() == len(cur.s) or cur.s[m.end()] in b" )"):
        cur.i = m.end()
        return c.SearchSet(seqset_from(m.group(), cur))
    word = cur.word()
    flag = _FLAG_KEYS.get(word)
    if flag is not None:
        return c.SearchFlag(*flag)
    if word == "ALL":
        return c.SearchAll()
    if word == "NEW":
        return c.SearchAnd((c.SearchFlag("\\Recent"), c.SearchFlag("\\Seen", False)))
    if word == "OLD":
        return c.SearchNot(c.SearchFlag("\\Recent"))
    cur.sp()
    if word in _HEADER_KEYS:
        return c.SearchHeader(word, cur.search_text(cur.astring()))
    if word == "BODY" or word == "TEXT":
        return c.SearchText("BODY" if word == "BODY" else "TEXT", cur.search_text(cur.astring()))
    date_key = _DATE_KEYS.get(word)
    if date_key is not None:
        return c.SearchDate(date_key[0], date_key[1], cur.search_date())
    if word == "LARGER" or word == "SMALLER":
        return c.SearchSize("larger" if word == "LARGER" else "smaller", cur.number())
    if word in ("KEYWORD", "UNKEYWORD"):
        keyword = cur.match(ATOM, "a keyword").group().decode("ascii")
        return c.SearchFlag(keyword, word == "KEYWORD")
    if word == "HEADER":
        name = cur.text(cur.astring()).upper()
        cur.sp()
        return c.SearchHeader(name, cur.search_text(cur.astring()))
    if word == "UID":
        return c.SearchSet(cur.seqset(), uid=True)
    if word == "NOT":
        return c.SearchNot(_search_key(cur, depth + 1))
    if word == "OR":
        left = _search_key(cur, depth + 1)
        cur.sp()
        return c.SearchOr(left, _search_key(cur, depth + 1))
    if word == "MODSEQ":
        if cur.peek() == 0x22:  # entry-name SP entry-type-req: parsed and ignored (RFC 7162 §3.1.5)
            cur.string()
            cur.sp()
            if cur.word() not in ("PRIV", "SHARED", "ALL"):
                raise cur.fail("invalid MODSEQ entry type")
            cur.sp()
        return c.SearchModSeq(cur.number(MAX63))
    raise cur.fail(f"unknown search key {word[:20]}")


_COMMANDS.update(
    {
        "AUTHENTICATE": _authenticate,
        "LOGIN": _login,
        "ENABLE": _enable,
        "SELECT": lambda cur, tag: _select(cur, tag, False),
        "EXAMINE": lambda cur, tag: _select(cur, tag, True),
        "CREATE": _create,
        "DELETE": _one_mailbox(c.Delete),
        "SUBSCRIBE": _one_mailbox(c.Subscribe),
        "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
        "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
        "RENAME": _rename,
        "LIST": _list,
        "LSUB": _lsub,
        "STATUS": _status,
        "APPEND": _append,
        "ID": _id,
        "GETQUOTA": _getquota,
        "SETQUOTA": _setquota,
        "SEARCH": lambda cur, tag: _search(cur, tag, False),
        "FETCH": lambda cur, tag: _fetch(cur, tag, False),
        "STORE": lambda cur, tag: _store(cur, tag, False),
        "COPY": lambda cur, tag: _copy_move(c.Copy)(cur, tag, False),
        "MOVE": lambda cur, tag: _copy_move(c.Move)(cur, tag, False),
    }
)
_UID_COMMANDS.update(
    {
        "FETCH": _fetch,
        "STORE": _store,
        "COPY": _copy_move(c.Copy),
        "MOVE": _copy_move(c.Move),
        "SEARCH": _search,
        "EXPUNGE": _expunge,
    }
)
