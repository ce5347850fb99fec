"""The IMAP session: states, login and mailbox-level commands (RFC 9051 §6.1-6.3, RFC 3501 for IMAP4rev1 clients).

The session behaves as IMAP4rev1 until the client sends `ENABLE IMAP4rev2` (RFC 9051 §6.3.1), which switches
SEARCH results to ESEARCH, mailbox names to UTF-8 and drops \\Recent. Commands on the selected mailbox's messages
live in `server.imap.messages`. Storage calls run on the mailbox hub's thread pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from postkontor.protocol.imap import commands as c
from postkontor.protocol.imap.response import encode_mailbox, quoted
from postkontor.protocol.sasl import Credentials, SASLFailure, SASLFailureKind, encode_challenge, server_mechanism
from postkontor.server.imap.io import SessionIO
from postkontor.server.imap.listing import list_responses, lsub_responses
from postkontor.server.imap.messages import MessageCommands
from postkontor.server.imap.selected import SelectedMailbox
from postkontor.server.login import LoginResult, check_password, login_name
from postkontor.store.mailindex import MailboxError, MailIndex

if TYPE_CHECKING:
    from postkontor.server.mailboxes import MailboxHub
    from postkontor.server.session import Services

log = logging.getLogger(__name__)

_NOT_AUTHENTICATED, _AUTHENTICATED, _SELECTED, _LOGOUT = range(4)
_BASE_CAPABILITIES = "IMAP4rev2 IMAP4rev1 SASL-IR LITERAL- ID ENABLE"
_AUTHENTICATED_CAPABILITIES = (
    "IMAP4rev2 IMAP4rev1 LITERAL- ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN LIST-EXTENDED "
    "LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE ESEARCH SEARCHRES QUOTA QUOTA=RES-STORAGE CONDSTORE BINARY "
    "STATUS=SIZE"
)
_ENABLEABLE = ("IMAP4REV2", "CONDSTORE")
_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "HIGHESTMODSEQ")
_ANY_STATE = (c.Capability, c.Noop, c.Logout, c.Id, c.Enable)
_NOT_AUTHENTICATED_ONLY = (c.StartTLS, c.Login, c.Authenticate)
_SELECTED_ONLY = (c.Close, c.Unselect, c.Expunge, c.Search, c.Fetch, c.Store, c.Copy, c.Move, c.Check)


class IMAPSession:
    def __init__(
        self,
        services: Services,
        hub: MailboxHub,
        io: SessionIO,
        client_ip: str,
        *,
        tls_active: bool,
        tls_available: bool,
    ) -> None:
        self.services = services
        self.hub = hub
        self.io = io
        self.client_ip = client_ip
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.state = _NOT_AUTHENTICATED
        self.user: str | None = None
        self.index: MailIndex | None = None
        self.selected: SelectedMailbox | None = None
        self.rev2 = False
        self.condstore = False
        self.starttls_requested = False
        self.errors = 0
        self.messages = MessageCommands(self)
        self._handlers: dict[type[c.Command], Callable[[c.Command], Awaitable[None]]] = {}

    # --- output helpers -------------------------------------------------------------------------------------------
    @property
    def utf8(self) -> bool:
        return self.rev2

    def untagged(self, text: bytes | str) -> None:
        self.io.write(b"* " + (text.encode("utf-8") if isinstance(text, str) else text) + b"\r\n")

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        middle = f"[{code}] " if code else ""
        self.io.write(f"{tag} {status} {middle}{text}\r\n".encode())

    def mailbox_name(self, name: str) -> bytes:
        return encode_mailbox(name, self.utf8)

    def capabilities(self) -> str:
        if self.state != _NOT_AUTHENTICATED:
            return _AUTHENTICATED_CAPABILITIES
        if self.tls_active:
            return _BASE_CAPABILITIES + " AUTH=PLAIN"
        # RFC 9051 §6.2.3: no LOGIN (nor AUTH= mechanisms) before TLS on a cleartext port.
        tls = " STARTTLS" if self.tls_available else ""
        return _BASE_CAPABILITIES + tls + " LOGINDISABLED"

    def greeting(self) -> bytes:
        return f"* OK [CAPABILITY {self.capabilities()}] postkontor IMAP ready\r\n".encode()

    # --- dispatch -----------------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.state == _LOGOUT

    async def execute(self, command: c.Command) -> None:
        allowed = self._allowed(command)
        if allowed is not None:
            self.errors += 1
            self.tagged(command.tag, "BAD", allowed)
            return
        handler = getattr(self, "_" + type(command).__name__.lower(), None)
        if handler is None:
            handler = getattr(self.messages, type(command).__name__.lower())
        try:
            await handler(command)
        except MailboxError as exc:
            self.tagged(command.tag, "NO", exc.text, exc.code)

    def _allowed(self, command: c.Command) -> str | None:
        if isinstance(command, _ANY_STATE):
            return None
        if isinstance(command, _NOT_AUTHENTICATED_ONLY):
            return None if self.state == _NOT_AUTHENTICATED else "Already authenticated"
        if self.state == _NOT_AUTHENTICATED:
            return "Log in first"
        if isinstance(command, _SELECTED_ONLY) and self.state != _SELECTED:
            return "No mailbox selected"
        if isinstance(command, c.Lsub | c.Check) and self.rev2:
            return f"{type(command).__name__.upper()} is not part of IMAP4rev2"
        return None

    async def sync(self, *, allow_expunge: bool = True) -> None:
        """Report what changed in the selected mailbox since the client last heard (before a tagged reply)."""
        selected, index = self.selected, self.index
        if selected is None or index is None:
            return
        try:
            changes = await self.hub.run(
                index.changes_since,
                selected.name,
                selected.uidnext,
                selected.highest_modseq,
                claim_recent=not selected.readonly,
            )
        except MailboxError:
            # The mailbox was deleted or renamed by another session: RFC 9051 §7.1 lets us end the session.
            self.untagged("BYE The selected mailbox no longer exists")
            self.state = _LOGOUT
            return
        for line in selected.apply(changes, allow_expunge=allow_expunge, utf8=self.utf8, rev2=self.rev2):
            self.io.write(line)

    def changed(self, mailbox: str) -> None:
        """Tell the other sessions of this user (in this process) that `mailbox` changed."""
        if self.user is not None:
            self.hub.changed(self.user, mailbox, origin=self.io.wake)

    # --- any state ----------------------------------------------------------------------------------------------
    async def _capability(self, command: c.Capability) -> None:
        self.untagged("CAPABILITY " + self.capabilities())
        self.tagged(command.tag, "OK", "CAPABILITY completed")

    async def _noop(self, command: c.Noop | c.Check) -> None:
        await self.sync()
        self.tagged(command.tag, "OK", f"{type(command).__name__.upper()} completed")

    _check = _noop

    async def _logout(self, command: c.Logout) -> None:
        self.untagged("BYE postkontor IMAP signing off")
        self.tagged(command.tag, "OK", "LOGOUT completed")
        self.state = _LOGOUT

    async def _id(self, command: c.Id) -> None:
        self.untagged('ID ("name" "postkontor")')
        self.tagged(command.tag, "OK", "ID completed")

    async def _enable(self, command: c.Enable) -> None:
        if self.state == _NOT_AUTHENTICATED:
            self.tagged(command.tag, "BAD", "Log in first")
            return
        enabled = []
        for capability in command.capabilities:
            if capability in _ENABLEABLE:
                enabled.append("IMAP4rev2" if capability == "IMAP4REV2" else capability)
                if capability == "IMAP4REV2":
                    self.rev2 = True
                else:
                    self.condstore = True
        self.untagged(" ".join(["ENABLED", *enabled]))
        self.tagged(command.tag, "OK", "ENABLE completed")

    # --- not authenticated --------------------------------------------------------------------------------------
    async def _starttls(self, command: c.StartTLS) -> None:
        if self.tls_active or not self.tls_available:
            self.tagged(command.tag, "BAD", "TLS is already active" if self.tls_active else "TLS is not available")
            return
        self.tagged(command.tag, "OK", "Begin TLS negotiation now")
        self.starttls_requested = True

    def tls_started(self) -> None:
        self.tls_active = True
        self.starttls_requested = False

    async def _login(self, command: c.Login) -> None:
        if not self.tls_active:
            self.tagged(command.tag, "NO", "Use STARTTLS first", "PRIVACYREQUIRED")
            return
        await self._log_in(command.tag, command.user, command.password, "LOGIN")

    async def _authenticate(self, command: c.Authenticate) -> None:
        if not self.tls_active:
            self.tagged(command.tag, "NO", "Use STARTTLS first", "PRIVACYREQUIRED")
            return
        mechanism = server_mechanism(command.mechanism) if command.mechanism == "PLAIN" else None
        if mechanism is None:
            self.tagged(command.tag, "NO", "Unsupported mechanism", "CANNOT")
            return
        step = mechanism.start(command.initial)
        while not isinstance(step, Credentials | SASLFailure):
            self.io.write(b"+ " + encode_challenge(step.data).encode("ascii") + b"\r\n")
            line = await self.io.read_line()
            if line is None:
                return
            step = mechanism.step_line(line)
        if isinstance(step, SASLFailure):
            # RFC 9051 §6.2.2: BAD for a cancelled exchange or invalid base64; a PLAIN message that decodes but
            # makes no valid credentials is an authentication failure (NO).
            if step.kind is SASLFailureKind.MALFORMED:
                self.tagged(command.tag, "NO", f"AUTHENTICATE failed: {step.reason}", "AUTHENTICATIONFAILED")
            else:
                self.tagged(command.tag, "BAD", f"AUTHENTICATE failed: {step.reason}")
            return
        if step.acts_as_other:
            self.tagged(command.tag, "NO", "Acting as another user is not allowed", "AUTHORIZATIONFAILED")
            return
        await self._log_in(command.tag, step.authcid, step.password, "AUTHENTICATE")

    async def _log_in(self, tag: str, user: str, password: str, verb: str) -> None:
        result = await check_password(self.services, user, password, self.client_ip, "IMAP")
        if result is LoginResult.THROTTLED:
            self.tagged(tag, "NO", "Too many failed logins, try again later", "UNAVAILABLE")
            return
        if result is LoginResult.FAILED:
            self.tagged(tag, "NO", "Invalid credentials", "AUTHENTICATIONFAILED")
            return
        address = login_name(user)
        account = self.services.accounts.get_user(address)
        quota = account.quota if account is not None else 0
        try:
            self.index = await self.hub.acquire(address, quota)
        except Exception:
            log.exception("opening the mailboxes of %s failed", address)
            self.tagged(tag, "NO", "Mailbox store unavailable", "UNAVAILABLE")
            return
        self.user = address
        self.state = _AUTHENTICATED
        log.info("IMAP login %s from %s", address, self.client_ip)
        self.tagged(tag, "OK", f"{verb} completed", f"CAPABILITY {self.capabilities()}")

    # --- authenticated ------------------------------------------------------------------------------------------
    def _index(self) -> MailIndex:
        assert self.index is not None
        return self.index

    async def _select(self, command: c.Select) -> None:
        index = self._index()
        self.deselect(announce=True)
        state = await self.hub.run(index.refresh, command.mailbox, claim_recent=not command.readonly)
        if command.condstore:
            self.condstore = True
        selected = SelectedMailbox.open(state, readonly=command.readonly, condstore=self.condstore)
        for line in selected.flags_responses():
            self.io.write(line)
        self.untagged(f"{selected.exists} EXISTS")
        if not self.rev2:
            self.untagged(f"{len(selected.recent)} RECENT")
            first_unseen = next(
                (seq for seq, uid in enumerate(selected.uids, 1) if "\\Seen" not in selected.messages[uid].flags), None
            )
            if first_unseen is not None:
                self.untagged(f"OK [UNSEEN {first_unseen}] First unseen")
        self.untagged(f"OK [UIDVALIDITY {selected.uidvalidity}] UIDs valid")
        self.untagged(f"OK [UIDNEXT {selected.uidnext}] Predicted next UID")
        self.untagged(f"OK [HIGHESTMODSEQ {selected.highest_modseq}] Highest")
        if self.rev2:
            self.untagged(b'LIST () "/" ' + self.mailbox_name(command.mailbox))
        self.selected = selected
        self.state = _SELECTED
        self.hub.watch(self._user(), command.mailbox, self.io.wake)
        mode = "READ-ONLY" if command.readonly else "READ-WRITE"
        self.tagged(command.tag, "OK", f"{'EXAMINE' if command.readonly else 'SELECT'} completed", mode)

    def _user(self) -> str:
        assert self.user is not None
        return self.user

    def deselect(self, *, announce: bool = False) -> None:
        if self.selected is not None:
            self.hub.unwatch(self._user(), self.selected.name, self.io.wake)
            if announce:
                # RFC 9051 §7.1: selecting another mailbox ends the previous one with [CLOSED].
                self.untagged("OK [CLOSED] Previous mailbox closed")
        self.selected = None
        if self.state == _SELECTED:
            self.state = _AUTHENTICATED

    async def _create(self, command: c.Create) -> None:
        name = command.mailbox.rstrip("/")  # RFC 9051 §6.3.4: a trailing separator only declares intent
        if name.upper() == "INBOX":
            self.tagged(command.tag, "NO", "INBOX always exists", "ALREADYEXISTS")
            return
        if len(command.special_use) > 1:
            self.tagged(command.tag, "NO", "One special use per mailbox", "USEATTR")
            return
        use = command.special_use[0] if command.special_use else None
        if use is not None and use.lower() not in _SPECIAL_USES:
            self.tagged(command.tag, "NO", f"Unknown special use {use}", "USEATTR")
            return
        await self.hub.run(self._index().create, name, _SPECIAL_USES[use.lower()] if use else None)
        self.tagged(command.tag, "OK", "CREATE completed")

    async def _delete(self, command: c.Delete) -> None:
        if self.selected is not None and self.selected.name == command.mailbox:
            self.deselect()
        await self.hub.run(self._index().delete, command.mailbox)
        self.changed(command.mailbox)
        self.tagged(command.tag, "OK", "DELETE completed")

    async def _rename(self, command: c.Rename) -> None:
        await self.hub.run(self._index().rename, command.old, command.new)
        selected, old = self.selected, command.old
        if selected is not None and old != "INBOX" and (selected.name == old or selected.name.startswith(old + "/")):
            # As DELETE does: otherwise the next sync finds the old name gone and ends the session with BYE. (A
            # renamed INBOX stays, emptied: RFC 9051 §6.3.6; the session then learns of the expunges.)
            self.deselect()
        self.changed(command.old)
        self.tagged(command.tag, "OK", "RENAME completed")

    async def _subscribe(self, command: c.Subscribe) -> None:
        await self.hub.run(self._index().subscribe, command.mailbox)
        self.tagged(command.tag, "OK", "SUBSCRIBE completed")

    async def _unsubscribe(self, command: c.Unsubscribe) -> None:
        await self.hub.run(self._index().unsubscribe, command.mailbox)
        self.tagged(command.tag, "OK", "UNSUBSCRIBE completed")

    async def _list(self, command: c.List) -> None:
        index = self._index()
        mailboxes = await self.hub.run(index.list_mailboxes)
        lines = list_responses(command, mailboxes, self.utf8)
        for line, status_of in lines:
            self.io.write(line)
            if status_of is not None and command.return_status:
                await self._status_line(status_of, command.return_status)
        await self.sync()
        self.tagged(command.tag, "OK", "LIST completed")

    async def _lsub(self, command: c.Lsub) -> None:
        mailboxes = await self.hub.run(self._index().list_mailboxes)
        for line in lsub_responses(command, mailboxes, self.utf8):
            self.io.write(line)
        self.tagged(command.tag, "OK", "LSUB completed")

    async def _namespace(self, command: c.Namespace) -> None:
        self.untagged('NAMESPACE (("" "/")) NIL NIL')
        self.tagged(command.tag, "OK", "NAMESPACE completed")

    async def _status(self, command: c.Status) -> None:
        unknown = [item for item in command.items if item not in _STATUS_ITEMS]
        if unknown:
            self.tagged(command.tag, "BAD", f"Unknown STATUS item {unknown[0]}")
            return
        await self._status_line(command.mailbox, command.items)
        await self.sync()
        self.tagged(command.tag, "OK", "STATUS completed")

    async def _status_line(self, mailbox: str, items: tuple[str, ...]) -> None:
        values = await self.hub.run(self._index().status, mailbox)
        if "HIGHESTMODSEQ" in items:
            # RFC 7162 §3.1: a CONDSTORE enabling command; the open mailbox reports MODSEQs from now on too.
            self.condstore = True
            if self.selected is not None:
                self.selected.condstore = True
        pairs = " ".join(f"{item} {values.get(item, 0)}" for item in items)
        self.untagged(b"STATUS " + self.mailbox_name(mailbox) + b" (" + pairs.encode() + b")")

    async def _append(self, command: c.Append) -> None:
        index = self._index()
        if not await self.hub.run(index.exists, command.mailbox):
            self.tagged(command.tag, "NO", "No such mailbox", "TRYCREATE")
            return
        flags = self.messages.storable_flags(command.flags)
        if flags is None:
            self.tagged(command.tag, "BAD", "Invalid flag in APPEND")
            return
        if not command.message:
            self.tagged(command.tag, "NO", "Empty message", "CANNOT")
            return
        when = command.internal_date.timestamp() if command.internal_date is not None else time.time()
        uidvalidity, uid = await self.hub.run(index.append, command.mailbox, command.message, flags, when)
        self.changed(command.mailbox)
        await self.sync()
        self.tagged(command.tag, "OK", "APPEND completed", f"APPENDUID {uidvalidity} {uid}")

    async def _getquota(self, command: c.GetQuota) -> None:
        if command.root != "" or self._quota_limit() == 0:
            self.tagged(command.tag, "NO", "No such quota root", "NONEXISTENT")
            return
        await self._quota_line()
        self.tagged(command.tag, "OK", "GETQUOTA completed")

    async def _getquotaroot(self, command: c.GetQuotaRoot) -> None:
        if not await self.hub.run(self._index().exists, command.mailbox):
            self.tagged(command.tag, "NO", "No such mailbox", "NONEXISTENT")
            return
        name = self.mailbox_name(command.mailbox)
        if self._quota_limit():
            self.untagged(b"QUOTAROOT " + name + b' ""')
            await self._quota_line()
        else:
            self.untagged(b"QUOTAROOT " + name)
        self.tagged(command.tag, "OK", "GETQUOTAROOT completed")

    async def _setquota(self, command: c.SetQuota) -> None:
        self.tagged(command.tag, "NO", "Quotas are set by the administrator", "NOPERM")

    def _quota_limit(self) -> int:
        return self._index().quota

    async def _quota_line(self) -> None:
        used = await self.hub.run(self._index().usage)
        limit = self._quota_limit()
        # RFC 9208 §5.1: STORAGE in units of 1024 octets.
        self.untagged(f'QUOTA "" (STORAGE {(used + 1023) // 1024} {limit // 1024})')

    # --- leaving ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """The connection is gone: release the user's mailboxes."""
        if self.selected is not None and self.user is not None:
            self.hub.unwatch(self.user, self.selected.name, self.io.wake)
        self.selected = None
        if self.user is not None:
            self.hub.release(self.user)
            self.user = None
            self.index = None


_SPECIAL_USES = {
    "\\sent": "\\Sent",
    "\\drafts": "\\Drafts",
    "\\trash": "\\Trash",
    "\\junk": "\\Junk",
    "\\archive": "\\Archive",
    "\\all": "\\All",
    "\\flagged": "\\Flagged",
}

__all__ = ["IMAPSession", "quoted"]
