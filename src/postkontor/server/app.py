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
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable

from postkontor.auth.passwords import PasswordHasher
from postkontor.config.model import Config
from postkontor.delivery.local import Materializer
from postkontor.delivery.remote import RemoteDelivery
from postkontor.dns.resolver import MailResolver
from postkontor.policy.throttle import FailureThrottle
from postkontor.queue.runner import QueueRunner
from postkontor.queue.store import QueueStore
from postkontor.server.session import Services, ascii_domain, new_spool_id
from postkontor.server.smtp import SMTPConnection, engine_settings
from postkontor.server.tls import server_context
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


class MailServer:
    def __init__(self, config: Config, *, hasher: PasswordHasher | None = None) -> None:
        self.config = config
        self.stopping = False
        self.tls_context: ssl.SSLContext | None = server_context(config.tls) if config.tls else None
        self._hasher = hasher or PasswordHasher()
        self._servers: list[asyncio.Server] = []
        self._connections: set[SMTPConnection] = set()
        self._per_ip: Counter[str] = Counter()
        self._open = 0
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
        maildir = MaildirStore(config.mail_dir, config.hostname)
        maildir.clean_tmp_all()
        self._queue = QueueStore(config.queue_dir)
        materializer = Materializer(maildir, self._queue, config.hostname)
        spool = Spool(Journal(config.spool_dir), materializer)
        self.recovered = await asyncio.get_running_loop().run_in_executor(None, spool.recover)
        if self.recovered:
            log.info("recovered %d message(s) from the spool journal", self.recovered)
        spool.start()
        limits = config.limits
        self._services = Services(
            config=config,
            accounts=accounts,
            maildir=maildir,
            spool=spool,
            hasher=self._hasher,
            password_slots=asyncio.Semaphore(limits.max_parallel_password_checks),
            ip_throttle=FailureThrottle(limit=limits.max_auth_failures, window=limits.auth_failure_window),
            account_throttle=FailureThrottle(limit=limits.max_auth_failures, window=limits.auth_failure_window),
            postmaster_domain=_postmaster_domain(config, accounts.list_domains()),
        )
        loop = asyncio.get_running_loop()
        self._deliverer = RemoteDelivery(config, MailResolver(config.dns_servers))
        runner = QueueRunner(
            self._queue,
            self._deliverer,
            config.outbound,
            hostname=config.hostname,
            inject=self.inject,
            postmaster=f"postmaster@{self._services.postmaster_domain}",
        )
        self._runner = runner

        def wake_runner() -> None:  # called from a delivery thread
            loop.call_soon_threadsafe(runner.wake)

        materializer.on_queued = wake_runner
        runner.start()
        for listener in config.listeners:
            settings = engine_settings(self, listener)
            implicit_tls = self.tls_context if listener.kind.value == "submissions" else None

            def factory(listener: object = listener, settings: object = settings) -> SMTPConnection:
                return SMTPConnection(self, listener, settings)  # type: ignore[arg-type]

            server = await loop.create_server(
                factory,
                host=listener.address,
                port=listener.port,
                ssl=implicit_tls,
                ssl_handshake_timeout=config.timeouts.tls_handshake if implicit_tls else None,
                reuse_address=True,
                backlog=1024,
            )
            self._servers.append(server)
            log.info("listening on %s", listener.label)

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
        now = time.time()
        message = SpoolMessage(
            spool_id=new_spool_id(now), received=now, sender="", local=tuple(local), remote=tuple(remote), data=data,
            smtputf8=not all(r.address.isascii() for r in remote),
            body_8bit=not data.isascii(),  # a DSN returning an 8-bit original carries 8-bit parts
        )
        await self.services.spool.accept(message)

    # --- connection accounting ----------------------------------------------------------------------------------
    def admit(self, connection: SMTPConnection) -> bool:
        limits = self.config.limits
        if self.stopping or self._open >= limits.max_connections:
            return False
        if self._per_ip[connection.client_ip] >= limits.max_connections_per_ip:
            log.warning("connection limit reached for %s", connection.client_ip)
            return False
        self._open += 1
        self._per_ip[connection.client_ip] += 1
        self._connections.add(connection)
        self._all_gone.clear()
        return True

    def release(self, connection: SMTPConnection) -> None:
        self._open -= 1
        self._per_ip[connection.client_ip] -= 1
        if self._per_ip[connection.client_ip] <= 0:
            del self._per_ip[connection.client_ip]

    def forget(self, connection: SMTPConnection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._all_gone.set()

    # --- shutdown -----------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        self.stopping = True
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close_for_shutdown(force=False)
        if self._connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.timeouts.shutdown_grace):
                    await self._all_gone.wait()
        for connection in list(self._connections):
            connection.close_for_shutdown(force=True)
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.stop()
        if self._deliverer is not None:
            await self._deliverer.close()
        if self._services is not None:
            await self._services.spool.close()
        if self._accounts is not None:
            self._accounts.close()
        if self._queue is not None:
            self._queue.close()


async def run(config: Config, *, on_ready: Callable[[Config], None] | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = MailServer(config)
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
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def serve(config: Config, *, on_ready: Callable[[Config], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT. Uses uvloop when it is installed (optional dependency `fast`)."""
    setup_logging()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(config, on_ready=on_ready))
    return uvloop.run(run(config, on_ready=on_ready))
