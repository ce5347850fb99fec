"""postkontor against Postfix on this machine, measured in one invocation: `python bench/run.py`.

Both servers run side by side on loopback for the whole benchmark; every measurement is taken for Postfix and
postkontor back to back (the order alternating between repeats), repeated --repeats times, and reported as the
median, so that the slow drift of a shared machine (easily +-25% here) hits both alike. Scenarios:

    local     smtp-source -> server -> Maildir: 1 KiB and 100 KiB, 1/10/50 sessions, connection reused (-d) or
              one connection per message. Accepted msg/s (smtp-source's wall time), delivered msg/s (until the
              last file is in the Maildir), server CPU seconds per 1,000 messages, peak RSS and PSS of the tree.
    latency   the pipelining Python client (smtp_load.py), 10 sessions, reused connections, 1 KiB, DATA and
              BDAT: p50/p99 from the end of the data to the 250.
    ceiling   the same smtp-source load (1 KiB, 10 sessions, reuse) against smtp-sink, which stores nothing.
    outbound  smtp-source -> server -> SMTP to an smtp-sink "MX" (postkontor: alias to a remote domain whose MX
              a loopback DNS server names; Postfix: relayhost): msg/s until the sink has them all, CPU/1000.
    idle      10,000 idle connections to postkontor (Postfix forks a process per connection, not comparable):
              server RSS growth per connection.
    imap      a 10,000-message INBOX over IMAPS against a private Dovecot: SELECT (adopting the new messages),
              header FETCH cold and warm, four SEARCHes, STORE; server CPU; message files the warm FETCH opens.
    imap-idle 1,000 IMAPS sessions in IDLE (and, for the TLS share, as many bare TCP and bare TLS connections):
              RSS/PSS growth per session; wake latency of a sample when a message arrives.

    python bench/run.py [--quick] [--repeats 3] [--only local,latency,...] [--json PATH] [--workdir DIR]

Needs root (Postfix, Dovecot), Debian's postfix package (smtp-source, smtp-sink) and postkontor installed; the IMAP
scenarios need neither Postfix nor root, and compare with Dovecot (dovecot-imapd) when it is there. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import dovecot
import files
import idle
import imap_mailbox
import procstat
import smtp_load
from imap_scenario import ImapServer, run_idle, run_mailbox, wipe_postkontor_mailbox
from loopdns import LoopbackDNS, mx_zone
from pkserver import PostkontorInstance
from postfix import POSTCONF, POSTFIX, SMTP_SINK, SMTP_SOURCE, PostfixInstance
from sink import SmtpSink

import postkontor

PF, PK, SINK, DC = "Postfix", "postkontor", "smtp-sink", "Dovecot"
SCENARIOS = ("local", "latency", "ceiling", "outbound", "idle", "imap", "imap-idle")
POSTFIX_SCENARIOS = ("local", "latency", "ceiling", "outbound")
DOVECOT_IDLE_MAX = 2000  # Dovecot runs an imap process per session: beyond this it would need gigabytes
DOMAIN = "bench.test"
REMOTE_DOMAIN = "sink.test"
SENDER = "load@client.bench.test"
RELAY_ALIAS = f"relay@{DOMAIN}"
REMOTE_RECIPIENT = f"user@{REMOTE_DOMAIN}"
IMAP_USER, IMAP_PASSWORD = f"demo@{DOMAIN}", "demo"  # what `postkontor dev` creates
IDLE_TARGET = 50 * 1024  # bytes per idle connection, from the issue
MIB = 2**20
# Other processes' CPU during a run (in cores, the sampler thread included) above which the run is flagged.
NOISY_SHARE = 0.25


_T = TypeVar("_T")


class BenchError(RuntimeError):
    pass


# -- what is measured ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    scenario: str
    label: str
    messages: int
    size: int = 1024
    sessions: int = 10
    reuse: bool = True
    bdat: bool = False


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB"


def plan(quick: bool, imap_idle: int | None = None) -> dict[str, list[Case]]:
    """The cases of every scenario. Counts make a full run take ~2-5 s on a 2-core machine; --quick ~0.2 s."""

    def local_count(size: int, sessions: int, reuse: bool) -> int:
        if size >= 100 * 1024:
            count = 100 if quick else (600 if sessions == 1 else 1000)
        else:
            count = 200 if quick else (1500 if sessions == 1 else 4000)
            if not reuse and not quick:
                count = count * 3 // 4
        # smtp-source would otherwise open sessions that have nothing to send.
        return max(count, sessions)

    local = [
        Case(
            f"local/{size // 1024}k/s{sessions}/{'reuse' if reuse else 'noreuse'}",
            "local",
            f"{_size_label(size)}, {sessions} session{'s' if sessions > 1 else ''}, {'reuse' if reuse else 'conn/msg'}",
            local_count(size, sessions, reuse),
            size,
            sessions,
            reuse,
        )
        for size in (1024, 100 * 1024)
        for sessions in (1, 10, 50)
        for reuse in (True, False)
    ]
    load = 200 if quick else 2000
    return {
        "local": local,
        "latency": [
            Case("latency/data", "latency", "1 KiB, 10 sessions, DATA", load),
            Case("latency/bdat", "latency", "1 KiB, 10 sessions, BDAT", load, bdat=True),
        ],
        "ceiling": [Case("ceiling", "ceiling", "1 KiB, 10 sessions, reuse", 2000 if quick else 30000)],
        "outbound": [Case("outbound", "outbound", "1 KiB, 10 sessions, reuse", load)],
        "idle": [Case("idle", "idle", "idle connections", 1000 if quick else 10000, sessions=0)],
        # messages in the INBOX; for imap-idle, sessions (the INBOX they select holds `size` messages).
        "imap": [Case("imap", "imap", "IMAPS, one session", 200 if quick else 10000, size=0, sessions=1)],
        "imap-idle": [
            Case(
                "imap-idle",
                "imap-idle",
                "IMAPS IDLE",
                imap_idle or (20 if quick else 1000),
                size=20 if quick else 1000,
                sessions=0,
            )
        ],
    }


# -- the servers, as the runs see them -----------------------------------------------------------------------------


@dataclass
class Target:
    """One server as a run drives it: where to send, whom to send to, how to see progress and reset."""

    name: str
    port: int
    recipient: str
    pid: Callable[[], int | None]
    delivered: Callable[[], int]
    reset: Callable[[], None]
    drained: Callable[[float], None] = lambda timeout: None
    problems: Callable[[], list[str]] = list
    host: str = "127.0.0.1"


def imap_target(server: ImapServer) -> Target:
    """An IMAP server as record() sees it: a name and its log; there is no delivery count to wait for."""
    return Target(
        server.name, server.imaps_port, server.user, server.pid, lambda: 0, lambda: None, problems=server.problems
    )


@dataclass
class Settings:
    quick: bool
    repeats: int
    workdir: Path
    port_base: int
    run_timeout: float
    pause: float
    dovecot: bool = False  # the IMAP scenarios compare with a private Dovecot
    imap_idle: int | None = None  # IDLE sessions held (default: 1,000; 20 with --quick)

    @property
    def pk_port_base(self) -> int:
        return self.port_base

    @property
    def postfix_port(self) -> int:
        return self.port_base + 1025

    @property
    def sink_port(self) -> int:
        return self.port_base + 1026

    @property
    def relay_port(self) -> int:
        return self.port_base + 1027

    @property
    def dns_port(self) -> int:
        return self.port_base + 1053

    @property
    def dovecot_port_base(self) -> int:
        return self.port_base + 1000


@dataclass
class Results:
    """Every run's figures: cases[key]["runs"][server] is a list with one dict per repeat ({"error": ...} if failed)."""

    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)

    def add(self, case: Case, server: str, repeat: int, figures: dict[str, Any]) -> None:
        entry = self.cases.setdefault(case.key, {"case": asdict(case), "runs": {}})
        runs: list[dict[str, Any]] = entry["runs"].setdefault(server, [])
        runs.append({"repeat": repeat, **figures})

    def values(self, key: str, server: str, metric: str) -> list[float]:
        runs = self.cases.get(key, {}).get("runs", {}).get(server, [])
        return [float(run[metric]) for run in runs if "error" not in run and metric in run]

    def median(self, key: str, server: str, metric: str) -> float | None:
        values = self.values(key, server, metric)
        return statistics.median(values) if values else None

    def pair_ratios(self, key: str, metric: str, reference: str = PF) -> list[float]:
        """postkontor / reference within each repeat (the two runs taken back to back)."""
        runs = self.cases.get(key, {}).get("runs", {})
        by_repeat: dict[int, dict[str, float]] = {}
        for server in (reference, PK):
            for run in runs.get(server, []):
                if "error" not in run and metric in run:
                    by_repeat.setdefault(run["repeat"], {})[server] = float(run[metric])
        return [pair[PK] / pair[reference] for pair in by_repeat.values() if len(pair) == 2 and pair[reference] > 0]


