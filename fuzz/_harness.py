"""Shared machinery of the fuzz targets: the engine choice, the invariant check, the input reader and the plain
Python fallback engine.

Every target is a script (`python fuzz/<target>.py [libFuzzer flags] [corpus dirs or files]`) that imports
postkontor inside `instrumented()` and hands its `test_one_input(data: bytes)` to `main()`. With atheris (the
default when it is installed) that is libFuzzer with coverage feedback; with `POSTKONTOR_FUZZ_ENGINE=fallback`
(or without atheris) a small random mutator over the corpus runs instead, understanding the same flags, so the
smoke test and a reproduction (`python fuzz/<target>.py crash-file`) work on any machine.

The invariant of every target is "parse, or raise the protocol's own error": a target catches exactly the error
types its parser documents, and anything else that escapes `test_one_input` is a crash. This module must not
import postkontor: modules imported before `instrumented()` would not get coverage instrumentation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

ENGINE_VARIABLE = "POSTKONTOR_FUZZ_ENGINE"
STATS_LINE = "stat::number_of_executed_units:"  # libFuzzer's spelling; the fallback prints the same


def _engine() -> str:
    wanted = os.environ.get(ENGINE_VARIABLE, "auto")
    if wanted == "fallback":
        return "fallback"
    try:
        import atheris  # noqa: F401
    except ImportError:
        if wanted == "atheris":
            raise
        return "fallback"
    return "atheris"


ENGINE = _engine()


class InvariantViolation(AssertionError):
    """A target's extra property (beyond "no unexpected exception") does not hold."""


def check(condition: object, message: str) -> None:
    """An invariant; unlike `assert` it also holds under `python -O`."""
    if not condition:
        raise InvariantViolation(message)


def instrumented() -> contextlib.AbstractContextManager[Any]:
    """Wrap the postkontor imports: with atheris they get coverage instrumentation (only postkontor's own
    modules: instrumenting the stdlib too slows every run and finds nothing of ours)."""
    if ENGINE == "atheris":
        import atheris

        return atheris.instrument_imports(include=["postkontor"])
    return contextlib.nullcontext()


