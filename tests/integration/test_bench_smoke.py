"""bench/run.py still runs end to end, --quick: Postfix and postkontor local delivery plus the smtp-sink ceiling;
postkontor's IMAP server on a small mailbox and a few IDLE sessions (against Dovecot where it is installed).

It checks that every figure is there and positive, never how fast anything is: a smoke test on a shared
machine must not fail because the machine was busy. Deselect with `-m "not bench"`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
TOOLS = ("/usr/sbin/postfix", "/usr/sbin/postconf", "/usr/sbin/smtp-source", "/usr/sbin/smtp-sink")
# Away from the full benchmark's default (41000), so that both can run at the same time; the IMAP run's ports
# (IMAP_PORT_BASE + 25 ... + 1995) do not meet the other run's either. Both sit below Linux's ephemeral port range
# (32768-60999), where an outgoing connection of the busy test suite could hold one of them (seen in CI: EADDRINUSE).
PORT_BASE = 26000
IMAP_PORT_BASE = 28000
DOVECOT = Path("/usr/sbin/dovecot")
TIMEOUT = 240

pytestmark = pytest.mark.bench


def _require_tools() -> None:
    missing = [tool for tool in TOOLS if not Path(tool).exists()]
    if missing:
        pytest.skip(f"the benchmark needs Postfix's tools: {', '.join(missing)} missing")
    if os.geteuid() != 0:
        pytest.skip("the benchmark starts a private Postfix instance, which needs root")


def _run(args: list[str]) -> tuple[int, str]:
    process = subprocess.Popen(
        [sys.executable, str(RUN), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM first: run.py then stops its servers; a SIGKILL would leave Postfix and postkontor running.
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"bench/run.py did not finish within {TIMEOUT}s:\n{output[-4000:]}")
    return process.returncode, output


def _positive(runs: dict[str, list[dict[str, Any]]], server: str, metric: str) -> None:
    values = [run.get(metric) for run in runs[server]]
    assert values, f"no {server} run"
    assert all(isinstance(value, float | int) and value > 0 for value in values), f"{server} {metric}: {values}"


def test_quick_benchmark_reports_every_figure() -> None:
    _require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="pkbench-smoke-", dir="/tmp"))
    try:
        result_file = workdir / "results.json"
        args = ["--quick", "--repeats", "1", "--only", "local,ceiling", "--workdir", str(workdir)]
        code, output = _run([*args, "--json", str(result_file), "--port-base", str(PORT_BASE)])
        assert code == 0, output[-4000:]
        for heading in (
            "Local delivery, end to end",
            "server CPU seconds per 1,000",
            "peak PSS",
            "Ceiling: smtp-source",
            "Targets of the issue",
        ):
            assert heading in output, f"{heading!r} missing from:\n{output[-4000:]}"

        document = json.loads(result_file.read_text())
        assert not document["errors"]
        cases = document["cases"]
        local = [key for key in cases if key.startswith("local/")]
        assert len(local) == 12  # 2 sizes x 3 session counts x reuse or not
        for key in local:
            runs = cases[key]["runs"]
            for server in ("Postfix", "postkontor"):
                for metric in ("accepted_per_s", "delivered_per_s", "cpu_per_1000_s", "peak_rss_mib", "peak_pss_mib"):
                    _positive(runs, server, metric)
        _positive(cases["ceiling"]["runs"], "smtp-sink", "accepted_per_s")

        rows = {(row["key"], row["metric"]): row for row in document["table"]}
        end_to_end = rows[("local/1k/s10/reuse", "delivered_per_s")]
        assert end_to_end["postfix"] > 0 and end_to_end["postkontor"] > 0 and end_to_end["ratio"] > 0
        assert rows[("ceiling", "accepted_per_s")]["smtp-sink"] > 0
        targets = {target["key"]: target for target in document["targets"]}
        assert targets["local/1k/s10/reuse"]["status"] in ("PASS", "MISS")
        assert targets["idle"]["status"] == "n/a"  # not selected
        assert document["meta"]["postfix"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_quick_imap_benchmark_reports_every_figure() -> None:
    """The imap and imap-idle scenarios (RFC 9051 SELECT/FETCH/SEARCH/STORE, RFC 2177 IDLE) run and report."""
    dovecot = DOVECOT.exists() and os.geteuid() == 0
    workdir = Path(tempfile.mkdtemp(prefix="pkbench-imap-smoke-", dir="/tmp"))
    try:
        result_file = workdir / "results.json"
        args = ["--quick", "--repeats", "1", "--only", "imap,imap-idle", "--workdir", str(workdir)]
        args += ["--imap-reference", "dovecot" if dovecot else "none", "--port-base", str(IMAP_PORT_BASE)]
        code, output = _run([*args, "--json", str(result_file)])
        assert code == 0, output[-4000:]
        for heading in ("IMAP, one IMAPS session", "sessions held at once", "Targets of the issue"):
            assert heading in output, f"{heading!r} missing from:\n{output[-4000:]}"

        document = json.loads(result_file.read_text())
        assert not document["errors"]
        servers = ("postkontor", "Dovecot") if dovecot else ("postkontor",)
        imap = document["cases"]["imap"]["runs"]
        for server in servers:
            for command in ("select", "fetch_cold", "fetch_warm", "search_from", "search_body", "store"):
                _positive(imap, server, f"{command}_s")
            for run in imap[server]:
                assert run["messages"] == 200
                assert run["store_responses"] == 200
                for name in ("from", "subject", "unseen", "body"):
                    assert run[f"search_{name}_hits"] == run[f"search_{name}_expected"] > 0, (server, name)
                # Counted with strace, which a container may forbid; then the reason is recorded instead.
                assert "warm_fetch_message_opens" in run or run["warm_fetch_opens_error"]
        held = document["cases"]["imap-idle"]["runs"]
        for server in servers:
            for stage in ("plain", "tls", "idle"):
                assert all(run[f"{stage}_connections"] == 20 for run in held[server]), (server, stage)
            _positive(held, server, "idle_open_s")
            assert all(run["idle_wake_woken"] >= 1 for run in held[server]), server
        assert all(run["idle_smtp_wake_woken"] >= 1 for run in held["postkontor"])
        targets = {target["key"]: target for target in document["targets"]}
        assert targets["imap"]["status"] in ("PASS", "MISS")
        assert targets["local/1k/s10/reuse"]["status"] == "n/a"  # not selected
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
