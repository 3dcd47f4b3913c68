"""``kling-async export`` against a naive exporting script: speed and CPU per work.

    python -m benchmarks.bench_export [--quick]

The static server (``benchmarks._static_server``: every page of the fake library encoded
once, answered at 0 ms) runs in a child process, so its CPU is never the contenders'. Each
contender is a process of its own, timed wall to wall, its CPU (user + sys) read from
``os.wait4``:

* **naive script**: one ``aiohttp.ClientSession``, ``pageNum`` 1, 2, ... (same page size),
  each page decoded once into ``msgspec.Raw`` per work, those bytes written as lines, then
  flush and ``fsync`` after every page (``python -m benchmarks.bench_export --naive ...``);
* ``kling-async export`` with its defaults (``--prefetch auto``, ``--commit-interval 1``);
* ``kling-async export --commit-interval 0``: a commit (3 fsyncs and a rename) after every
  page, as before group commit (for information).

Targets: ``kling-async export`` at least 0.9x the naive script's works/s, and at most 1.3x its
CPU per work, in the same run. Every output is checked to hold the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from ._common import (
    ROOT,
    FakeServerProcess,
    fmt_ratio,
    machine_line,
    markdown_table,
    sigterm_as_exit,
    verdict,
)

TOKEN = "bench-token"
PAGE_SIZE = 40
NAIVE = "naive script (fsync per page)"
OURS = "kling-async export"
PER_PAGE = "kling-async export --commit-interval 0"
CONTENDERS = (NAIVE, OURS, PER_PAGE)


# -- the naive script (child process) --------------------------------------------------------


class _Item(msgspec.Struct):
    works: list[msgspec.Raw] = []


class _Page(msgspec.Struct):
    history: list[_Item] = []


async def naive_export(base_url: str, out: str, page_size: int = PAGE_SIZE) -> int:
    """What one writes without the client: sequential pages, each decoded once into
    ``msgspec.Raw`` per work, the bytes written as lines, fsync after each page."""
    decoder = msgspec.json.Decoder(_Page)
    headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "bench-naive"}
    works = 0
    async with aiohttp.ClientSession() as session:
        with open(out, "wb") as file:
            page_num = 1
            while True:
                params = {"pageNum": str(page_num), "pageSize": str(page_size)}
                async with session.get(f"{base_url}/assets/", params=params, headers=headers) as r:
                    r.raise_for_status()
                    body = await r.read()
                page = decoder.decode(body)
                if not page.history:
                    return works
                for item in page.history:
                    for raw in item.works:
                        file.write(bytes(raw) + b"\n")
                        works += 1
                file.flush()
                os.fsync(file.fileno())
                page_num += 1


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Run:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def cpu_best(self) -> float:
        return min(self.cpu)


def command(name: str, base_url: str, out: Path) -> list[str]:
    if name == NAIVE:
        return [sys.executable, "-m", "benchmarks.bench_export", "--naive", base_url, str(out)]
    cmd = [sys.executable, "-m", "kling_async", "export", str(out), "--base-url", base_url]
    cmd += ["--token", TOKEN, "-q", "--force"]
    if name == PER_PAGE:
        cmd += ["--commit-interval", "0"]
    return cmd


def run_once(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[3:5]} failed with exit status {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(tasks: int, repeats: int) -> tuple[int, dict[str, Run]]:
    runs = {name: Run() for name in CONTENDERS}
    server_process = FakeServerProcess(tasks=tasks, token=TOKEN, static=True)
    with tempfile.TemporaryDirectory() as tmp, server_process as server:
        outs = {name: Path(tmp) / f"{i}.jsonl" for i, name in enumerate(CONTENDERS)}
        # Warm-up: the server encodes each page on first use; imports, the page cache.
        for name in CONTENDERS:
            run_once(command(name, server.base_url, outs[name]))
        for _ in range(repeats):
            for name in CONTENDERS:
                wall, cpu = run_once(command(name, server.base_url, outs[name]))
                runs[name].wall.append(wall)
                runs[name].cpu.append(cpu)
        contents = {outs[name].read_bytes() for name in CONTENDERS}
        if len(contents) != 1:
            raise RuntimeError("the contenders wrote different files")
        works = contents.pop().count(b"\n")
    return works, runs


def report(works: int, runs: dict[str, Run]) -> tuple[str, list[tuple[str, bool, str]]]:
    naive = runs[NAIVE]
    rows = []
    for name, run in runs.items():
        rows.append(
            [
                name,
                f"{run.best:.2f}",
                f"{works / run.best:,.0f}",
                fmt_ratio(naive.best / run.best),
                f"{run.cpu_best / works * 1e6:.1f}",
                fmt_ratio(run.cpu_best / naive.cpu_best),
            ]
        )
    table = markdown_table(
        ["contender", "best s", "works/s", "speed x naive", "CPU µs/work", "CPU x naive"], rows
    )
    speed = naive.best / runs[OURS].best
    cpu = runs[OURS].cpu_best / naive.cpu_best
    checks = [
        (f"{OURS} ≥ 0.9x the naive script's works/s", speed >= 0.9, fmt_ratio(speed)),
        (f"{OURS} CPU per work ≤ 1.3x the naive script's", cpu <= 1.3, fmt_ratio(cpu)),
    ]
    return table, checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_export", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--tasks", type=int, default=22_750, help="tasks (~2.2 works each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive is not None:
        asyncio.run(naive_export(*args.naive))
        return 0
    tasks, repeats = (100, 1) if args.quick else (args.tasks, args.repeats)
    print(machine_line())
    print(
        f"Export the whole library to JSONL, pageSize={PAGE_SIZE}, static server at 0 ms in a "
        f"child process, each contender a process; best of {repeats}; CPU = user + sys.\n",
        flush=True,
    )
    try:
        with sigterm_as_exit():
            works, runs = measure(tasks, repeats)
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    table, checks = report(works, runs)
    print(f"{works:,} works\n")
    print(table)
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    for text, ok, detail in checks:
        print(f"- {verdict(ok)}: {text}: {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