# -- building blocks -------------------------------------------------------------------------------------------


def smtp_source(
    port: int, *, messages: int, sessions: int, size: int, reuse: bool, recipient: str, timeout: float
) -> float:
    """Runs smtp-source; returns its wall time. It exits 0 even after SMTP errors, which it prints on stderr."""
    command = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size), *(["-d"] if reuse else [])]
    command += ["-f", SENDER, "-t", recipient, f"127.0.0.1:{port}"]
    started = time.perf_counter()
    # subprocess.run kills smtp-source if the timeout (or a Ctrl-C) interrupts it.
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or result.stderr.strip():
        raise BenchError(f"smtp-source exited {result.returncode}: {(result.stdout + result.stderr).strip()[:500]}")
    return elapsed


def wait_count(
    target: Target, progress: Callable[[], int], wanted: int, deadline: float, what: str, stall: float = 30.0
) -> int:
    """Polls until `wanted` messages are through; fails at the deadline, or early when nothing moves for `stall`
    seconds (a stuck server should cost half a minute, not the whole run timeout)."""
    seen = progress()
    checked = moved = time.monotonic()
    while seen < wanted:
        now = time.monotonic()
        if now >= deadline or now - moved > stall:
            why = "by the deadline" if now >= deadline else f"(none for {stall:.0f} s)"
            raise BenchError(f"{target.name}: only {seen} of {wanted} messages {what} {why}")
        if now - checked > 0.5:
            checked = now
            if target.pid() is None:
                raise BenchError(f"{target.name} is no longer running; {seen} of {wanted} {what}")
        time.sleep(0.01)
        latest = progress()
        if latest != seen:
            seen, moved = latest, time.monotonic()
    return seen


