"""The running server: stores, spool, listeners, connection accounting, signals and graceful shutdown.

Shutdown on SIGTERM/SIGINT: stop accepting; idle sessions get 421 4.3.2 at once; a session in DATA (or whose
message is being committed) may finish for up to `timeouts.shutdown_grace` seconds and then gets 421; the spool
is drained into the mailboxes and queue; nothing half-written is left (Maildir writes go through tmp/, the journal
keeps whatever was not materialised for the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from postkontor.auth.passwords import PasswordHasher
from postkontor.config.model import Config, ListenerConfig
from postkontor.delivery.local import Materializer
from postkontor.delivery.remote import RemoteDelivery
from postkontor.dns.resolver import MailResolver
from postkontor.mailauth.keys import KeyStore
from postkontor.queue.runner import QueueRunner
from postkontor.queue.store import QueueStore
from postkontor.server.accept import Acceptor
from postkontor.server.authcheck import AuthDNS, MailAuth
from postkontor.server.imap.connection import IMAPConnection
from postkontor.server.mailboxes import MailboxHub
from postkontor.server.pop3 import POP3Connection
from postkontor.server.session import Services, ascii_domain, new_spool_id
from postkontor.server.smtp import SMTPConnection, engine_settings
from postkontor.server.tls import server_context
from postkontor.server.workers import SharedState, Supervisor, bind_listeners
from postkontor.spool.journal import Journal, LocalTarget, RemoteTarget, SpoolMessage
from postkontor.spool.spool import Spool
from postkontor.store.maildir import MaildirStore
from postkontor.store.sqlite_accounts import SQLiteAccountStore

log = logging.getLogger("postkontor")


def _postmaster_domain(config: Config, domains: list[str]) -> str:
    """`RCPT TO:<Postmaster>` (RFC 5321 §4.5.1) goes to the postmaster of the domain the host belongs to."""
    host = config.hostname.lower()
    for domain in sorted(domains, key=len, reverse=True):
        if host == domain or host.endswith("." + domain):
            return domain
    return domains[0] if domains else host


class ServedConnection(Protocol):
    """What the server counts and stops: an SMTP, IMAP or POP3 connection."""

    client_ip: str

    def close_for_shutdown(self, force: bool) -> None: ...


class MailServer:
    """One server process. `worker` numbers it among the workers sharing `shared` limits and the `sockets`
    bound by the supervisor; worker 0 runs the outbound queue."""

    def __init__(
        self,
        config: Config,
        *,
        hasher: PasswordHasher | None = None,
        shared: SharedState | None = None,
        worker: int = 0,
        sockets: dict[ListenerConfig, socket.socket] | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self._shared = shared if shared is not None else SharedState.create(config.limits, workers=1)
        self._sockets = sockets
        self.stopping = False
        self.tls_context: ssl.SSLContext | None = server_context(config.tls) if config.tls else None
        self._hasher = hasher or PasswordHasher()
        self._acceptors: list[Acceptor] = []
        self._own_sockets = False
        self._connections: set[ServedConnection] = set()
        self._hub: MailboxHub | None = None
        self._all_gone = asyncio.Event()
        self._queue: QueueStore | None = None
        self._accounts: SQLiteAccountStore | None = None
        self._services: Services | None = None
        self._runner: QueueRunner | None = None
        self._deliverer: RemoteDelivery | None = None
        self.recovered = 0

    @property
    def services(self) -> Services:
        assert self._services is not None, "server not started"
        return self._services

    async def start(self) -> None:
        config = self.config
        accounts = SQLiteAccountStore(
            config.accounts_db,
            hasher=self._hasher,
            subaddress_separator=config.delivery.subaddress_separator,
            max_alias_depth=config.delivery.max_alias_depth,
        )
        self._accounts = accounts
        config.mail_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        maildir = MaildirStore(config.mail_dir, config.hostname)
        maildir.clean_tmp_all()
        self._queue = QueueStore(config.queue_dir, durable_commits=False)
        materializer = Materializer(maildir, self._queue, config.hostname)
        spool = Spool(Journal(config.spool_dir / f"w{self.worker}"), materializer, sync_stores=materializer.sync)
        self.recovered = await asyncio.get_running_loop().run_in_executor(None, spool.recover)
        if self.recovered:
            log.info("recovered %d message(s) from the spool journal", self.recovered)
        spool.start()
        limits = config.limits
        # The checks' own resolver: a shorter lifetime per query than the queue's, so one slow zone cannot hold a
        # session beyond [auth] timeout; its TTL cache is per worker, like the queue's.
        auth = MailAuth(
            config.auth,
            hostname=config.hostname,
            dns=AuthDNS(MailResolver(config.dns_servers, timeout=min(5.0, config.auth.timeout))),
            keys=KeyStore(config.data_dir),
            is_local_domain=accounts.is_local_domain,
        )
        self._services = Services(
            config=config,
            accounts=accounts,
            maildir=maildir,
            spool=spool,
            hasher=self._hasher,
            password_slots=asyncio.Semaphore(limits.max_parallel_password_checks),
            password_executor=ThreadPoolExecutor(limits.max_parallel_password_checks, thread_name_prefix="argon2"),
            ip_throttle=self._shared.ip_throttle,
            account_throttle=self._shared.account_throttle,
            postmaster_domain=_postmaster_domain(config, accounts.list_domains()),
            auth=auth,
        )
        loop = asyncio.get_running_loop()
        if self.worker == 0:
            self._start_queue(materializer, loop)
        else:
            materializer.on_queued = self._shared.wake_queue
        if self._sockets is None:
            self._sockets = bind_listeners(config)
            self._own_sockets = True
        sockets = self._sockets
        for listener in config.listeners:
            implicit_tls = self.tls_context if listener.kind.implicit_tls else None
            factory = self._connection_factory(listener, maildir)

            acceptor = Acceptor(
                sockets[listener],
                factory,
                ssl_context=implicit_tls,
                handshake_timeout=config.timeouts.tls_handshake if implicit_tls else None,
                should_defer=self._busier_than_others,
            )
            acceptor.start()
            self._acceptors.append(acceptor)
            log.info("listening on %s", listener.label)

    def _connection_factory(self, listener: ListenerConfig, maildir: MaildirStore) -> Callable[[], asyncio.Protocol]:
        protocol = listener.kind.protocol
        if protocol == "smtp":
            settings = engine_settings(self, listener)
            return lambda: SMTPConnection(self, listener, settings)
        if self._hub is None:
            self._hub = MailboxHub(maildir, self.config.hostname)
        hub = self._hub
        if protocol == "imap":
            return lambda: IMAPConnection(self, hub, listener)
        return lambda: POP3Connection(self, hub, listener)

    def _busier_than_others(self) -> bool:
        fewest = self._shared.connections.fewest_elsewhere(self.worker)
        return fewest is not None and self._shared.connections.open_in(self.worker) > fewest

    def _start_queue(self, materializer: Materializer, loop: asyncio.AbstractEventLoop) -> None:
        config = self.config
        assert self._queue is not None
        self._deliverer = RemoteDelivery(config, MailResolver(config.dns_servers))
        runner = QueueRunner(
            self._queue,
            self._deliverer,
            config.outbound,
            hostname=config.hostname,
            inject=self.inject,
            postmaster=f"postmaster@{self.services.postmaster_domain}",
        )
        self._runner = runner

        def wake_runner() -> None:  # called from a delivery thread
            loop.call_soon_threadsafe(runner.wake)

        def woken_by_another_worker() -> None:
            with contextlib.suppress(OSError):
                while self._shared.queue_wake_receive.recv(64):
                    pass
            runner.wake()

        materializer.on_queued = wake_runner
        loop.add_reader(self._shared.queue_wake_receive, woken_by_another_worker)
        runner.start()

    async def inject(self, data: bytes, recipients: list[str]) -> None:
        """Spool a message we generated ourselves (a DSN) with the null reverse-path (RFC 3464 §2, RFC 5321 §4.5.5):
        local recipients get it in their mailbox, remote ones through the queue."""
        accounts = self.services.accounts
        local: dict[LocalTarget, None] = {}
        remote: list[RemoteTarget] = []
        for address in recipients:
            localpart, _, domain = address.rpartition("@")
            ascii_name = ascii_domain(domain)
            if ascii_name is not None and accounts.is_local_domain(ascii_name):
                resolution = accounts.resolve(f"{localpart.lower()}@{ascii_name}")
                local.update(dict.fromkeys(LocalTarget(m.domain, m.localpart) for m in resolution.mailboxes))
                remote.extend(RemoteTarget(r) for r in resolution.remote)
                if not resolution.exists:
                    log.warning("dropping a notification for unknown local address <%s>", address)
            else:
                remote.append(RemoteTarget(address))
        if not local and not remote:
            return
        auth = self.services.auth
        if remote and auth is not None:
            # What leaves for other servers is DKIM-signed, bounces included (they come from our domain).
            data = await auth.sign_as(data, self.services.postmaster_domain) + data
        now = time.time()
        message = SpoolMessage(
            spool_id=new_spool_id(now),
            received=now,
            sender="",
            local=tuple(local),
            remote=tuple(remote),
            data=data,
            smtputf8=not all(r.address.isascii() for r in remote),
            body_8bit=not data.isascii(),  # a DSN returning an 8-bit original carries 8-bit parts
        )
        await self.services.spool.accept(message)

    # --- connection accounting ----------------------------------------------------------------------------------
    def admit(self, connection: ServedConnection) -> bool:
        if self.stopping:
            return False
        refused = self._shared.connections.admit(connection.client_ip, self.worker)
        if refused == "client":
            log.warning("connection limit reached for %s", connection.client_ip)
        if refused is not None:
            return False
        self._connections.add(connection)
        self._all_gone.clear()
        return True

    def release(self, connection: ServedConnection) -> None:
        self._shared.connections.release(connection.client_ip, self.worker)

    def forget(self, connection: ServedConnection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._all_gone.set()

    # --- shutdown -----------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        self.stopping = True
        for acceptor in self._acceptors:
            acceptor.close()
        if self._own_sockets and self._sockets is not None:
            for sock in self._sockets.values():
                sock.close()
        for connection in list(self._connections):
            connection.close_for_shutdown(force=False)
        if self._connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.timeouts.shutdown_grace):
                    await self._all_gone.wait()
        for connection in list(self._connections):
            connection.close_for_shutdown(force=True)
        await asyncio.sleep(0)
        if self._hub is not None:
            await self._hub.close()
        if self._runner is not None:
            asyncio.get_running_loop().remove_reader(self._shared.queue_wake_receive)
            await self._runner.stop()
        if self._deliverer is not None:
            await self._deliverer.close()
        if self._services is not None:
            await self._services.spool.close()
            if self._services.password_executor is not None:
                self._services.password_executor.shutdown(wait=False, cancel_futures=True)
        if self._accounts is not None:
            self._accounts.close()
        if self._queue is not None:
            self._queue.close()


async def run(
    config: Config,
    *,
    on_ready: Callable[[Config], None] | None = None,
    shared: SharedState | None = None,
    worker: int = 0,
    sockets: dict[ListenerConfig, socket.socket] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT in this process (one worker)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = MailServer(config, shared=shared, worker=worker, sockets=sockets)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    if on_ready is not None:
        on_ready(config)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    log.info("stopped")
    return 0


def setup_logging() -> None:
    # A line per message is logged: skip the caller lookup (a stack walk per record) and the fields never shown.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )


def recover_spools(config: Config) -> int:
    """Replay every spool journal (each worker's, and an older single-journal layout) before workers start."""
    config.mail_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    directories = [config.spool_dir]
    if config.spool_dir.is_dir():
        directories += sorted(p for p in config.spool_dir.iterdir() if p.is_dir())
    queue = QueueStore(config.queue_dir)
    try:
        materializer = Materializer(MaildirStore(config.mail_dir, config.hostname), queue, config.hostname)
        total = 0
        for directory in directories:
            total += Spool(Journal(directory), materializer, sync_stores=materializer.sync).recover()
    finally:
        queue.close()
    if total:
        log.info("recovered %d message(s) from the spool journal", total)
    return total


def _event_loop_run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run with uvloop when it is installed (optional dependency `fast`)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def serve(config: Config, *, on_ready: Callable[[Config], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT: `config.worker_count` processes sharing the listening sockets."""
    setup_logging()
    sockets = bind_listeners(config)
    try:
        recover_spools(config)
        count = config.worker_count
        shared = SharedState.create(config.limits, workers=count)
        if count == 1:
            return _event_loop_run(lambda: run(config, on_ready=on_ready, shared=shared, sockets=sockets))

        def worker_main(index: int, report_ready: Callable[[], None]) -> int:
            return _event_loop_run(
                lambda: run(config, on_ready=lambda _c: report_ready(), shared=shared, worker=index, sockets=sockets)
            )

        supervisor = Supervisor(
            count,
            worker_main,
            shutdown_grace=config.timeouts.shutdown_grace,
            on_worker_exit=shared.connections.forget_worker,
        )
        return supervisor.run(on_ready=None if on_ready is None else lambda: on_ready(config))
    finally:
        for sock in sockets.values():
            sock.close()
