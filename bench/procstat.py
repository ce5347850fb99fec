"""Process accounting from /proc for the benchmarks: the CPU time and memory of a whole process tree.

A server under test is rarely one process: Postfix's master(8) forks smtpd, cleanup, qmgr, local, ... and
re-forks them as they hit max_use or max_idle. Accounting therefore works on a tree rooted at one pid, and
every reader tolerates processes that exit between listing /proc and reading their files.

Linux only; no third-party dependencies.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None when the process is gone.

    The command name (field 2) is in parentheses and may itself contain spaces or ')', so the line is split
    at the last ')'; the returned list starts at field 3 (state), i.e. index = field number - 3.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # A pid can vanish between open() and read(); the kernel then hands back an empty file (or ESRCH above).
    if not data:
        return None
    return data.rsplit(b")", 1)[1].decode("ascii").split()


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks after boot; None when it is gone.

    A pid together with its start time names one process for good, so a caller waiting for processes to exit
    can tell them from a later process that was given a recycled pid.
    """
    fields = _stat_fields(pid)
    # starttime is field 22 of proc(5).
    return None if fields is None else int(fields[19])


def tree_pids(root_pid: int) -> list[int]:
    """The root pid followed by all its living descendants (empty if the root itself is gone).

    Built from the ppid field of every /proc/*/stat: /proc/PID/task/TID/children would be cheaper but needs
    CONFIG_PROC_CHILDREN and lists only children of that one thread.
    """
    children: dict[int, list[int]] = {}
    root_alive = False
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            fields = _stat_fields(pid)
            if fields is None:
                continue
            if pid == root_pid:
                root_alive = True
            children.setdefault(int(fields[1]), []).append(pid)
    if not root_alive:
        return []
    result = [root_pid]
    # Breadth-first over the snapshot; `seen` guards against pid reuse creating a cycle within one scan.
    seen = {root_pid}
    index = 0
    while index < len(result):
        for child in children.get(result[index], ()):
            if child not in seen:
                seen.add(child)
                result.append(child)
        index += 1
    return result


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of the given processes, including the children they have already reaped.

    utime+stime covers what each process used itself; cutime+cstime adds every child it has waited for. That
    is what makes the figure right for Postfix: master(8) reaps smtpd/cleanup/local/... processes as they
    exit (max_use, max_idle), so their CPU time moves into master's cutime/cstime instead of being lost. Summed
    over a tree, the total is continuous: a child counted by its own stat before it exits is counted through
    its parent afterwards. Take the difference of two readings around the measured interval.
    Processes that vanished meanwhile are skipped; pass pids in an order where parents come first (as
    tree_pids does) so that a child reaped mid-read is more likely missed than counted twice.
    """
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of proc(5).
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / _CLOCK_TICKS


def _vm_rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    # "VmRSS:     1234 kB"; the kernel always reports kB.
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    # Kernel threads and zombies have no VmRSS line: they hold no user memory.
    return 0


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of VmRSS over the given processes; vanished processes count as 0.

    Pages shared between processes (libraries, the read-only text of twenty identical smtpd) are counted once
    per process, so this over-states a multi-process tree's footprint (for Postfix under load, ~7x its PSS);
    it is the figure `ps` and most comparisons use. pss_bytes() is the fair one across architectures.
    """
    return sum(_vm_rss_bytes(pid) for pid in pids)


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_bytes(pids: Iterable[int]) -> int:
    """Sum of proportional set sizes (/proc/PID/smaps_rollup): each shared page split among its users.

    The fair figure when comparing a tree of many small processes (Postfix) with one large one, since summed
    RSS charges the shared libraries once per process. Costlier to read than VmRSS (the kernel walks the page
    tables), still well under a millisecond per process.
    """
    return sum(_pss_bytes(pid) for pid in pids)


class PeakSampler:
    """Samples the summed RSS of a process tree in a background thread and records the peak.

    The tree is re-listed at every sample, because the processes holding memory at the peak (e.g. the smtpd
    processes spawned under load) do not exist when sampling starts. Sampling ends on stop() or, so that a
    forgotten sampler cannot run forever, after max_duration seconds.

    Cost, measured with ~45 Postfix processes: one sample (tree listing + VmRSS) takes ~2.5 ms of CPU, i.e. ~5%
    of a core at the default interval; that CPU is the sampler's own, not the measured tree's. PSS is far
    dearer (~10 ms a sample), so it is only tracked when pss_interval > 0, at most once per pss_interval
    seconds and from the same tree listing; a tree's PSS moves slowly, so a coarser sampling loses little.
    """

    def __init__(
        self, root_pid: int, interval: float = 0.05, max_duration: float = 600.0, pss_interval: float = 0.0
    ) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.max_duration = max_duration
        self.pss_interval = pss_interval
        self.peak = 0
        self.peak_pss = 0
        self.samples = 0
        self._next_pss = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, final: bool = False) -> None:
        pids = tree_pids(self.root_pid)
        self.peak = max(self.peak, rss_bytes(pids))
        self.samples += 1
        if self.pss_interval > 0 and (final or time.monotonic() >= self._next_pss):
            self.peak_pss = max(self.peak_pss, pss_bytes(pids))
            self._next_pss = time.monotonic() + self.pss_interval

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_duration
        while True:
            self._sample()
            if time.monotonic() >= deadline or self._stop.wait(self.interval):
                return

    def start(self) -> PeakSampler:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._thread = threading.Thread(target=self._run, name=f"rss-sampler-{self.root_pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stops sampling and returns the peak summed RSS in bytes."""
        if self._thread is not None and not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            # One last sample so that a run shorter than one interval still reports something.
            self._sample(final=True)
        return self.peak

    def __enter__(self) -> PeakSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