def quiesce(target: Target, timeout: float = 30.0) -> None:
    """After a failed run: lets a backlog finish (the delivered count stops moving) before the Maildir is emptied."""
    deadline = time.monotonic() + timeout
    last, stable_since = target.delivered(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < 2.0:
        time.sleep(0.2)
        now = target.delivered()
        if now != last:
            last, stable_since = now, time.monotonic()
    target.reset()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from the first line of /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait.
    return sum(values[index] for index in (0, 1, 2, 5, 6, 7)) / _CLOCK_TICKS


def kernel_thread_cpu_seconds() -> float:
    """CPU of the kernel's own threads (children of kthreadd, pid 2): writeback, journal commits and the like,
    which a server's writes and fsyncs cause but which is charged to no user process."""
    return procstat.cpu_seconds(procstat.tree_pids(2))


def own_cpu_seconds() -> float:
    """This process and its reaped children (smtp-source): the load generator's side of the CPU."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def measured(
    target: Target,
    messages: int,
    inject: Callable[[float], Any],
    progress: Callable[[], int],
    timeout: float,
    what: str = "delivered",
) -> tuple[dict[str, float], Any]:
    """One timed run: CPU and memory of the target's process tree from before injection until `progress` reached
    `messages`. Returns the figures and whatever `inject` returned."""
    pid = target.pid()
    if pid is None:
        raise BenchError(f"{target.name} is not running")
    baseline = progress()
    sampler = procstat.PeakSampler(pid, interval=0.05, max_duration=timeout + 60, pss_interval=0.5).start()
    try:
        deadline = time.monotonic() + timeout
        cpu_before = procstat.cpu_seconds(procstat.tree_pids(pid))
        host_before, own_before, kernel_before = host_busy_seconds(), own_cpu_seconds(), kernel_thread_cpu_seconds()
        started = time.perf_counter()
        injected = inject(timeout)
        accepted = time.perf_counter() - started
        seen = wait_count(target, lambda: progress() - baseline, messages, deadline, what)
        done = time.perf_counter() - started
        cpu = procstat.cpu_seconds(procstat.tree_pids(pid)) - cpu_before
        kernel = kernel_thread_cpu_seconds() - kernel_before
        # What neither the server, the kernel's threads nor the load generator used: other tenants, i.e. noise.
        other = host_busy_seconds() - host_before - (own_cpu_seconds() - own_before) - cpu - kernel
    finally:
        peak_rss = sampler.stop()
    if seen != messages:
        raise BenchError(f"{target.name}: {seen} messages {what} for {messages} sent (duplicates?)")
    return {
        "messages": messages,
        "accept_s": accepted,
        "done_s": done,
        "accepted_per_s": messages / accepted,
        f"{what}_per_s": messages / done,
        "cpu_s": cpu,
        "cpu_per_1000_s": cpu * 1000 / messages,
        "peak_rss_mib": peak_rss / MIB,
        "peak_pss_mib": sampler.peak_pss / MIB,
        "kernel_threads_cpu_per_1000_s": kernel * 1000 / messages,
        "other_cpu_share": max(0.0, other) / done,
    }, injected


# -- the benchmark ---------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, settings: Settings, stack: contextlib.ExitStack) -> None:
        self.settings = settings
        self.stack = stack
        self.results = Results()
        self.cases = plan(settings.quick, settings.imap_idle)
        self._postfix: PostfixInstance | None = None
        self._postkontor: PostkontorInstance | None = None
        self._dns: LoopbackDNS | None = None
        self._dovecot: dovecot.DovecotInstance | None = None

    # -- servers, started on first use and stopped by the ExitStack --

    def dns(self) -> LoopbackDNS:
        if self._dns is None:
            zone = mx_zone(REMOTE_DOMAIN, "127.0.0.1")
            self._dns = self.stack.enter_context(LoopbackDNS(zone, port=self.settings.dns_port))
        return self._dns

    def postkontor(self) -> PostkontorInstance:
        if self._postkontor is None:
            instance = PostkontorInstance(
                self.settings.workdir / "postkontor",
                port_base=self.settings.pk_port_base,
                domain=DOMAIN,
                dns=self.dns().address,
            )
            self.log(f"creating postkontor data directory {instance.data_dir}")
            instance.create()
            # The default per-IP limit (50) leaves no headroom for 50 sessions from one address whose previous
            # connections may still be closing, and the idle test needs 10,000; the outbound "MX" is the sink,
            # reached with as many parallel connections as the Postfix it is compared with (20, Postfix's default).
            connections = max(case.messages for case in self.cases["idle"] + self.cases["imap-idle"]) + 1000
            instance.configure(
                limits={"max_connections": connections, "max_connections_per_ip": connections},
                outbound={"port": self.settings.sink_port, "max_connections_per_domain": 20},
            )
            instance.add_alias(RELAY_ALIAS, REMOTE_RECIPIENT)
            self.stack.callback(instance.stop)
            instance.start()
            self._postkontor = instance
            self.log(f"postkontor serving on {instance.host}:{instance.port} (pid {instance.pid})")
        elif self._postkontor.pid is None:
            self.results.errors.append("postkontor had exited; restarted it")
            self._postkontor.stop()
            self._postkontor.start()
        return self._postkontor

    def postfix(self) -> PostfixInstance:
        if self._postfix is None:
            instance = PostfixInstance(
                self.settings.workdir / "postfix", port=self.settings.postfix_port, domain=DOMAIN
            )
            self.log(f"starting Postfix on 127.0.0.1:{instance.port}")
            self.stack.enter_context(instance)
            self._postfix = instance
        return self._postfix

    def dovecot(self) -> dovecot.DovecotInstance:
        if self._dovecot is None:
            tls = self.postkontor().data_dir / "tls"
            base = self.settings.dovecot_port_base
            sessions = max(case.messages for case in self.cases["imap-idle"])
            instance = dovecot.DovecotInstance(
                self.settings.workdir / "dovecot",
                cert=tls / "cert.pem",
                key=tls / "key.pem",
                imap_port=base + 143,
                imaps_port=base + 993,
                users={IMAP_USER: IMAP_PASSWORD},
                connections=min(sessions, DOVECOT_IDLE_MAX),
            )
            instance.prepare()
            self.stack.callback(instance.stop)
            self._dovecot = instance
            self.log(f"Dovecot (the IMAP reference) will serve on 127.0.0.1:{instance.imaps_port}")
        return self._dovecot

    def imap_servers(self) -> list[ImapServer]:
        pk = self.postkontor()
        servers = [
            ImapServer(
                PK,
                pk.host,
                pk.port_base + 143,
                pk.port_base + 993,
                IMAP_USER,
                IMAP_PASSWORD,
                pk.maildir,
                None,
                lambda: pk.pid,
                pk.start,
                pk.stop,
                functools.partial(wipe_postkontor_mailbox, pk.maildir),
                pk.log_problems,
                pk.nofile_limit,
                smtp_port=pk.port,
            )
        ]
        if self.settings.dovecot:
            dc = self.dovecot()
            servers.append(
                ImapServer(
                    DC,
                    dc.host,
                    dc.imap_port,
                    dc.imaps_port,
                    IMAP_USER,
                    IMAP_PASSWORD,
                    dc.maildir(IMAP_USER),
                    dc.owner,
                    lambda: dc.pid,
                    dc.start,
                    dc.stop,
                    functools.partial(dc.empty_mailbox, IMAP_USER),
                    dc.log_problems,
                )
            )
        return servers

    def pk_target(self, recipient: str | None = None) -> Target:
        instance = self.postkontor()
        return Target(
            PK,
            instance.port,
            recipient or instance.demo,
            lambda: instance.pid,
            instance.maildir_count,
            instance.reset,
            instance.wait_queue_empty,
            instance.log_problems,
        )

    def pf_target(self, instance: PostfixInstance | None = None, recipient: str | None = None) -> Target:
        postfix = instance or self.postfix()
        # Postfix takes any local part of the domain; the same address as for postkontor keeps the load identical.
        return Target(
            PF,
            postfix.port,
            recipient or f"demo@{DOMAIN}",
            postfix.master_pid,
            postfix.maildir_count,
            postfix.reset,
            postfix.wait_queue_empty,
        )

    # -- helpers --

    def log(self, text: str) -> None:
        print(text, flush=True)

    def ordered(self, targets: Sequence[_T], repeat: int) -> list[_T]:
        # Alternating who goes first cancels a systematic advantage of running second (warm caches) or first.
        return list(targets) if repeat % 2 == 0 else list(reversed(targets))

    def record(self, case: Case, target: Target, repeat: int, run: Callable[[], dict[str, Any]]) -> None:
        try:
            figures = run()
        # RuntimeError covers BenchError and the helpers' own errors; TimeoutError is an OSError.
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            message = f"{case.key} {target.name} repeat {repeat + 1}: {type(error).__name__}: {error}"
            self.results.errors.append(message)
            self.results.add(case, target.name, repeat, {"error": str(error)})
            self.log(f"  FAILED {message}")
            quiesce(target)
            return
        if figures.get("other_cpu_share", 0.0) > NOISY_SHARE:
            self.results.noisy.append(
                f"{case.key} {target.name} repeat {repeat + 1}: {figures['other_cpu_share']:.2f} CPUs used by "
                "other processes"
            )
        problems = target.problems()
        if problems:
            figures["log_problems"] = problems
            self.results.notes.append(f"{case.key} {target.name} repeat {repeat + 1}: log says {problems[0]}")
        self.results.add(case, target.name, repeat, figures)
        shown = ", ".join(f"{name} {figures[name]:.4g}" for name in SHOWN if name in figures)
        self.log(f"  [{repeat + 1}/{self.settings.repeats}] {case.key:<22} {target.name:<10} {shown}")
        time.sleep(self.settings.pause)

    def warm_up(
        self, targets: Sequence[Target], size: int = 1024, recipient_of: Callable[[Target], str] | None = None
    ) -> None:
        """An unmeasured run per server first: starts Postfix's daemons, fills caches, lets Python warm up."""
        count = 50 if self.settings.quick else 300
        for target in targets:
            before = target.delivered()
            recipient = recipient_of(target) if recipient_of else target.recipient
            try:
                smtp_source(
                    target.port,
                    messages=count,
                    sessions=10,
                    size=size,
                    reuse=True,
                    recipient=recipient,
                    timeout=self.settings.run_timeout,
                )
            except BenchError as error:
                self.results.errors.append(f"warm-up of {target.name} failed: {error}")
            deadline = time.monotonic() + 30
            while target.delivered() < before + count and time.monotonic() < deadline:
                time.sleep(0.05)
            target.reset()

    # -- scenarios --

    def run_local(self, target: Target, case: Case) -> dict[str, Any]:
        target.reset()

        def inject(timeout: float) -> float:
            return smtp_source(
                target.port,
                messages=case.messages,
                sessions=case.sessions,
                size=case.size,
                reuse=case.reuse,
                recipient=target.recipient,
                timeout=timeout,
            )

        figures, _ = measured(target, case.messages, inject, target.delivered, self.settings.run_timeout)
        target.reset()
        return figures

    def scenario_local(self) -> None:
        targets = [self.pf_target(), self.pk_target()]
        self.warm_up(targets)
        for repeat in range(self.settings.repeats):
            for case in self.cases["local"]:
                for target in self.ordered(targets, repeat):
                    self.record(case, target, repeat, functools.partial(self.run_local, target, case))

    def run_latency(self, target: Target, case: Case) -> dict[str, Any]:
        target.reset()

        def inject(timeout: float) -> smtp_load.LoadResult:
            result = smtp_load.run_load(
                target.host,
                target.port,
                recipient=target.recipient,
                sender=SENDER,
                sessions=case.sessions,
                messages=case.messages,
                size=case.size,
                reuse=case.reuse,
                bdat=case.bdat,
                timeout=timeout,
            )
            if result.errors:
                raise BenchError(f"{len(result.errors)} sessions failed, first: {result.errors[0]}")
            return result

        figures, load = measured(target, case.messages, inject, target.delivered, self.settings.run_timeout)
        target.reset()
        assert isinstance(load, smtp_load.LoadResult)
        figures["accepted_per_s"] = load.rate
        figures |= {"p50_ms": load.p50 * 1000, "p99_ms": load.p99 * 1000, "max_ms": load.latencies[-1] * 1000}
        return figures

    def scenario_latency(self) -> None:
        targets = [self.pf_target(), self.pk_target()]
        self.warm_up(targets)
        for repeat in range(self.settings.repeats):
            for case in self.cases["latency"]:
                for target in self.ordered(targets, repeat):
                    self.record(case, target, repeat, functools.partial(self.run_latency, target, case))

    def scenario_ceiling(self) -> None:
        settings = self.settings
        with SmtpSink(settings.sink_port, settings.workdir / "smtp-sink-ceiling.out") as sink:
            target = Target(SINK, sink.port, f"user@{REMOTE_DOMAIN}", lambda: sink.pid, lambda: 0, lambda: None)
            for repeat in range(settings.repeats):
                for case in self.cases["ceiling"]:

                    def run(case: Case = case) -> dict[str, Any]:
                        elapsed = smtp_source(
                            sink.port,
                            messages=case.messages,
                            sessions=case.sessions,
                            size=case.size,
                            reuse=case.reuse,
                            recipient=target.recipient,
                            timeout=settings.run_timeout,
                        )
                        return {
                            "messages": case.messages,
                            "accept_s": elapsed,
                            "accepted_per_s": case.messages / elapsed,
                        }

                    self.record(case, target, repeat, run)

    def scenario_outbound(self) -> None:
        settings = self.settings
        pk_target = self.pk_target(recipient=RELAY_ALIAS)
        with contextlib.ExitStack() as scenario:
            sink = scenario.enter_context(
                SmtpSink(settings.sink_port, settings.workdir / "smtp-sink-outbound.out", count=True)
            )
            relay = PostfixInstance(
                settings.workdir / "postfix-relay",
                mode="relay",
                port=settings.relay_port,
                domain=DOMAIN,
                relay_to=("127.0.0.1", sink.port),
            )
            self.log(f"starting Postfix (relay to smtp-sink) on 127.0.0.1:{relay.port}")
            scenario.enter_context(relay)
            pf_target = self.pf_target(relay, recipient=REMOTE_RECIPIENT)
            for target in (pf_target, pk_target):
                # Sink messages replace the Maildir as the sign of progress.
                target.delivered = sink.received
                target.reset = lambda: None
            self.warm_up([pf_target, pk_target])
            for target in (pf_target, pk_target):
                target.drained(30.0)

            def run(target: Target, case: Case) -> dict[str, Any]:
                def inject(timeout: float) -> float:
                    return smtp_source(
                        target.port,
                        messages=case.messages,
                        sessions=case.sessions,
                        size=case.size,
                        reuse=case.reuse,
                        recipient=target.recipient,
                        timeout=timeout,
                    )

                queries = self.dns().queries
                figures, _ = measured(target, case.messages, inject, sink.received, settings.run_timeout, "relayed")
                # Postfix relays to a fixed [host]:port; postkontor looks up the MX, and its cache shows here.
                figures["dns_queries"] = self.dns().queries - queries
                # The sink counts at the final "."; the queue shows that the 250 was taken as success too.
                target.drained(30.0)
                return figures

            for repeat in range(settings.repeats):
                for case in self.cases["outbound"]:
                    for target in self.ordered([pf_target, pk_target], repeat):
                        self.record(case, target, repeat, functools.partial(run, target, case))

    def scenario_idle(self) -> None:
        for repeat in range(self.settings.repeats):
            for case in self.cases["idle"]:
                instance = self.postkontor()
                # A fresh server each time: memory freed by earlier load would otherwise hide the cost.
                instance.stop()
                instance.start()
                target = self.pk_target()
                self.record(case, target, repeat, functools.partial(self.run_idle, instance, case))

    def run_idle(self, instance: PostkontorInstance, case: Case) -> dict[str, Any]:
        count = case.messages
        pid = instance.pid
        if pid is None:
            raise BenchError("postkontor is not running")
        limit = instance.nofile_limit()
        if limit is not None and limit < count + 100:
            raise BenchError(f"postkontor may open only {limit} files, fewer than {count} connections need")
        time.sleep(1.0)
        pids = procstat.tree_pids(pid)
        rss_before, pss_before = procstat.rss_bytes(pids), procstat.pss_bytes(pids)
        connections = idle.open_idle(instance.host, instance.port, count, timeout=self.settings.run_timeout)
        try:
            # Lets the server finish setting up each session (timers, buffers) before it is weighed.
            time.sleep(1.0)
            pids = procstat.tree_pids(pid)
            rss_after, pss_after = procstat.rss_bytes(pids), procstat.pss_bytes(pids)
        finally:
            connections.close()
        if connections.greeted < count:
            raise BenchError(
                f"only {connections.greeted} of {count} connections were greeted "
                f"({connections.refused} refused; {connections.errors})"
            )
        time.sleep(2.0)
        rss_closed = procstat.rss_bytes(procstat.tree_pids(pid))
        return {
            "connections": connections.greeted,
            "open_s": connections.elapsed,
            "processes": len(pids),
            "rss_before_mib": rss_before / MIB,
            "rss_after_mib": rss_after / MIB,
            "rss_after_close_mib": rss_closed / MIB,
            "rss_per_conn_bytes": (rss_after - rss_before) / connections.greeted,
            "pss_per_conn_bytes": (pss_after - pss_before) / connections.greeted,
        }

    def scenario_imap(self) -> None:
        case = self.cases["imap"][0]
        mailbox = imap_mailbox.build_messages(case.messages)
        servers = self.imap_servers()
        for repeat in range(self.settings.repeats):
            for server in self.ordered(servers, repeat):
                run = functools.partial(
                    run_mailbox,
                    server,
                    mailbox,
                    # The count does not vary between repeats, and strace slows the server for a while afterwards.
                    trace_opens=repeat == 0,
                    timeout=self.settings.run_timeout,
                    notes=self.results.notes,
                )
                self.record(case, imap_target(server), repeat, run)
        if self._dovecot is not None:
            self._dovecot.stop()

    def scenario_imap_idle(self) -> None:
        case = self.cases["imap-idle"][0]
        mailbox = imap_mailbox.build_messages(case.size, seed=1)
        servers = self.imap_servers()
        if case.messages > DOVECOT_IDLE_MAX and any(server.name == DC for server in servers):
            servers = [server for server in servers if server.name != DC]
            self.results.notes.append(
                f"imap-idle: Dovecot not measured with {case.messages:,} sessions (an imap process each; at most"
                f" {DOVECOT_IDLE_MAX:,} here)"
            )
        for repeat in range(self.settings.repeats):
            for server in self.ordered(servers, repeat):
                run = functools.partial(
                    run_idle, server, mailbox, case.messages, sender=SENDER, timeout=self.settings.run_timeout
                )
                self.record(case, imap_target(server), repeat, run)
        if self._dovecot is not None:
            self._dovecot.stop()


SHOWN = (
    "delivered_per_s",
    "relayed_per_s",
    "accepted_per_s",
    "cpu_per_1000_s",
    "peak_rss_mib",
    "peak_pss_mib",
    "p50_ms",
    "p99_ms",
    "rss_per_conn_bytes",
    "select_s",
    "fetch_cold_s",
    "fetch_warm_s",
    "store_s",
    "server_cpu_s",
    "warm_fetch_message_opens",
    "idle_rss_per_conn_bytes",
    "idle_marginal_rss_per_conn_bytes",
    "idle_marginal_pss_per_conn_bytes",
    "tls_share",
    "idle_wake_p50_ms",
    "idle_wake_p99_ms",
)


# -- the report ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    metric: str
    label: str
    better: str  # "higher" or "lower"
    unit: str
    reference: str = PF  # the server postkontor is compared with in this row


def rows(cases: dict[str, list[Case]]) -> list[tuple[str, list[Row]]]:
    sections: list[tuple[str, list[Row]]] = []
    local = cases["local"]
    for metric, title, better, unit in (
        ("delivered_per_s", "Local delivery, end to end (smtp-source -> Maildir), msg/s", "higher", "rate"),
        ("accepted_per_s", "Local delivery, accepted (smtp-source wall time), msg/s", "higher", "rate"),
        ("cpu_per_1000_s", "Local delivery, server CPU seconds per 1,000 messages", "lower", "cpu"),
        ("peak_rss_mib", "Local delivery, peak RSS of the server's processes, MiB (summed)", "lower", "mib"),
        (
            "peak_pss_mib",
            "Local delivery, peak PSS of the server's processes, MiB (shared pages split)",
            "lower",
            "mib",
        ),
    ):
        sections.append((title, [Row(case.key, metric, case.label, better, unit) for case in local]))
    latency = cases["latency"]
    sections.append(
        (
            "Latency, Python pipelining client, end of data -> 250, ms",
            [
                Row(case.key, metric, f"{case.label}: {name}", "lower", "ms")
                for case in latency
                for metric, name in (("p50_ms", "p50"), ("p99_ms", "p99"))
            ]
            + [Row(case.key, "accepted_per_s", f"{case.label}: accepted msg/s", "higher", "rate") for case in latency],
        )
    )
    outbound = cases["outbound"][0]
    sections.append(
        (
            "Outbound, smtp-source -> server -> smtp-sink MX",
            [
                Row(outbound.key, "relayed_per_s", f"{outbound.label}: relayed msg/s", "higher", "rate"),
                Row(outbound.key, "accepted_per_s", f"{outbound.label}: accepted msg/s", "higher", "rate"),
                Row(outbound.key, "cpu_per_1000_s", f"{outbound.label}: CPU s/1000 msgs", "lower", "cpu"),
                Row(outbound.key, "peak_pss_mib", f"{outbound.label}: peak PSS MiB", "lower", "mib"),
            ],
        )
    )
    imap = cases["imap"][0]
    sections.append(
        (
            f"IMAP, one IMAPS session on a {imap.messages:,}-message INBOX (ratio = postkontor / Dovecot), seconds",
            [
                Row("imap", metric, label, "lower", unit, DC)
                for metric, label, unit in (
                    ("select_s", f"SELECT INBOX (adopts {imap.messages:,} new messages)", "s"),
                    ("fetch_cold_s", "UID FETCH 1:* envelope+headers, cold", "s"),
                    ("fetch_warm_s", "UID FETCH 1:* envelope+headers, warm", "s"),
                    ("search_from_s", f'UID SEARCH FROM "{imap_mailbox.FROM_WORD}"', "s"),
                    ("search_subject_s", f'UID SEARCH SUBJECT "{imap_mailbox.SUBJECT_WORD}"', "s"),
                    ("search_unseen_s", "UID SEARCH UNSEEN", "s"),
                    ("search_body_s", f'UID SEARCH BODY "{imap_mailbox.BODY_WORD}"', "s"),
                    ("store_s", "UID STORE 1:* +FLAGS (\\Seen)", "s"),
                    ("server_cpu_s", "server CPU seconds, all of the above", "cpu"),
                    ("peak_pss_mib", "peak PSS of the server's processes, MiB", "mib"),
                    ("warm_fetch_message_opens", "message files opened by the warm FETCH", "count"),
                )
            ],
        )
    )
    idle_case = cases["imap-idle"][0]
    sections.append(
        (
            f"IMAP, {idle_case.messages:,} sessions held at once (ratio = postkontor / Dovecot): server memory per"
            " session, KiB",
            [
                Row(
                    "imap-idle",
                    f"{stage}_{kind}_per_conn_bytes",
                    f"{label}: {kind.rpartition('_')[2].upper()}",
                    "lower",
                    "bytes",
                    DC,
                )
                for stage, kind, label in (
                    ("plain", "rss", "TCP only, greeted (port 143)"),
                    ("tls", "rss", "TLS, greeted (IMAPS)"),
                    ("idle", "rss", "IMAPS+LOGIN+SELECT+IDLE, all-in"),
                    ("idle", "pss", "IMAPS+LOGIN+SELECT+IDLE, all-in"),
                    ("idle", "marginal_rss", "IDLE session, marginal"),
                    ("idle", "marginal_pss", "IDLE session, marginal"),
                )
            ]
            + [
                Row("imap-idle", "idle_open_s", "time to set all IDLE sessions up, s", "lower", "s", DC),
                Row("imap-idle", "idle_wake_p50_ms", "Maildir delivery -> * n EXISTS: p50 ms", "lower", "ms", DC),
                Row("imap-idle", "idle_wake_p99_ms", "Maildir delivery -> * n EXISTS: p99 ms", "lower", "ms", DC),
                Row("imap-idle", "idle_wake_woken", "sampled sessions that heard it within 5 s", "higher", "count", DC),
            ],
        )
    )
    return sections


def _fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "rate":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "cpu":
        return f"{value:.3f}"
    if unit in ("mib", "kib"):
        return f"{value:.1f}"
    if unit == "bytes":
        return f"{value / 1024:.1f}"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:.4g}"


