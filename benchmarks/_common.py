"""Helpers shared by the benchmarks: timing, Markdown tables, the machine line, a fake server.

Nothing here is timed itself; every benchmark prints one Markdown table (or a few) with the
machine description above it, so a pasted result says where it was measured.
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import IO

__all__ = [
    "ROOT",
    "FakeServerProcess",
    "Timing",
    "fmt_ratio",
    "machine_line",
    "markdown_table",
    "measure",
    "measure_round_robin",
    "sigterm_as_exit",
    "verdict",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the working directory of the subprocesses a benchmark starts)."""

_PACKAGES = ("kling-async", "msgspec", "aiohttp", "orjson", "pydantic")


@dataclass
class Timing:
    """Seconds per call over several repeats; ``best`` is the least noisy estimate."""

    times: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Calls per repeat so that one repeat lasts at least ``min_time`` seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or number >= 1 << 20:
            return number
        # Aim a little past min_time so the next try usually ends the search.
        number = max(number * 2, int(number * 1.2 * min_time / max(elapsed, 1e-9)))


def measure(fn: Callable[[], object], *, repeats: int = 5, min_time: float = 0.2) -> Timing:
    """Time ``fn()``: ``repeats`` repeats of enough calls to last ``min_time`` seconds each.

    The garbage collector stays on: a client decoding pages runs with it, and a decoder that
    allocates tracked containers (dicts, lists) pays for the collections it triggers.
    """
    return measure_round_robin({"fn": fn}, repeats=repeats, min_time=min_time)["fn"]


def measure_round_robin(
    fns: Mapping[str, Callable[[], object]], *, repeats: int = 5, min_time: float = 0.2
) -> dict[str, Timing]:
    """Time several functions, interleaved: repeat 1 of each, then repeat 2 of each, ...

    Interleaving spreads the noise of a shared machine (another process waking up, frequency
    changes) over every contender instead of charging it to whichever ran at that moment.
    """
    numbers = {name: _calibrate(fn, min_time) for name, fn in fns.items()}
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            number = numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            timings[name].times.append((time.perf_counter() - start) / number)
    return timings


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> str:
    """A GitHub Markdown table; ``align`` is one letter per column (``l`` or ``r``)."""
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(w) if a == "r" else cell.ljust(w)
            for cell, w, a in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if a == "r" else "-" * (w + 2)
        for w, a in zip(widths, align, strict=True)
    )
    return "\n".join([line(headers), rule + "|", *(line(row) for row in rows)])


def fmt_ratio(value: float) -> str:
    """``2.46x``."""
    return f"{value:.2f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> str:
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return f"{total} cores"
    return f"{total} cores" if usable == total else f"{usable} of {total} cores"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        if package == "kling-async":  # a checkout that is not pip-installed
            from kling_async import __version__

            return __version__
        return "absent"


def machine_line() -> str:
    """One line: CPU, cores, OS, Python, and the versions of the packages compared."""
    versions = ", ".join(f"{p} {_version(p)}" for p in _PACKAGES)
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"Machine: {_cpu_model()}, {_cores()}, {platform.system()}; {python}; {versions}"


class FakeServerProcess:
    """The fake Kling API (``python -m kling_async.testing._cli``) in a child process.

    Its CPU and memory are the child's, never the benchmark's. Use it as a context manager:
    the child is stopped (SIGTERM, then SIGKILL) on the way out, Ctrl-C and SIGTERM included.

    Args:
        tasks: history entries of the fake library.
        token: the bearer token it accepts.
        latency: seconds the server waits before answering each assets request.
        startup_timeout: seconds allowed for the child to print its URL.
        static: serve pre-encoded pages of an unchanging library (``benchmarks._static_server``)
            instead of the fake server, so the server's work is not what is measured.
        extra: more command-line options for the server (``--clock absent``...).
    """

    def __init__(
        self,
        *,
        tasks: int,
        token: str,
        latency: float = 0.0,
        seed: int = 0,
        startup_timeout: float = 60.0,
        static: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        self.static = static
        self.extra = tuple(extra)
        self.tasks = tasks
        self.token = token
        self.latency = latency
        self.seed = seed
        self.startup_timeout = startup_timeout
        self.base_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> FakeServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks._static_server" if self.static else "kling_async.testing._cli",
            "--port",
            "0",
            "--tasks",
            str(self.tasks),
            "--token",
            self.token,
            "--latency",
            str(self.latency),
            "--seed",
            str(self.seed),
            *self.extra,
        ]
        self._stderr = tempfile.TemporaryFile()
        try:
            # A session of its own: a Ctrl-C in the terminal reaches only the benchmark, which
            # then stops the server itself, in order.
            self._proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,
            )
            self.base_url = self._read_url()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _read_url(self) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        stdout = proc.stdout
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        url = lines[0].decode().strip() if lines else ""
        if not url.startswith("http"):
            raise RuntimeError(f"the fake server did not start: {self._errors()}")
        return url

    def _errors(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-2000:]

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` so ``finally`` blocks (stopping servers) run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
