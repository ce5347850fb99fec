"""Run the fuzz targets, each in its own process, for a time or an execution budget; collect execution counts.

    python fuzz/run.py --seconds 60                  # every target for 60 s (atheris when installed)
    python fuzz/run.py --seconds 5 --jobs 2 --json out.json
    python fuzz/run.py --runs 20000 --targets mime dsn
    POSTKONTOR_FUZZ_ENGINE=fallback python fuzz/run.py --seconds 5   # the plain-Python mutator

Seeds come from fuzz/corpus/<target>/ and are never written to: each run's new inputs go to a temporary corpus.
A crash (an exception outside the target's allowed protocol errors, a broken invariant, a timeout) saves the
input as <artifacts>/<target>-crash-<sha1> with the log beside it, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = (
    "smtp_server",
    "smtp_commands",
    "smtp_client_replies",
    "imap_parser",
    "pop3_engine",
    "address",
    "mime",
    "dsn",
)
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    target: str
    engine: str
    executions: int
    seconds: float
    returncode: int
    crashed: bool
    artifact: str | None
    log: str | None


def _engine() -> str:
    wanted = os.environ.get("POSTKONTOR_FUZZ_ENGINE", "auto")
    if wanted != "auto":
        return wanted
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "fallback"
    return "atheris"


def run_target(target: str, *, seconds: float, runs: int | None, artifacts: Path, engine: str) -> Result:
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "corpus" / target
    env = dict(os.environ, POSTKONTOR_FUZZ_ENGINE=engine)
    with tempfile.TemporaryDirectory(prefix=f"pkfuzz-{target}-") as work:
        command = [
            sys.executable,
            str(HERE / f"{target}.py"),
            work,  # new inputs land in the first corpus directory: the temporary one
            *([str(seeds)] if seeds.is_dir() else []),
            f"-artifact_prefix={artifacts}/{target}-",
            "-print_final_stats=1",
            "-timeout=20",  # one input running this long is a hang: reported as a crash
            "-max_len=8192",
            "-rss_limit_mb=2048",
        ]
        if seconds:
            command.append(f"-max_total_time={int(max(1, seconds))}")
        if runs is not None:
            command.append(f"-runs={runs}")
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, errors="replace",
                timeout=(seconds or 600) + 120,
            )  # fmt: skip
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else ""
            output += "\n(run.py: the target did not stop in time and was killed)"
            code = -9
        elapsed = time.monotonic() - started
    counts = _EXECUTED.findall(output) or _PROGRESS.findall(output)
    executions = int(counts[-1]) if counts else 0
    artifact_match = _ARTIFACT.findall(output)
    crashed = code != 0
    log: str | None = None
    if crashed:
        log_path = artifacts / f"{target}.log"
        log_path.write_text(output, encoding="utf-8")
        log = str(log_path)
    artifact = artifact_match[-1] if artifact_match else None
    return Result(target, engine, executions, round(elapsed, 1), code, crashed, artifact, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="time per target (0: no time limit)")
    parser.add_argument("--runs", type=int, default=None, help="executions per target")
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS, metavar="TARGET")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at the same time")
    parser.add_argument("--artifacts", type=Path, default=HERE / "crashes", help="where crashing inputs go")
    parser.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    if not args.seconds and args.runs is None:
        parser.error("give --seconds or --runs")
    engine = _engine()
    artifacts = args.artifacts.resolve()

    def one(target: str) -> Result:
        return run_target(target, seconds=args.seconds, runs=args.runs, artifacts=artifacts, engine=engine)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(one, args.targets))
    print(f"{'target':<22}{'engine':<10}{'executions':>12}{'seconds':>9}  result")
    for r in results:
        outcome = f"CRASH ({r.artifact or 'no artifact'}; log {r.log})" if r.crashed else "ok"
        print(f"{r.target:<22}{r.engine:<10}{r.executions:>12}{r.seconds:>9}  {outcome}")
    print(f"total executions: {sum(r.executions for r in results)}")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2), encoding="utf-8")
    return 1 if any(r.crashed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
