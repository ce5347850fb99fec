"""A private, throw-away Postfix instance for the side-by-side benchmark, configured entirely from here.

Everything lives under one work directory: <workdir>/etc (main.cf, master.cf), <workdir>/queue, <workdir>/data,
<workdir>/maillog and the Maildir <workdir>/mail/pkbench/. The system /etc/postfix is only read (postfix-files
and dynamicmaps.cf, through meta_directory), never written; the default queue is never touched. stop() leaves
no process behind. It listens on loopback only and, in relay mode, relays only to a loopback address.

Modes:
    local  accept mail for one domain (any local part) and deliver it into one Maildir, with virtual(8)
           (default) or local(8), both at destination concurrency 20. virtual(8) measured ~10% faster and
           ~7% cheaper in CPU (6 alternating runs of 5,000 messages): local(8) adds a passwd lookup and a
           luser_relay resolution per recipient;
    relay  accept mail for any recipient from 127.0.0.0/8 and relay it to host:port (an smtp-sink).

Durability is left as shipped: cleanup(8) fsyncs each queue file before the 250 reply, and local(8)/virtual(8)
fsync each Maildir file, just as the server it is compared with must.

Needs root (postfix start, useradd) and Debian's postfix package. Self-check and figures:

    python bench/postfix.py [--messages 2000] [--delivery virtual|local|both] [--no-relay]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

# bench/ is a scripts directory: run as a script (or imported by a sibling script), it is already on sys.path.
import files
import procstat

Mode = Literal["local", "relay"]
Delivery = Literal["virtual", "local"]

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"

DEFAULT_DELIVERY: Delivery = "virtual"
BENCH_USER = "pkbench"
_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# chroot is "n" throughout, unlike Debian's master.cf: a chrooted daemon would need copies of /etc/services,
# /etc/resolv.conf, /etc/localtime ... inside the private queue directory, which Debian's init script
# maintains only for the system instance. Process limits and max_idle are the upstream defaults.
_MASTER_CF = """\
# Written by bench/postfix.py; rewritten at every start.
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(RuntimeError):
    pass


def _loopback(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host)
    if not address.is_loopback:
        raise ValueError(f"{host} is not a loopback address; the benchmark must not reach the network")
    return address


def _meta_directory() -> Path:
    """Where Debian keeps postfix-files and dynamicmaps.cf, which postfix-script needs to check the instance."""
    default = Path("/etc/postfix")
    if (default / "postfix-files").is_file() and (default / "dynamicmaps.cf").is_file():
        return default
    listing = subprocess.run(["dpkg", "-L", "postfix"], capture_output=True, text=True, check=False).stdout
    for line in listing.splitlines():
        if line.endswith("/postfix-files") and (Path(line).parent / "dynamicmaps.cf").is_file():
            return Path(line).parent
    raise PostfixError("cannot find postfix-files and dynamicmaps.cf (is Debian's postfix package installed?)")


