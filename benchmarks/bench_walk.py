"""Walk a whole library end to end: works per second against the fake server.

    python -m benchmarks.bench_walk [--quick]

The fake server (``python -m kling_async.testing._cli``) runs in a child process, one per
latency, so its page generation never shares the client's interpreter. Contenders:

* **naive**: one ``aiohttp.ClientSession``, ``pageNum`` 1, 2, ... with the bearer header,
  ``json.loads(await resp.read())``, counting works until a page has an empty ``history``;
* ``iter_works(prefetch=0)``: the client's default, one request at a time;
* ``iter_works(prefetch=4)``: four pages requested ahead of the one being consumed.

At 0 ms of server latency this measures client overhead (request, read, decode, walk
bookkeeping); at 100 ms per page it measures how well prefetch hides the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    with FakeServerProcess(tasks=scenario.tasks, token=TOKEN, latency=scenario.latency) as server:
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_walk", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        scenarios = [Scenario(0.0, 100, 1), Scenario(0.02, 100, 1)]
    else:
        # ~500 pages at 0 ms; 40 pages at 100 ms (prefetch=0 needs >= 4 s for them).
        scenarios = [Scenario(0.0, 20_000, 5), Scenario(0.1, 1_600, 2)]
    print(machine_line())
    print(
        f"Walk the whole library, pageSize={PAGE_SIZE}, fake server in a child process; "
        "best and median of the repeats; 'x X' = its works/s / X's.\n",
        flush=True,
    )
    try:
        with sigterm_as_exit():
            results = [run_scenario(s) for s in scenarios]
    except KeyboardInterrupt:
        print("interrupted; the fake server was stopped", file=sys.stderr)
        return 130
    table, checks = report(results)
    print(table)
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    for text, ok, detail in checks:
        label = "INFO" if text.startswith("(info)") else verdict(ok)
        print(f"- {label}: {text.removeprefix('(info) ')}: {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