class Reader:
    """Structured values out of the fuzz input, the same in both engines (so corpus files mean the same thing).
    Reads past the end give zeros / empty bytes, never an error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.byte() % len(options)]

    def take(self, count: int) -> bytes:
        out = self.data[self.pos : self.pos + count]
        self.pos += len(out)
        return out

    def chunk(self) -> bytes:
        """A length-prefixed piece: one length octet (0-255)."""
        return self.take(self.byte())

    def text(self, errors: str = "replace") -> str:
        """A length-prefixed piece as text. Undecodable octets become U+FFFD by default, as in any string that
        came from the wire; "surrogateescape" gives the lone surrogates only Python-side strings can hold."""
        return self.chunk().decode("utf-8", errors)

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def split_feed(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in pieces of `size` octets (all of it at once for 0): how a socket may deliver it."""
    if size <= 0:
        yield data
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- the fallback engine --------------------------------------------------------------------------------------
class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def _load_corpus(paths: list[Path]) -> list[bytes]:
    seeds: list[bytes] = []
    for path in paths:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        seeds += [f.read_bytes() for f in files]
    return seeds or [b""]


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes], tokens: Sequence[bytes], max_len: int) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # an interesting octet
            buf[rng.randrange(len(buf))] = rng.choice((0, 0x0A, 0x0D, 0x20, 0x2E, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:  # insert random octets
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:  # delete a range
            end = min(len(buf), pos + rng.randint(1, 32))
            del buf[pos:end]
        elif op == 4 and buf:  # duplicate a range
            start = rng.randrange(len(buf))
            piece = bytes(buf[start : start + rng.randint(1, 64)])
            buf[pos:pos] = piece * rng.randint(1, 4)
        elif op == 5:  # splice in a piece of another seed
            other = rng.choice(seeds)
            if other:
                start = rng.randrange(len(other))
                buf[pos:pos] = other[start : start + rng.randint(1, 128)]
        elif op == 6 and tokens:  # a dictionary token
            buf[pos:pos] = rng.choice(tokens)
        elif op == 7 and buf:  # cut the input short
            del buf[rng.randint(0, len(buf)) :]
    return bytes(buf[:max_len])


def _fallback(test_one_input: Callable[[bytes], None], argv: list[str], tokens: Sequence[bytes]) -> int:
    options: dict[str, str] = {}
    inputs: list[Path] = []
    for arg in argv[1:]:
        if arg.startswith("-") and "=" in arg:
            name, _, value = arg[1:].partition("=")
            options[name] = value
        elif not arg.startswith("-"):
            inputs.append(Path(arg))
    if inputs and all(p.is_file() for p in inputs):
        # Reproduction, as libFuzzer does with file arguments: run each once; an exception is the result.
        for path in inputs:
            test_one_input(path.read_bytes())
            print(f"Executed {path}: no crash", file=sys.stderr)
        return 0
    max_time = float(options.get("max_total_time", "0") or 0)
    runs = int(options.get("runs", "-1"))
    timeout = float(options.get("timeout", "10"))
    max_len = int(options.get("max_len", "8192"))
    prefix = options.get("artifact_prefix", "./")
    rng = random.Random(int(options.get("seed", "0")) or None)
    seeds = _load_corpus(inputs)
    queue = list(seeds)  # seeds first, unchanged, then mutations of the seeds and of earlier inputs
    signal.signal(signal.SIGALRM, _alarm)
    start = time.monotonic()
    executed = 0
    while True:
        if runs >= 0 and executed >= runs:
            break
        if max_time and time.monotonic() - start >= max_time:
            break
        if not max_time and runs < 0 and executed >= 100_000:
            break  # neither bound given: a bounded default, never an endless loop
        if executed < len(queue):
            data = queue[executed]
        else:
            data = _mutate(rng, rng.choice(seeds) if rng.random() < 0.5 else rng.choice(queue), seeds, tokens, max_len)
            if len(queue) < 2000 and rng.random() < 0.05:
                queue.append(data)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            test_one_input(data)
        except BaseException as exc:  # every escape is a finding, a hang (_Timeout) included
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(exc, KeyboardInterrupt):
                raise
            kind = "timeout" if isinstance(exc, _Timeout) else "crash"
            artifact = Path(f"{prefix}{kind}-{hashlib.sha1(data).hexdigest()}")
            artifact.parent.mkdir(parents=True, exist_ok=True)
            artifact.write_bytes(data)
            print(f"=== Uncaught Python exception ({kind}) ===", file=sys.stderr)
            traceback.print_exc()
            print(f"Test unit written to {artifact}", file=sys.stderr)
            print(f"{STATS_LINE} {executed + 1}", file=sys.stderr)
            return 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        executed += 1
    elapsed = max(time.monotonic() - start, 1e-9)
    print(f"Done {executed} runs in {elapsed:.1f} second(s) (fallback engine)", file=sys.stderr)
    print(f"{STATS_LINE} {executed}", file=sys.stderr)
    print(f"stat::average_exec_per_sec: {int(executed / elapsed)}", file=sys.stderr)
    return 0


def _dictionary_file(name: str, tokens: Sequence[bytes]) -> str:
    """The tokens as a libFuzzer dictionary (one escaped string a line). One fixed file per target, rewritten on
    every start: libFuzzer ends the process with exit(), so a temporary file could never be cleaned up."""
    path = Path(tempfile.gettempdir()) / f"postkontor-fuzz-{name}.dict"
    lines = ['"' + "".join(f"\\x{octet:02x}" for octet in token) + '"\n' for token in tokens]
    path.write_text("".join(lines), encoding="ascii")
    return str(path)


def main(test_one_input: Callable[[bytes], None], tokens: Sequence[bytes] = ()) -> None:
    argv = list(sys.argv)
    if ENGINE == "atheris":
        import atheris

        if tokens and not any(arg.startswith("-dict=") for arg in argv):
            argv.append(f"-dict={_dictionary_file(Path(argv[0]).stem, tokens)}")
        atheris.Setup(argv, test_one_input)
        atheris.Fuzz()
        return
    sys.exit(_fallback(test_one_input, argv, tokens))
