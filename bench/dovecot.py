"""A private, throw-away Dovecot for the IMAP benchmark: the reference postkontor's IMAP server is compared with.

Everything lives under one work directory: <workdir>/dovecot.conf (written here, complete: nothing from
/etc/dovecot is included), <workdir>/run (base_dir), <workdir>/state, <workdir>/dovecot.log, the passwd-file
<workdir>/users and the Maildir <workdir>/mail/<localpart>/. The system's Dovecot service and /etc/dovecot are
never read or touched. It listens on loopback only, and stop() leaves no process behind.

Settings that differ from Dovecot's defaults, and why:
* The users come from a passwd-file with PLAIN passwords (a hash here would measure a KDF, not IMAP; the
  comparison notes that postkontor checks an Argon2id hash at every LOGIN).
* Mail and the unprivileged services run as the benchmark's system user `pkbench` (bench/postfix.py makes it),
  so no mail user or group has to exist; first_valid_uid lets a system uid in.
* imap-login runs in Dovecot's documented "high-performance" mode (service_count = 0, one login process per
  core, each proxying many TLS connections), as one would run it for thousands of connections; the shipped
  mode forks a login process per connection that stays for the whole TLS session. imap itself is as shipped:
  one process per connection.
* Process, client and per-user-per-IP connection limits are raised to the number of connections measured.

Needs root and Debian's dovecot-imapd (`apt-get install dovecot-imapd`). Self-check:

    python bench/dovecot.py --workdir /tmp/pkbench-dovecot --cert CERT.pem --key KEY.pem
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from types import TracebackType

import files
import procstat
from postfix import BENCH_USER, ensure_bench_user

DOVECOT = "/usr/sbin/dovecot"
IMAP_BINARY = "/usr/lib/dovecot/imap"


class DovecotError(RuntimeError):
    pass


def available() -> bool:
    return Path(DOVECOT).exists() and Path(IMAP_BINARY).exists()


_CONFIG = """\
# Written by bench/dovecot.py; rewritten at every start. Complete on its own: nothing from /etc/dovecot.
base_dir = {workdir}/run
state_dir = {workdir}/state
instance_name = pkbench-dovecot
protocols = imap
listen = {host}
log_path = {workdir}/dovecot.log
info_log_path = {workdir}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
default_internal_user = {user}
default_internal_group = {user}
default_login_user = {user}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{workdir}/mail/%n
default_process_limit = {processes}
default_client_limit = {clients}
default_vsz_limit = 1G
mail_max_userip_connections = {clients}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {workdir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {workdir}/users
}}

