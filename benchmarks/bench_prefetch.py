"""``prefetch="auto"`` against every fixed depth, at several latencies.

    python -m benchmarks.bench_prefetch [--quick]

A static, pre-encoded server in a child process (``benchmarks._static_server``) serves a
library of 8,000 tasks (201 pages of 40, the last one empty) after 0, 30, 100 and 300 ms per
request (``--latencies``). Each walk uses ``prefetch`` 0, 1, 2, 4, 6 or 8, or ``"auto"`` (the
median of fifteen interleaved runs at ~0 ms, one run otherwise). Targets: at 30, 100
and 300 ms, ``"auto"`` reaches at least 90% of the speed of the best fixed depth; at ~0 ms it
is not slower than ``prefetch=0`` (within 5%), judged by the median of the ratios of runs
made one right after the other: on a shared machine whose speed drifts by a fifth from one
second to the next, a pair shares its moment, so the drift cancels.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Literal

from kling_async import KlingSession

from ._common import (
    FakeServerProcess,
    fmt_ratio,
    machine_line,
    markdown_table,
    sigterm_as_exit,
    verdict,
)

TOKEN = "bench-token"
PAGE_SIZE = 40
DEPTHS: tuple[int | Literal["auto"], ...] = (0, 1, 2, 4, 6, 8, "auto")


async def walk_once(base_url: str, prefetch: int | Literal["auto"]) -> tuple[float, int, int]:
    """Seconds, requests and the depth in use at the end."""
    start = time.perf_counter()
    async with KlingSession(TOKEN, base_url=base_url) as kling:
        walk = kling.walk(page_size=PAGE_SIZE, prefetch=prefetch)
        async for _ in walk:
            pass
    return time.perf_counter() - start, walk.stats.requests, walk.prefetch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_prefetch", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument(
        "--latencies",
        default="0,30,100,300",
        help="comma-separated milliseconds per request (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    chosen = tuple(float(ms) / 1000 for ms in args.latencies.split(","))
    tasks, latencies = (120, (0.0, 0.01)) if args.quick else (8_000, chosen)
    print(machine_line())
    print(
        f"Walk {tasks:,} tasks (pageSize={PAGE_SIZE}) from a static server in a child process; "
        "'x best' = its speed / the fastest fixed depth's.\n",
        flush=True,
    )
    results: dict[tuple[float, int | str], tuple[float, int, int]] = {}
    paired: dict[float, float] = {}  # the median of prefetch=0 / auto, run by run
    try:
        with sigterm_as_exit():
            for latency in latencies:
                with FakeServerProcess(
                    tasks=tasks, token=TOKEN, latency=latency, static=True
                ) as server:
                    asyncio.run(walk_once(server.base_url, 0))  # warm-up
                    # Walks at ~0 ms take a fraction of a second and vary by a fifth on a
                    # shared machine: the median of fifteen, interleaved (auto right after
                    # prefetch=0 every time, for the paired ratios).
                    runs: dict[int | str, list[tuple[float, int, int]]] = {d: [] for d in DEPTHS}
                    for _ in range(15 if latency < 0.005 else 1):
                        order: tuple[int | Literal["auto"], ...] = (0, "auto", *DEPTHS[1:-1])
                        for depth in order:
                            runs[depth].append(asyncio.run(walk_once(server.base_url, depth)))
                    for key, samples in runs.items():
                        results[(latency, key)] = sorted(samples)[len(samples) // 2]
                    paired[latency] = statistics.median(
                        p0[0] / auto[0] for p0, auto in zip(runs[0], runs["auto"], strict=True)
                    )
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    rows: list[list[str]] = []
    checks: list[tuple[str, bool, str]] = []
    for latency in latencies:
        fixed = [results[(latency, d)][0] for d in DEPTHS if d != "auto"]
        best = min(fixed)
        for depth in DEPTHS:
            seconds, requests, final = results[(latency, depth)]
            rows.append(
                [
                    f"{latency * 1000:g} ms",
                    str(depth),
                    f"{seconds:.2f}",
                    str(requests),
                    str(final),
                    fmt_ratio(best / seconds),
                ]
            )
        auto = results[(latency, "auto")][0]
        if latency < 0.005:
            got = paired[latency]
            checks.append(
                (
                    f"auto not slower than prefetch=0 at {latency * 1000:g} ms "
                    "(median of paired runs, 5% noise)",
                    got >= 0.95,
                    fmt_ratio(got),
                )
            )
        else:
            got = best / auto
            checks.append(
                (
                    f"auto ≥ 0.9x the best fixed depth at {latency * 1000:g} ms",
                    got >= 0.9,
                    fmt_ratio(got),
                )
            )
    print(
        markdown_table(
            ["latency", "prefetch", "s", "requests", "depth at the end", "x best"], rows, "lrrrrr"
        )
    )
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    for text, ok, detail in checks:
        print(f"- {verdict(ok)}: {text}: {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