def imap_notes(results: Results) -> list[str]:
    """What the IMAP tables leave out: per server, the TLS share, the wake-ups heard, postkontor's SMTP wake."""
    lines: list[str] = []
    if "imap" in results.cases:
        lines.append("IMAP, one session: checks")
        for name in (PK, DC):
            runs = [run for run in results.cases["imap"]["runs"].get(name, []) if "error" not in run]
            if not runs:
                continue
            wrong = [
                key.removesuffix("_hits")
                for run in runs
                for key in run
                if key.endswith("_hits") and run[key] != run[key.replace("_hits", "_expected")]
            ]
            first = runs[0]
            all_opens = first.get("warm_fetch_all_opens")
            lines.append(
                f"  {name:<10} SEARCH answers {'match the mailbox' if not wrong else 'WRONG: ' + ', '.join(wrong)};"
                f" {first.get('tls', '?')}; files of any kind opened by the warm FETCH: "
                + ("-" if all_opens is None else f"{all_opens:,}")
            )
        lines.append("")
    if "imap-idle" in results.cases:
        lines.append("IMAP sessions held at once: details (medians)")
        for name in (PK, DC):
            if not results.values("imap-idle", name, "idle_connections"):
                continue

            def median(metric: str, server: str = name) -> float | None:
                return results.median("imap-idle", server, metric)

            share, woken, sample = median("tls_share"), median("idle_wake_woken"), median("idle_wake_sample")
            processes = median("idle_processes")
            text = f"  {name:<10} TLS is {_fmt(None if share is None else share * 100, 'rate')}% of a session's RSS;"
            text += f" {_fmt(woken, 'count')} of {_fmt(sample, 'count')} sampled sessions woke within 5 s;"
            text += f" {_fmt(processes, 'count')} server processes"
            lines.append(text)
            smtp_woken = median("idle_smtp_wake_woken")
            if smtp_woken is not None:
                p50, p99 = _fmt(median("idle_smtp_wake_p50_ms"), "ms"), _fmt(median("idle_smtp_wake_p99_ms"), "ms")
                lines.append(
                    f"  {'':<10} delivery over SMTP (from its 250) -> * n EXISTS: p50 {p50} ms, p99 {p99} ms;"
                    f" {_fmt(smtp_woken, 'count')} of {_fmt(median('idle_smtp_wake_sample'), 'count')} woke"
                )
        lines.append("")
    return lines