service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cpus}
  process_limit = {cpus}
  client_limit = {clients}
}}
service imap {{
  process_limit = {processes}
}}
service anvil {{
  client_limit = {anvil_clients}
}}
service auth {{
  client_limit = {anvil_clients}
}}
service stats {{
  client_limit = {anvil_clients}
}}
"""


class DovecotInstance:
    """Dovecot with its config, state, log and Maildirs under `workdir`; IMAP on host:imap_port (STARTTLS) and
    host:imaps_port (implicit TLS)."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        cert: Path,
        key: Path,
        imap_port: int,
        imaps_port: int,
        host: str = "127.0.0.1",
        users: dict[str, str] | None = None,
        connections: int = 1000,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.cert, self.key = Path(cert).resolve(), Path(key).resolve()
        self.host = host
        self.imap_port, self.imaps_port = imap_port, imaps_port
        self.users = users or {"demo@bench.test": "demo"}
        self.connections = connections
        self.start_timeout = start_timeout
        self.config_file = self.workdir / "dovecot.conf"
        self.log_file = self.workdir / "dovecot.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.owner: tuple[int, int] = (0, 0)
        self._log_offset = 0

    def maildir(self, user: str) -> Path:
        return self.workdir / "mail" / user.partition("@")[0]

    # -- setup ---------------------------------------------------------------------------------------------------

    def config(self) -> str:
        account = ensure_bench_user()
        self.owner = (account.pw_uid, account.pw_gid)
        cpus = max(1, os.cpu_count() or 1)
        # One imap process per connection, plus headroom for the measuring session and reconnects.
        processes = self.connections + 100
        return _CONFIG.format(
            workdir=self.workdir,
            host=self.host,
            cert=self.cert,
            key=self.key,
            user=BENCH_USER,
            uid=account.pw_uid,
            gid=account.pw_gid,
            imap_port=self.imap_port,
            imaps_port=self.imaps_port,
            cpus=cpus,
            processes=processes,
            clients=processes,
            # anvil, auth and stats hear from every login and imap process: Dovecot's own sizing rule.
            anvil_clients=2 * processes + 100,
        )

    def prepare(self) -> None:
        """Config, passwd-file and empty Maildirs; the work directory is reachable (not readable) by pkbench."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        for parent in self.workdir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, (mode & 0o7777) | 0o001)
        self.config_file.write_text(self.config())
        uid, gid = self.owner
        lines = [
            f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{self.workdir}/mail::" for user, password in self.users.items()
        ]
        users_file = self.workdir / "users"
        users_file.write_text("\n".join(lines) + "\n")
        # Dovecot's auth process runs as pkbench (default_internal_user) and reads the file itself.
        os.chown(users_file, 0, gid)
        os.chmod(users_file, 0o640)
        (self.workdir / "run").mkdir(exist_ok=True)
        (self.workdir / "state").mkdir(exist_ok=True)
        mail = self.workdir / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, uid, gid)
        for user in self.users:
            self.empty_mailbox(user)

    def empty_mailbox(self, user: str) -> Path:
        """A fresh Maildir for `user` (its index files, dovecot.index*, go with it: the next SELECT is cold)."""
        maildir = self.maildir(user)
        if maildir.exists():
            shutil.rmtree(maildir)
        for sub in ("", "cur", "new", "tmp"):
            (maildir / sub).mkdir(mode=0o700)
            os.chown(maildir / sub, *self.owner)
        return maildir

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> DovecotInstance:
        if self.process is not None and self.process.poll() is None:
            raise DovecotError("already running")
        if not self.config_file.exists():
            self.prepare()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        check = subprocess.run(
            [DOVECOT, "-c", str(self.config_file), "-n"], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise DovecotError(f"dovecot rejects {self.config_file}:\n{check.stderr.strip()}")
        with open(self.workdir / "dovecot.stderr", "ab") as errors:
            # -F: stays in the foreground, so that this is the master's pid; a session of its own keeps a Ctrl-C
            # meant for the benchmark from reaching it before the benchmark's cleanup stops it.
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=errors,
                stderr=errors,
                start_new_session=True,
            )
        try:
            self._wait_greeting()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_greeting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise DovecotError(f"dovecot exited:\n{self.log_tail()}")
            try:
                with (
                    socket.create_connection((self.host, self.imaps_port), timeout=2.0) as raw,
                    context.wrap_socket(raw) as sock,
                ):
                    if sock.recv(512).startswith(b"* OK"):
                        sock.sendall(b"a LOGOUT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise DovecotError(f"dovecot did not greet on {self.host}:{self.imaps_port} in time:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """`dovecot stop` for this config (never the system's), then SIGKILL for whatever of the tree is left."""
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                tree = {pid: procstat.start_ticks(pid) for pid in procstat.tree_pids(process.pid)}
                subprocess.run(
                    [DOVECOT, "-c", str(self.config_file), "stop"], capture_output=True, timeout=30, check=False
                )
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
                for pid, started in tree.items():
                    if pid != process.pid and started is not None and procstat.start_ticks(pid) == started:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
        finally:
            self.process = None

    def __enter__(self) -> DovecotInstance:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        return files.log_tail(self.log_file, lines, "(no dovecot.log)")

    def log_problems(self, limit: int = 20) -> list[str]:
        """Warnings, errors and fatal lines logged since the last start."""
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            return []
        marks = (" Warning: ", " Error: ", " Fatal: ", " Panic: ")
        return [line for line in text.splitlines() if any(mark in line for mark in marks)][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pkbench-dovecot"))
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--port-base", type=int, default=46000)
    args = parser.parse_args()
    if not available():
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    instance = DovecotInstance(
        args.workdir, cert=args.cert, key=args.key, imap_port=args.port_base + 143, imaps_port=args.port_base + 993
    )
    instance.prepare()
    with instance:
        print(f"dovecot (pid {instance.pid}) greets on {instance.host}:{instance.imaps_port}")
        print("\n".join(instance.log_problems()) or "no warnings logged")


if __name__ == "__main__":
    main()
