"""Walk a whole library end to end: works per second, and what prefetch buys at 100 ms.

    python -m benchmarks.bench_walk [--quick]

The server runs in a child process: a static, pre-encoded copy of the fake library
(``benchmarks._static_server``) so that its page generation is not what is measured, or the
fake server itself where works must arrive during the walk. Three tables:

1. **Overhead and latency**, contenders:

* **naive**: one ``aiohttp.ClientSession``, ``pageNum`` 1, 2, ... with the bearer header,
  ``json.loads(await resp.read())``, counting works until a page has an empty ``history``;
* ``iter_works(prefetch=0)``: the client's default, one request at a time;
* ``iter_works(prefetch=4)``: four pages requested ahead of the one being consumed.

   At 0 ms of server latency this measures client overhead (request, read, decode, walk
   bookkeeping); at 100 ms per page it measures how well prefetch hides the latency.
2. **Clock modes** (``currentTimestamp`` absent, honest, constant, coarse, backwards, skewed
   between backends): 4,000 tasks (101 pages of 40, the last one empty) at 100 ms per
   request, ``prefetch`` 0, 2 and 4, with the requests each walk sent. The walk never reads
   the server's clock, so no mode may be slower; target: ``prefetch=4`` ≥ 4.2x
   ``prefetch=0`` with at most 1.25x its requests, in every mode.
3. **Steady arrivals**: works arriving at the head (0.1 and 0.5 tasks per request) while the
   walk runs, at 100 ms: ``prefetch=4`` should not be slower than ``prefetch=0``. Each walk
   against a fresh library, ``prefetch`` 0 and 4 interleaved, ``--arrival-repeats`` times
   (5): medians and ranges, and the median of the paired ratios (the verdict allows 1% for
   the noise of a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from kling_async import KlingSession

from ._common import (
    FakeServerProcess,
    Timing,
    fmt_ratio,
    machine_line,
    markdown_table,
    sigterm_as_exit,
    verdict,
)

TOKEN = "bench-token"
PAGE_SIZE = 40
NAIVE = "naive aiohttp + json.loads"
P0 = "iter_works(prefetch=0)"
P4 = "iter_works(prefetch=4)"


async def naive_walk(base_url: str, token: str, page_size: int = PAGE_SIZE) -> int:
    """What one writes without the client: sequential pages until an empty history."""
    works = 0
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "bench-naive"}
    url = f"{base_url}/assets/"
    async with aiohttp.ClientSession() as session:
        page_num = 1
        while True:
            params = {"pageNum": str(page_num), "pageSize": str(page_size)}
            async with session.get(url, params=params, headers=headers) as resp:
                resp.raise_for_status()
                data = json.loads(await resp.read())
            history = data.get("history") or []
            if not history:
                return works
            for item in history:
                works += len(item.get("works") or [])
            page_num += 1


async def client_walk(base_url: str, token: str, prefetch: int, page_size: int = PAGE_SIZE) -> int:
    """The client, counting and dropping works (nothing is kept)."""
    works = 0
    async with KlingSession(token, base_url=base_url) as kling:
        async for _work in kling.iter_works(page_size=page_size, prefetch=prefetch):
            works += 1
    return works


Walker = Callable[[str], Coroutine[Any, Any, int]]

CONTENDERS: dict[str, Walker] = {
    NAIVE: lambda url: naive_walk(url, TOKEN),
    P0: lambda url: client_walk(url, TOKEN, 0),
    P4: lambda url: client_walk(url, TOKEN, 4),
}


@dataclass
class Scenario:
    latency: float
    tasks: int
    repeats: int


@dataclass
class Result:
    scenario: Scenario
    works: int
    pages: int
    timings: dict[str, Timing]


def run_scenario(scenario: Scenario) -> Result:
    """One server at this latency; every contender, interleaved, ``repeats`` times."""
    timings = {name: Timing() for name in CONTENDERS}
    counts: set[int] = set()
    with FakeServerProcess(
        tasks=scenario.tasks, token=TOKEN, latency=scenario.latency, static=True
    ) as server:
        # A warm-up walk of a few pages: imports, first connection, server caches.
        asyncio.run(_warm_up(server.base_url))
        for _ in range(scenario.repeats):
            for name, walker in CONTENDERS.items():
                start = time.perf_counter()
                counts.add(asyncio.run(walker(server.base_url)))
                timings[name].times.append(time.perf_counter() - start)
    if len(counts) != 1:
        raise RuntimeError(f"the contenders counted different numbers of works: {counts}")
    pages = -(-scenario.tasks // PAGE_SIZE) + 1  # the final empty page included
    return Result(scenario, counts.pop(), pages, timings)


async def _warm_up(base_url: str) -> None:
    async with KlingSession(TOKEN, base_url=base_url) as kling:
        async for _page in kling.iter_pages(page_size=PAGE_SIZE, max_pages=3):
            pass


def report(results: Sequence[Result]) -> tuple[str, list[tuple[str, bool, str]]]:
    rows: list[list[str]] = []
    rates: dict[tuple[float, str], float] = {}
    for result in results:
        latency_ms = f"{result.scenario.latency * 1000:g} ms"
        naive = result.timings[NAIVE].best
        p0 = result.timings[P0].best
        for name, timing in result.timings.items():
            t = timing.best
            rates[(result.scenario.latency, name)] = result.works / t
            rows.append(
                [
                    latency_ms,
                    f"{result.works:,} works / {result.pages} pages",
                    name,
                    f"{t:.2f}",
                    f"{timing.median:.2f}",
                    f"{result.works / t:,.0f}",
                    f"{result.pages / t:,.1f}",
                    fmt_ratio(naive / t),
                    fmt_ratio(p0 / t),
                ]
            )
    table = markdown_table(
        [
            "latency",
            "library",
            "walker",
            "best s",
            "median s",
            "works/s",
            "pages/s",
            "x naive",
            "x prefetch=0",
        ],
        rows,
        "lllrrrrrr",
    )
    checks: list[tuple[str, bool, str]] = []
    latencies = [r.scenario.latency for r in results]
    low, high = min(latencies), max(latencies)
    got = rates[(low, P0)] / rates[(low, NAIVE)]
    checks.append((f"{P0} ≥ 1.5x naive at {low * 1000:g} ms", got >= 1.5, fmt_ratio(got)))
    p4 = rates[(low, P4)] / rates[(low, NAIVE)]
    checks.append((f"(info) {P4} vs naive at {low * 1000:g} ms", True, fmt_ratio(p4)))
    if high > low:
        got = rates[(high, P4)] / rates[(high, P0)]
        checks.append((f"{P4} ≥ 3.5x {P0} at {high * 1000:g} ms", got >= 3.5, fmt_ratio(got)))
    return table, checks


def print_checks(checks: Sequence[tuple[str, bool, str]]) -> None:
    for text, ok, detail in checks:
        label = "INFO" if text.startswith("(info)") else verdict(ok)
        print(f"- {label}: {text.removeprefix('(info) ')}: {detail}")


CLOCKS = ("absent", "honest", "constant", "coarse", "backwards", "skewed")
DEPTHS = (0, 2, 4)


@dataclass
class WalkRun:
    seconds: float
    requests: int
    works: int


async def _counted_walk(base_url: str, prefetch: int) -> WalkRun:
    start = time.perf_counter()
    async with KlingSession(TOKEN, base_url=base_url) as kling:
        walk = kling.walk(page_size=PAGE_SIZE, prefetch=prefetch)
        works = 0
        async for batch in walk:
            works += len(batch.works)
    return WalkRun(time.perf_counter() - start, walk.stats.requests, works)


def run_clocks(tasks: int, latency: float, repeats: int) -> dict[tuple[str, int], WalkRun]:
    """Every clock mode x prefetch depth: the best of ``repeats`` walks."""
    runs: dict[tuple[str, int], WalkRun] = {}
    for clock in CLOCKS:
        with FakeServerProcess(
            tasks=tasks, token=TOKEN, latency=latency, static=True, extra=("--clock", clock)
        ) as server:
            for _ in range(repeats):
                for depth in DEPTHS:
                    run = asyncio.run(_counted_walk(server.base_url, depth))
                    best = runs.get((clock, depth))
                    if best is None or run.seconds < best.seconds:
                        runs[(clock, depth)] = run
    return runs


def run_arrivals(
    tasks: int, latency: float, inserts: float, repeats: int = 5
) -> dict[int, list[WalkRun]]:
    """prefetch 0 and 4 while works arrive, each against a fresh library, interleaved
    ``repeats`` times: every walk, in order, per depth."""
    runs: dict[int, list[WalkRun]] = {0: [], 4: []}
    for _ in range(repeats):
        for depth in (0, 4):
            with FakeServerProcess(
                tasks=tasks,
                token=TOKEN,
                latency=latency,
                extra=("--inserts-per-request", str(inserts)),
            ) as server:
                runs[depth].append(asyncio.run(_counted_walk(server.base_url, depth)))
    return runs


def report_clocks(
    runs: dict[tuple[str, int], WalkRun], latency: float
) -> tuple[str, list[tuple[str, bool, str]]]:
    rows: list[list[str]] = []
    checks: list[tuple[str, bool, str]] = []
    worst_speed, worst_requests = float("inf"), 0.0
    for clock in CLOCKS:
        base = runs[(clock, 0)]
        for depth in DEPTHS:
            run = runs[(clock, depth)]
            rows.append(
                [
                    clock,
                    str(depth),
                    f"{run.seconds:.2f}",
                    f"{run.requests}",
                    fmt_ratio(base.seconds / run.seconds),
                    fmt_ratio(run.requests / base.requests),
                ]
            )
        p4 = runs[(clock, 4)]
        worst_speed = min(worst_speed, base.seconds / p4.seconds)
        worst_requests = max(worst_requests, p4.requests / base.requests)
    table = markdown_table(
        ["clock", "prefetch", "best s", "requests", "x prefetch=0", "requests x prefetch=0"],
        rows,
        "lrrrrr",
    )
    ms = f"{latency * 1000:g} ms"
    checks.append(
        (f"{P4} ≥ 4.2x {P0} at {ms}, every clock mode", worst_speed >= 4.2, fmt_ratio(worst_speed))
    )
    checks.append(
        (
            f"{P4} sends ≤ 1.25x the requests of {P0}, every clock mode",
            worst_requests <= 1.25,
            fmt_ratio(worst_requests),
        )
    )
    return table, checks


def report_arrivals(
    runs: dict[float, dict[int, list[WalkRun]]],
) -> tuple[str, list[tuple[str, bool, str]]]:
    rows: list[list[str]] = []
    checks: list[tuple[str, bool, str]] = []
    for inserts, by_depth in runs.items():
        base = by_depth[0]
        base_median = statistics.median(r.seconds for r in base)
        for depth, walks in by_depth.items():
            seconds = [r.seconds for r in walks]
            requests = sorted(r.requests for r in walks)
            median = statistics.median(seconds)
            paired = [b.seconds / r.seconds for b, r in zip(base, walks, strict=True)]
            rows.append(
                [
                    f"{inserts:g}",
                    str(depth),
                    f"{walks[0].works:,}",
                    f"{median:.2f}",
                    f"{min(seconds):.2f}-{max(seconds):.2f}",
                    f"{requests[0]}-{requests[-1]}",
                    fmt_ratio(base_median / median),
                    f"{fmt_ratio(min(paired))}-{fmt_ratio(max(paired))}",
                ]
            )
        paired4 = [b.seconds / r.seconds for b, r in zip(base, by_depth[4], strict=True)]
        got = statistics.median(paired4)
        text = (
            f"{P4} not slower than {P0} with {inserts:g} new tasks per request "
            f"(median of {len(paired4)} paired runs ≥ 0.99x)"
        )
        checks.append((text, got >= 0.99, fmt_ratio(got)))
    table = markdown_table(
        [
            "arrivals/request",
            "prefetch",
            "works",
            "median s",
            "range s",
            "requests",
            "x prefetch=0 (medians)",
            "x prefetch=0 (paired runs)",
        ],
        rows,
        "rrrrrrrr",
    )
    return table, checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_walk", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument(
        "--arrival-repeats",
        type=int,
        default=5,
        metavar="N",
        help="interleaved walks per depth in the steady-arrivals table (default 5)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        scenarios = [Scenario(0.0, 100, 1), Scenario(0.02, 100, 1)]
        clock_tasks, clock_latency, clock_repeats = 120, 0.01, 1
        arrival_tasks = 120
    else:
        # ~500 pages at 0 ms; 40 pages at 100 ms (prefetch=0 needs >= 4 s for them).
        scenarios = [Scenario(0.0, 20_000, 5), Scenario(0.1, 1_600, 2)]
        clock_tasks, clock_latency, clock_repeats = 4_000, 0.1, 1
        arrival_tasks = 2_000
    rates = (0.1, 0.5)
    print(machine_line())
    print(
        f"Walk the whole library, pageSize={PAGE_SIZE}, server in a child process; "
        "best and median of the repeats; 'x X' = its works/s / X's.\n",
        flush=True,
    )
    try:
        with sigterm_as_exit():
            results = [run_scenario(s) for s in scenarios]
            clocks = run_clocks(clock_tasks, clock_latency, clock_repeats)
            arrivals = {
                r: run_arrivals(
                    arrival_tasks, clock_latency, r, 1 if args.quick else args.arrival_repeats
                )
                for r in rates
            }
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    table, checks = report(results)
    print(table)
    print()
    clock_table, clock_checks = report_clocks(clocks, clock_latency)
    print(
        f"Clock modes: {clock_tasks:,} tasks at {clock_latency * 1000:g} ms per request "
        "(currentTimestamp as the server stamps it; the walk never reads it).\n"
    )
    print(clock_table)
    print()
    arrival_table, arrival_checks = report_arrivals(arrivals)
    repeats = len(next(iter(arrivals.values()))[0])
    print(
        f"Steady arrivals: {arrival_tasks:,} tasks, new tasks at the head before each request, "
        f"{clock_latency * 1000:g} ms per request; each walk against a fresh library, "
        f"prefetch 0 and 4 interleaved, {repeats} times.\n"
    )
    print(arrival_table)
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    print_checks([*checks, *clock_checks, *arrival_checks])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