@dataclass(frozen=True)
class Goal:
    name: str
    key: str
    metric: str
    kind: str  # "ratio>=", "ratio<=", "ratio<", "value<="
    threshold: float
    unit: str = "bytes"  # of a "value<=" goal: "bytes" (shown in KiB) or "files"


GOALS = (
    Goal("end to end, 1 KiB, 10 sessions, reuse", "local/1k/s10/reuse", "delivered_per_s", "ratio>=", 2.0),
    Goal("end to end, 100 KiB, 10 sessions, reuse", "local/100k/s10/reuse", "delivered_per_s", "ratio>=", 1.5),
    Goal(
        "end to end, one connection per message (1 KiB, 10 sessions)",
        "local/1k/s10/noreuse",
        "delivered_per_s",
        "ratio>=",
        1.5,
    ),
    Goal("p99 end of data -> 250 at 10 sessions (DATA) below Postfix's", "latency/data", "p99_ms", "ratio<", 1.0),
    Goal("CPU per 1,000 messages (1 KiB, 10 sessions, reuse)", "local/1k/s10/reuse", "cpu_per_1000_s", "ratio<=", 0.5),
    Goal("idle connection <= 50 KiB (RSS growth per connection)", "idle", "rss_per_conn_bytes", "value<=", IDLE_TARGET),
    Goal(
        "IMAP: a warm header FETCH of the whole INBOX reads no message file",
        "imap",
        "warm_fetch_message_opens",
        "value<=",
        0,
        "files",
    ),
)


