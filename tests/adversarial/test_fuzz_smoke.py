"""A short, time-boxed run of every fuzz target in fuzz/ (fuzz/run.py): the invariant "parse, or raise the protocol's
own error, never anything else" for the SMTP, IMAP and POP3 engines, the address parsers and the MIME/DSN code.

About 5 s per target, two at a time (this machine has two cores), well under a minute in all. With atheris
installed it is coverage-guided libFuzzer; without it the targets' plain-Python mutator runs the same checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "fuzz" / "run.py"
SECONDS_PER_TARGET = 5


@pytest.mark.timeout(240)
def test_fuzz_targets_smoke_run_no_crash(tmp_path: Path) -> None:
    """Every target runs for its time box with no crash, no broken invariant and no hang, and executes inputs."""
    report = tmp_path / "fuzz.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--seconds", str(SECONDS_PER_TARGET), "--jobs", "2", "--json", str(report),
         "--artifacts", str(tmp_path / "crashes")],
        capture_output=True, text=True, timeout=200, cwd=ROOT,
    )  # fmt: skip
    print(done.stdout)
    results = json.loads(report.read_text()) if report.exists() else []
    crashed = {
        r["target"]: (r["artifact"], Path(r["log"]).read_text()[-3000:] if r["log"] else "")
        for r in results
        if r["crashed"]
    }
    assert done.returncode == 0 and not crashed, f"fuzz crash: {crashed}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert {r["target"] for r in results} == {
        "smtp_server", "smtp_commands", "smtp_client_replies", "imap_parser", "pop3_engine", "address", "mime", "dsn",
    }  # fmt: skip
    for result in results:
        # Seeds alone are a few inputs; a target that ran its time box executes far more.
        assert result["executions"] >= 50, f"{result['target']} ran only {result['executions']} inputs"