def ensure_bench_user(name: str = BENCH_USER) -> pwd.struct_passwd:
    """The unprivileged owner of the benchmark Maildir; created once as a system user, reused afterwards.

    Its home is /nonexistent on purpose: mail is delivered under the work directory (mail_spool_directory or
    virtual_mailbox_base), so the account does not depend on which work directory a run uses.
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    options = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    subprocess.run(
        ["useradd", *options, "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        check=False,
    )
    # Checked by lookup rather than by exit status, so that a concurrent creation counts as success.
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PostfixError(f"cannot create system user {name}") from None


def _ensure_traversable(directory: Path) -> list[Path]:
    """Adds search (not read) permission for others on ancestors that lack it; returns those changed.

    A private parent such as a 0700 postkontor data directory (/tmp/pkbench) would otherwise make master(8)
    fail with "open lock file .../data/master.lock: Permission denied", since Postfix daemons run as the
    postfix user. Search-only permission lets them reach paths they know without listing anything; the
    change is not undone at stop() because another instance may still depend on it.
    """
    changed: list[Path] = []
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IXOTH)
            changed.append(path)
    return changed


def _wait_gone(processes: dict[int, int | None], timeout: float) -> dict[int, int | None]:
    """Waits for processes (pid -> start ticks) to exit; returns those still alive after timeout."""

    def alive(pid: int, started: int | None) -> bool:
        # Same pid with another start time is a new process that merely reuses the number.
        return started is not None and procstat.start_ticks(pid) == started

    deadline = time.monotonic() + timeout
    remaining = {pid: started for pid, started in processes.items() if alive(pid, started)}
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = {pid: started for pid, started in remaining.items() if alive(pid, started)}
    return remaining


class PostfixInstance:
    """A private Postfix listening on host:port, with its config, queue, log and Maildir under workdir."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        mode: Mode = "local",
        host: str = "127.0.0.1",
        port: int = 32025,
        domain: str = "bench.test",
        delivery: Delivery = DEFAULT_DELIVERY,
        relay_to: tuple[str, int] | None = None,
        concurrency: int = 20,
        start_timeout: float = 30.0,
    ) -> None:
        self.address = _loopback(host)
        if mode == "relay":
            if relay_to is None:
                raise ValueError("relay mode needs relay_to=(host, port)")
            _loopback(relay_to[0])
        self.workdir = Path(workdir).resolve()
        self.mode: Mode = mode
        self.host = host
        self.port = port
        self.domain = domain
        self.delivery: Delivery = delivery
        self.relay_to = relay_to
        self.concurrency = concurrency
        self.start_timeout = start_timeout
        self.etc_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.mail_dir = self.workdir / "mail"
        self.maildir = self.mail_dir / BENCH_USER
        self.maillog = self.workdir / "maillog"
        self.opened_ancestors: list[Path] = []

    # -- configuration -------------------------------------------------------------------------------------

    def _listen(self) -> str:
        host = f"[{self.host}]" if self.address.version == 6 else self.host
        return f"{host}:{self.port}"

    def main_cf(self, user: pwd.struct_passwd) -> dict[str, str]:
        """main.cf as a dict, for the record and for tests; every value a benchmark depends on is explicit."""
        ipv6 = self.address.version == 6
        params: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "meta_directory": str(_meta_directory()),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            # Tells this instance's lines apart from the system Postfix's wherever they meet (e.g. syslog
            # before postlogd is up).
            "syslog_name": "postfix-pkbench",
            # Explicit, so that nothing resolves the machine's FQDN; it must differ from the relay target's
            # greeting name, or smtp(8) refuses with "mail for ... loops back to myself".
            "myhostname": f"postfix.{self.domain}",
            "mydomain": self.domain,
            "myorigin": "$mydomain",
            "inet_interfaces": self.host,
            "inet_protocols": "ipv6" if ipv6 else "ipv4",
            "mynetworks": "127.0.0.0/8 [::1]/128" if ipv6 else "127.0.0.0/8",
            "smtpd_banner": "$myhostname ESMTP Postfix (pkbench)",
            # Logging as in production: postlogd writes the file, so its cost is in the measurement.
            # maillog_file_prefixes defaults to /var and /dev/stdout and would refuse a file in the work dir.
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.workdir),
            # Loopback-only benchmark: no reverse lookups of clients, no MX lookups for the relay.
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            # Throughput: in_flow_delay (1s by default) would pause each smtpd whenever the queue manager
            # falls behind, i.e. throttle exactly the injection rate being measured.
            "in_flow_delay": "0",
            "default_process_limit": "100",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "smtpd_client_recipient_rate_limit": "0",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "biff": "no",
            "append_dot_mydomain": "no",
            "recipient_delimiter": "+",
            "alias_maps": "",
            "alias_database": "",
            "message_size_limit": str(50 * 1024 * 1024),
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
            "mydestination": "",
        }
        if self.mode == "relay" and self.relay_to is not None:
            relay_host, relay_port = self.relay_to
            bracketed = f"[{relay_host}]:{relay_port}"
            params |= {
                # Default relay restrictions already permit $mynetworks and nothing else.
                "relayhost": bracketed,
                "default_destination_concurrency_limit": str(self.concurrency),
                "smtp_destination_concurrency_limit": str(self.concurrency),
                "smtp_connection_cache_on_demand": "yes",
            }
        elif self.delivery == "virtual":
            params |= {
                "virtual_mailbox_domains": self.domain,
                "virtual_mailbox_base": str(self.mail_dir),
                # static: every local part of the domain goes to the one Maildir (the trailing / selects Maildir).
                "virtual_mailbox_maps": f"static:{BENCH_USER}/",
                "virtual_uid_maps": f"static:{user.pw_uid}",
                "virtual_gid_maps": f"static:{user.pw_gid}",
                "virtual_destination_concurrency_limit": str(self.concurrency),
            }
        else:
            params |= {
                "mydestination": self.domain,
                # Empty: accept any local part; local(8) hands unknown ones to luser_relay, i.e. the one user.
                "local_recipient_maps": "",
                "luser_relay": BENCH_USER,
                # A trailing / on the spool directory means Maildir <spool>/<user>/, independent of $HOME.
                "mail_spool_directory": f"{self.mail_dir}/",
                "home_mailbox": "",
                "mailbox_command": "",
                "forward_path": "",
                "local_destination_concurrency_limit": str(self.concurrency),
            }
        return params

    def _write_config(self, user: pwd.struct_passwd) -> None:
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# Written by bench/postfix.py; rewritten at every start."]
        lines += [f"{name} = {value}".rstrip() for name, value in self.main_cf(user).items()]
        (self.etc_dir / "main.cf").write_text("\n".join(lines) + "\n")
        (self.etc_dir / "master.cf").write_text(_MASTER_CF.format(listen=self._listen()))

    def _prepare_dirs(self, user: pwd.struct_passwd) -> None:
        # The postfix and pkbench users must traverse the work dir to reach the queue, data and mail directories.
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.opened_ancestors = _ensure_traversable(self.workdir.parent)
        # queue_directory must be root-owned; post-install (from postfix start) creates what is below it.
        self.queue_dir.mkdir(exist_ok=True)
        os.chown(self.queue_dir, 0, 0)
        os.chmod(self.queue_dir, 0o755)
        self.mail_dir.mkdir(exist_ok=True)
        os.chmod(self.mail_dir, 0o755)
        for sub in ("", "new", "cur", "tmp"):
            path = self.maildir / sub
            path.mkdir(exist_ok=True)
            os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, 0o700)

    def _check_config(self) -> None:
        # Postfix ignores a misspelt parameter with only a warning, which would silently void a tuning.
        result = subprocess.run(
            [POSTCONF, "-c", str(self.etc_dir), "-n"], capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0 or "warning" in result.stderr:
            raise PostfixError(f"postconf rejects {self.etc_dir / 'main.cf'}:\n{result.stderr}")

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MAIL_CONFIG": str(self.etc_dir)}
        return subprocess.run(
            [POSTFIX, "-c", str(self.etc_dir), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> PostfixInstance:
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix instance must be started as root")
        user = ensure_bench_user()
        self._prepare_dirs(user)
        # A master left over from a crashed run would hold the port and the queue: stop it first.
        if self.master_pid() is not None:
            self.stop()
        self._write_config(user)
        self._check_config()
        result = self._postfix("start", timeout=self.start_timeout + 30)
        if result.returncode != 0:
            self.stop()
            raise PostfixError(
                f"postfix start failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"--- {self.maillog}:\n{self.maillog_tail()}"
            )
        try:
            self._wait_greeting()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_greeting(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
                    greeting = sock.recv(512)
                    sock.sendall(b"QUIT\r\n")
                if greeting.startswith(b"220"):
                    return
                last_error = f"unexpected greeting {greeting!r}"
            except OSError as error:
                last_error = str(error)
            time.sleep(0.1)
        raise PostfixError(
            f"Postfix did not greet on {self._listen()} within {self.start_timeout}s ({last_error}):\n"
            f"{self.maillog_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stops the master and all its children; escalates to abort and SIGKILL if they do not go in time."""
        master = self.master_pid()
        if master is None:
            return
        # Remember the whole tree now: once master is gone its children would no longer be findable by ppid.
        processes = {pid: procstat.start_ticks(pid) for pid in procstat.tree_pids(master)}
        for command in ("stop", "abort"):
            try:
                self._postfix(command, timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                pass
            processes = _wait_gone(processes, timeout)
            if master not in processes:
                break
        for pid, started in processes.items():
            # Re-checked right before the kill, so that a recycled pid is never hit.
            if procstat.start_ticks(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        processes = _wait_gone(processes, 5.0)
        if processes:
            raise PostfixError(f"Postfix processes {sorted(processes)} survived SIGKILL")

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------------------------------------

    def master_pid(self) -> int | None:
        """The running master's pid (root of the tree for procstat), or None when this instance is down."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            # A stale pid file may name a recycled pid: only a master working in this queue directory counts
            # (master chdirs to queue_directory), not some other instance's.
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (FileNotFoundError, ProcessLookupError):
            return None
        return pid if comm == "master" and Path(cwd) == self.queue_dir else None

    def maildir_count(self) -> int:
        """Messages delivered into the Maildir's new/ (local mode)."""
        return files.count_files(self.maildir / "new")

    def wait_delivered(self, count: int, timeout: float, poll: float = 0.01) -> int:
        """Polls until at least `count` messages are in new/; returns the number seen. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        seen = self.maildir_count()
        while seen < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{seen} of {count} messages delivered after {timeout}s; queue: {self.queue_counts()}\n"
                    f"{self.maillog_tail()}"
                )
            time.sleep(poll)
            seen = self.maildir_count()
        return seen

    def queue_counts(self) -> dict[str, int]:
        """Queue files per queue; deferred (and hold) are hashed one level deep, hence the walk."""
        counts: dict[str, int] = {}
        for queue in _QUEUES:
            counts[queue] = sum(len(names) for _, _, names in os.walk(self.queue_dir / queue))
        return counts

    def queue_empty(self) -> bool:
        return not any(self.queue_counts().values())

    def wait_queue_empty(self, timeout: float, poll: float = 0.01) -> None:
        """Polls until no message is queued (relay mode: all relayed). TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not self.queue_empty():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"queue not empty after {timeout}s: {self.queue_counts()}\n{self.maillog_tail()}")
            time.sleep(poll)

    def reset(self) -> None:
        """Empties the Maildir between runs (the directories themselves stay, with their ownership)."""
        files.empty_maildir(self.maildir)

    def maillog_tail(self, lines: int = 30) -> str:
        return files.log_tail(self.maillog, lines, "(no maillog yet)")

    def status_counts(self) -> dict[str, int]:
        """Delivery outcomes logged so far (status=sent/deferred/bounced ...), read from the maillog."""
        counts: dict[str, int] = {}
        try:
            with open(self.maillog, "rb") as handle:
                for match in re.finditer(rb" status=(\w+)", handle.read()):
                    key = match.group(1).decode()
                    counts[key] = counts.get(key, 0) + 1
        except FileNotFoundError:
            pass
        return counts

    def wait_logged(self, count: int, status: str = "sent", timeout: float = 10.0) -> int:
        """Polls until the maillog holds `count` status=<status> lines; returns the number seen.

        Needed after wait_delivered()/wait_queue_empty(): the delivery agent logs through postlogd, a datagram
        service, so the last lines can reach the file a little after the message reached the Maildir.
        """
        deadline = time.monotonic() + timeout
        seen = self.status_counts().get(status, 0)
        while seen < count and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.status_counts().get(status, 0)
        return seen


# -- self-check ------------------------------------------------------------------------------------------------


def _smtp_source(port: int, messages: int, sessions: int, size: int, domain: str, timeout: float) -> None:
    command = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    command += ["-f", f"a@{domain}", "-t", f"u@{domain}", f"127.0.0.1:{port}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    # smtp-source exits 0 even after some SMTP errors, which it reports on stderr.
    if result.returncode != 0 or result.stderr.strip():
        raise PostfixError(f"smtp-source failed ({result.returncode}): {result.stdout}{result.stderr}")


def _measure(instance: PostfixInstance, args: argparse.Namespace, label: str) -> None:
    master = instance.master_pid()
    if master is None:
        raise PostfixError("Postfix is not running")
    instance.reset()
    sent_before = instance.status_counts().get("sent", 0)
    sampler = procstat.PeakSampler(master, max_duration=args.timeout, pss_interval=0.5).start()
    cpu_before = procstat.cpu_seconds(procstat.tree_pids(master))
    started = time.perf_counter()
    try:
        _smtp_source(instance.port, args.messages, args.sessions, args.size, instance.domain, args.timeout)
        accepted = time.perf_counter() - started
        if instance.mode == "relay":
            instance.wait_queue_empty(args.timeout)
        else:
            instance.wait_delivered(args.messages, args.timeout)
        done = time.perf_counter() - started
        cpu = procstat.cpu_seconds(procstat.tree_pids(master)) - cpu_before
    finally:
        peak = sampler.stop()
    sent = instance.wait_logged(sent_before + args.messages) - sent_before
    verb = "relayed" if instance.mode == "relay" else "delivered"
    print(
        f"{label}: {args.messages} x {args.size} B, {args.sessions} sessions: "
        f"accepted {args.messages / accepted:.0f} msg/s, {verb} {args.messages / done:.0f} msg/s "
        f"({sent} logged status=sent), CPU {cpu * 1000 / args.messages:.2f} s/1000 msgs, "
        f"peak RSS {peak / 2**20:.1f} MiB (PSS {sampler.peak_pss / 2**20:.1f} MiB, {sampler.samples} samples)"
    )
    if sent != args.messages:
        raise PostfixError(f"{sent} status=sent lines for {args.messages} messages:\n{instance.maillog_tail()}")


def _sink(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """An smtp-sink on 127.0.0.1:port; -u is mandatory as root, since it refuses to keep root privileges."""
    # The child keeps its own descriptor; ours is closed as soon as it is started.
    with open(workdir / "smtp-sink.out", "wb") as log:
        sink = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sink.poll() is not None:
            raise PostfixError(f"smtp-sink exited: {(workdir / 'smtp-sink.out').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return sink
        except OSError:
            time.sleep(0.05)
    sink.kill()
    sink.wait()
    raise PostfixError("smtp-sink did not start listening")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pkbench/postfix"))
    parser.add_argument("--port", type=int, default=32025)
    parser.add_argument("--sink-port", type=int, default=32026)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--delivery", choices=["virtual", "local", "both"], default=DEFAULT_DELIVERY)
    parser.add_argument("--no-relay", action="store_true")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound for each phase, in seconds")
    args = parser.parse_args()
    deliveries: list[Delivery] = ["virtual", "local"] if args.delivery == "both" else [args.delivery]
    for delivery in deliveries:
        with PostfixInstance(args.workdir, port=args.port, delivery=delivery) as instance:
            _measure(instance, args, f"local mode ({delivery}(8))")
    if args.no_relay:
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    sink = _sink(args.sink_port, args.workdir)
    try:
        relay_to = ("127.0.0.1", args.sink_port)
        with PostfixInstance(args.workdir, mode="relay", port=args.port, relay_to=relay_to) as instance:
            _measure(instance, args, "relay mode -> smtp-sink")
    finally:
        sink.terminate()
        try:
            sink.wait(10)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()


if __name__ == "__main__":
    main()