def evaluate(results: Results, goal: Goal) -> dict[str, Any]:
    pk = results.median(goal.key, PK, goal.metric)
    if goal.kind == "value<=":
        value = pk
        if goal.unit == "files":
            shown = "not measured" if pk is None else f"{pk:,.0f} files"
            target = f"<= {goal.threshold:,.0f} files"
        else:
            shown = "not measured" if pk is None else f"{pk / 1024:.1f} KiB"
            target = f"<= {goal.threshold / 1024:.0f} KiB"
    else:
        pf = results.median(goal.key, PF, goal.metric)
        value = pk / pf if pk is not None and pf else None
        shown = "not measured" if value is None else f"{value:.2f}x"
        target = f"{goal.kind.removeprefix('ratio')} {goal.threshold:g}x"
    if value is None:
        status = "n/a"
    elif goal.kind.endswith(">="):
        status = "PASS" if value >= goal.threshold else "MISS"
    elif goal.kind.endswith("<="):
        status = "PASS" if value <= goal.threshold else "MISS"
    else:
        status = "PASS" if value < goal.threshold else "MISS"
    return {
        "goal": goal.name,
        "key": goal.key,
        "metric": goal.metric,
        "value": value,
        "shown": shown,
        "target": target,
        "status": status,
    }


def report(
    results: Results, cases: dict[str, list[Case]], repeats: int
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The printed report, its rows as data and the targets' verdicts."""
    lines = [
        f"postkontor vs Postfix (IMAP: vs Dovecot): medians of {repeats} interleaved repeat(s);"
        " ratio = postkontor / the other",
        "(the 'better' column says which direction of the ratio is good; 'per repeat' is the range of the",
        " ratios of the back-to-back pairs, a direct view of the noise)",
        "",
    ]
    table: list[dict[str, Any]] = []
    for title, section in rows(cases):
        present = [row for row in section if row.key in results.cases]
        if not present:
            continue
        reference = present[0].reference
        header = f"{'scenario':<46} {reference:>10} {'postkontor':>11} {'ratio':>8}  {'better':<6}  {'per repeat':<13}"
        lines += [title, header, "-" * len(header)]
        for row in present:
            pf = results.median(row.key, row.reference, row.metric)
            pk = results.median(row.key, PK, row.metric)
            ratio = pk / pf if pk is not None and pf else None
            pairs = results.pair_ratios(row.key, row.metric, row.reference)
            spread = f"{min(pairs):.2f}-{max(pairs):.2f}" if len(pairs) > 1 else ""
            runs = results.cases[row.key]["runs"]
            failed = {name for name in (row.reference, PK) if any("error" in run for run in runs.get(name, []))}
            cells = [
                _fmt(pf, row.unit) + ("!" if row.reference in failed else ""),
                _fmt(pk, row.unit) + ("!" if PK in failed else ""),
            ]
            shown_ratio = "-" if ratio is None else f"{ratio:.2f}x"
            lines.append(
                f"{row.label:<46} {cells[0]:>10} {cells[1]:>11} {shown_ratio:>8}  {row.better:<6}  {spread:<13}"
            )
            table.append(
                {
                    "key": row.key,
                    "metric": row.metric,
                    "label": row.label,
                    row.reference.lower(): pf,
                    "postkontor": pk,
                    "ratio": ratio,
                    "better": row.better,
                    "pair_ratios": pairs,
                }
            )
        lines.append("")
    if "ceiling" in results.cases:
        ceiling = results.median("ceiling", SINK, "accepted_per_s")
        lines.append("Ceiling: smtp-source (1 KiB, 10 sessions, reuse) -> smtp-sink, no storage at all")
        lines.append(f"  smtp-sink accepts {_fmt(ceiling, 'rate')} msg/s: the limit of this load generator on loopback")
        for name in (PF, PK):
            accepted = results.median("local/1k/s10/reuse", name, "accepted_per_s")
            delivered = results.median("local/1k/s10/reuse", name, "delivered_per_s")
            if ceiling and accepted and delivered:
                lines.append(
                    f"  {name:<10} accepts {100 * accepted / ceiling:5.1f}% of it, "
                    f"delivers {100 * delivered / ceiling:5.1f}% of it (same load, local delivery)"
                )
        table.append({"key": "ceiling", "metric": "accepted_per_s", "label": "smtp-sink ceiling", "smtp-sink": ceiling})
        lines.append("")
    if "idle" in results.cases:
        per_conn = results.median("idle", PK, "rss_per_conn_bytes")
        pss = results.median("idle", PK, "pss_per_conn_bytes")
        conns = results.median("idle", PK, "connections")
        lines.append("Idle connections (postkontor only: Postfix runs one smtpd process per connection)")
        kib = {name: None if value is None else value / 1024 for name, value in (("rss", per_conn), ("pss", pss))}
        lines.append(
            f"  {_fmt(conns, 'rate')} idle connections: RSS +{_fmt(kib['rss'], 'kib')} KiB per connection "
            f"(PSS +{_fmt(kib['pss'], 'kib')} KiB), target <= 50 KiB"
        )
        table.append(
            {
                "key": "idle",
                "metric": "rss_per_conn_bytes",
                "label": "idle bytes per connection",
                "postkontor": per_conn,
                "pss_per_conn_bytes": pss,
            }
        )
        lines.append("")
    lines += imap_notes(results)
    goals = [evaluate(results, goal) for goal in GOALS]
    lines.append("Targets of the issue")
    for goal in goals:
        lines.append(f"  {goal['status']:<5} {goal['goal']:<64} {goal['shown']:>13}  (target {goal['target']})")
    if results.errors:
        lines += ["", "Failed runs ('!' marks medians missing a failed run):"] + [f"  {e}" for e in results.errors]
    if results.noisy:
        lines += ["", f"Runs during which other processes used more than {NOISY_SHARE} CPUs (noise):"]
        lines += [f"  {line}" for line in results.noisy[:15]]
        if len(results.noisy) > 15:
            lines.append(f"  ... and {len(results.noisy) - 15} more (see the JSON)")
    if results.notes:
        lines += ["", "Notes (postkontor's log, environment):"] + [f"  {n}" for n in results.notes[:20]]
    return "\n".join(lines), table, goals


# -- main ------------------------------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_fingerprint() -> str:
    """A hash of the postkontor package's files: tells whether the code changed while the benchmark ran (a server
    started before the change runs the old code, one restarted after it the new)."""
    digest = hashlib.sha256()
    for path in sorted(Path(postkontor.__file__).parent.rglob("*.py")):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def environment(settings: Settings, bench: Bench) -> dict[str, Any]:
    repo = Path(__file__).resolve().parent.parent
    config: list[str] = []
    if bench._postkontor is not None and bench._postkontor.config_file.exists():
        text = bench._postkontor.config_file.read_text()
        config = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postfix": _version([POSTCONF, "-dh", "mail_version"]),
        "dovecot": _version([dovecot.DOVECOT, "--version"]) if settings.dovecot else None,
        "postkontor_commit": _version(["git", "-C", str(repo), "describe", "--always", "--dirty"]),
        "postkontor_config": config,
        "settings": {**asdict(settings), "workdir": str(settings.workdir)},
    }


