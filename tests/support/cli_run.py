"""Run the real `postkontor` command in a subprocess, as an administrator would, and check its error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(
    data: Path | None, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "POSTKONTOR_DATA"}
    environment.update(env or {})
    prefix = ["--data", str(data)] if data is not None else []
    return subprocess.run(
        [sys.executable, "-m", "postkontor", *prefix, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


def fails(data: Path | None, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """Run a command that must fail as a user error: exit 2, one `postkontor: error:` line, no traceback."""
    result = run(data, *args, stdin=stdin, env=env)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("postkontor: error: "), result.stderr
    return lines[0]
