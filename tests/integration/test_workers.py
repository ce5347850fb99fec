"""Worker processes: `workers = 2` shares the listening sockets, the limits and the queue between two processes."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkharness import DEMO, DOMAIN, HOST, DevServer, Wire, free_port_base, running_server


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[DevServer]:
    with running_server(tmp_path / "data", "--workers", "2") as server:
        yield server


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _tcp_sockets(pid: int) -> int:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return len(inodes)


def _wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _send(server: DevServer, marker: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", [DEMO], f"Subject: {marker}\r\n\r\nhi\r\n")


def test_connections_are_shared_between_the_workers(two_workers: DevServer) -> None:
    """A burst of 20 connections opened at once lands on both workers, not all on the first to wake up."""
    assert two_workers.process is not None
    workers = _children(two_workers.process.pid)
    assert len(workers) == 2
    before = {pid: _tcp_sockets(pid) for pid in workers}
    held = [Wire(two_workers.mx) for _ in range(20)]
    try:
        for wire in held:
            assert wire.code() == 220
        gained = [_tcp_sockets(pid) - before[pid] for pid in workers]
        assert sum(gained) == 20
        assert min(gained) >= 5, f"connections per worker: {gained}"
        for n in range(6):
            _send(two_workers, f"shared-{n}")
        two_workers.find("shared-", expect=6)
    finally:
        for wire in held:
            wire.close()


def test_a_dead_worker_is_replaced_and_its_connections_are_forgotten(two_workers: DevServer) -> None:
    assert two_workers.process is not None
    supervisor = two_workers.process.pid
    victim = _children(supervisor)[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = _children(supervisor)  # one snapshot: the victim is reaped before its replacement is forked
        return len(now) == 2 and victim not in now

    _wait_for(replaced)
    replacement = set(_children(supervisor))
    time.sleep(2.0)  # a replacement that fails to start would be replaced again (and again) meanwhile
    assert set(_children(supervisor)) == replacement, "the replacement worker must keep running"
    assert not any("failed" in line or "keep failing" in line for line in two_workers.output)
    for n in range(4):
        _send(two_workers, f"after-crash-{n}")
    two_workers.find("after-crash-", expect=4)
    # 50 connections from one address are still allowed: the dead worker's counts did not leak.
    held = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", two_workers.mx), timeout=10, source_address=("127.0.0.8", 0))
            held.append(sock)
            assert sock.recv(100).startswith(b"220")
    finally:
        for sock in held:
            sock.close()


def test_workers_die_with_the_supervisor(two_workers: DevServer) -> None:
    """SIGKILL of the supervisor (no chance to clean up) takes the workers with it (PR_SET_PDEATHSIG)."""
    assert two_workers.process is not None
    workers = _children(two_workers.process.pid)
    two_workers.kill()
    _wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))


def test_sigterm_while_the_workers_start_is_a_clean_stop(tmp_path: Path) -> None:
    """A stop requested during start-up (an init system restarting us quickly) exits 0 and leaves no worker."""
    server = DevServer(data=tmp_path / "data", port_base=free_port_base())
    server.start("--workers", "2")  # creates the data directory, certificate and demo account
    server.stop()
    command = [sys.executable, "-m", "postkontor", "--data", str(server.data), "dev", "--workers", "2"]
    command += ["--port-base", str(server.port_base), "--listen", HOST, "--domain", DOMAIN]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "starting 2 worker processes" in line:
                process.send_signal(signal.SIGTERM)
                break
        else:
            pytest.fail("the supervisor never started its workers")
        workers = _children(process.pid)
        rest = process.communicate(timeout=60)[0]
        assert process.returncode == 0, rest
        _wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