def _check_prerequisites(scenarios: Sequence[str], dovecot_wanted: bool) -> None:
    if any(name in POSTFIX_SCENARIOS for name in scenarios):
        missing = [path for path in (POSTFIX, POSTCONF, SMTP_SOURCE, SMTP_SINK) if not Path(path).exists()]
        if missing:
            raise SystemExit(f"bench: missing {', '.join(missing)} (install Debian's postfix package)")
        if os.geteuid() != 0:
            raise SystemExit("bench: run as root (a private Postfix instance needs it)")
    if dovecot_wanted:
        if not dovecot.available():
            raise SystemExit("bench: --imap-reference dovecot, but Dovecot is missing (apt-get install dovecot-imapd)")
        if os.geteuid() != 0:
            raise SystemExit("bench: run as root (a private Dovecot instance needs it)")
    if shutil.which("postkontor") is None:
        raise SystemExit("bench: postkontor is not installed (pip install -e .)")


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwinds through every finally/ExitStack, so that no server or sink outlives the benchmark.
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per case and server (median reported)")
    parser.add_argument("--quick", action="store_true", help="small message counts: a smoke test, not a measurement")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pkbench-run"))
    parser.add_argument("--json", type=Path, help="raw figures as JSON (default: WORKDIR/results.json)")
    parser.add_argument(
        "--port-base",
        type=int,
        default=41000,
        help="postkontor on +25/+587/+465 (+143/+993 IMAP), Postfix +1025, smtp-sink +1026, Postfix relay +1027, "
        "DNS +1053, Dovecot +1143/+1993 (default 41000)",
    )
    parser.add_argument(
        "--imap-reference",
        choices=("auto", "dovecot", "none"),
        default="auto",
        help="what the IMAP scenarios compare with; auto: Dovecot if installed and running as root, not with --quick",
    )
    parser.add_argument("--imap-idle-sessions", type=int, help="IMAP IDLE sessions held at once (default 1,000)")
    parser.add_argument("--run-timeout", type=float, default=180.0, help="bound for one run, in seconds")
    args = parser.parse_args(argv)
    args.scenarios = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"--only: unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.imap_idle_sessions is not None and args.imap_idle_sessions < 1:
        parser.error("--imap-idle-sessions must be at least 1")
    imap = any(name in ("imap", "imap-idle") for name in args.scenarios)
    if args.imap_reference == "auto":
        args.dovecot = imap and not args.quick and dovecot.available() and os.geteuid() == 0
    else:
        args.dovecot = imap and args.imap_reference == "dovecot"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _check_prerequisites(args.scenarios, args.dovecot)
    settings = Settings(
        args.quick,
        args.repeats,
        args.workdir.resolve(),
        args.port_base,
        args.run_timeout,
        0.2 if args.quick else 0.5,
        args.dovecot,
        args.imap_idle_sessions,
    )
    settings.workdir.mkdir(parents=True, exist_ok=True)
    json_path: Path = args.json or settings.workdir / "results.json"
    signal.signal(signal.SIGTERM, _terminate)
    # 10,000 idle connections need as many descriptors here and in the servers, which inherit this limit.
    cases = plan(settings.quick, settings.imap_idle)
    wanted = max(case.messages for case in cases["idle"] + cases["imap-idle"]) + 1000
    nofile = idle.raise_nofile(wanted)
    started = time.monotonic()
    fingerprint = source_fingerprint()
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(settings, stack)
            if nofile < wanted:
                bench.results.notes.append(f"RLIMIT_NOFILE is {nofile}, less than the {wanted} wanted")
            for name in SCENARIOS:
                if name in args.scenarios:
                    bench.log(f"== {name}")
                    getattr(bench, f"scenario_{name.replace('-', '_')}")()
            meta = environment(settings, bench)
            meta["postkontor_source_sha256"] = fingerprint
            if source_fingerprint() != fingerprint:
                bench.results.notes.append(
                    "postkontor's source changed during the benchmark: runs before and after the change (or a"
                    " restart) measured different code"
                )
    except KeyboardInterrupt:
        # The ExitStack has stopped every server and sink by now.
        print("\nbench: interrupted; all servers stopped, no results written", file=sys.stderr)
        return 130
    finally:
        files.purge_attics(settings.workdir)
    elapsed = time.monotonic() - started
    text, table, goals = report(bench.results, bench.cases, settings.repeats)
    print()
    print(text)
    print(f"\nbenchmark took {elapsed:.0f} s; raw figures in {json_path}")
    meta["elapsed_s"] = elapsed
    document = {
        "meta": meta,
        "cases": bench.results.cases,
        "table": table,
        "targets": goals,
        "errors": bench.results.errors,
        "notes": bench.results.notes,
        "noisy_runs": bench.results.noisy,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_finite(document), indent=2, default=str, allow_nan=False) + "\n")
    return 1 if bench.results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
