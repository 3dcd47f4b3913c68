"""What the client itself costs: ``iter_works(model=...)`` against a bare aiohttp + Struct
loop, and the walk's own bookkeeping per work.

    python -m benchmarks.bench_overhead [--quick]

1. **Your own model, over HTTP.** A static, pre-encoded server in a child process
   (``benchmarks._static_server --one-work``: 20,000 tasks of one work, 40 per page, 501
   pages, 0 ms), walked whole by:

   * **bare**: one ``aiohttp.ClientSession``, ``pageNum`` 1, 2, ... with the bearer header,
     each body decoded with a ``msgspec.json.Decoder`` of a page of :class:`SmallWork` (the
     five fields a typical user reads), every work visited, until an empty ``history``;
   * **bare, one async generator**: the same loop, its works yielded by one async
     generator and counted by ``async for``: the least an ``async for work in ...`` API
     adds to the bare loop, for information (the floor of any ``iter_works``);
   * ``iter_works(model=SmallWork)`` (``prefetch=0``: one request at a time, like bare);
   * ``iter_works()``: the full :class:`~kling_async.Work`, for information.

   Target: ``iter_works(model=SmallWork)`` at least 0.95x bare (works/s, best of the
   interleaved repeats; the median of the ratios of each walk to the bare walk run right
   before it is printed too: the machine's speed drifts between seconds, a pair shares its
   moment). The client's own CPU time per work is printed beside it (``time.process_time``,
   best of the repeats), with bare's CPU per work over each contender's as "x bare (CPU)":
   what the client costs, without the server's share. It is less moved by other processes
   than the wall time, not unmoved (they share the caches and the cores).
2. **Bookkeeping, no network.** The same pages already decoded (as :class:`SmallWork` pages)
   and held in memory; the walk's fetch is replaced by a source that hands them back, so
   what is left is the walk: the planner, its checks, the batches and the generator the user
   iterates, with an empty loop body. Against the least an async iterator of works costs
   (one async generator over the same decoded pages): ``(walk - bare) / works``, in CPU time
   of the process (``time.process_time``: a shared machine's other processes do not count),
   best of the repeats each (noise only adds time). Target: at most 1 µs per work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import aiohttp
import msgspec

from kling_async import KlingSession, Walk
from kling_async._planner import PlanRequest
from kling_async._walk import _WorksPage
from kling_async.testing import FakeLibrary

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
BARE = "bare aiohttp + msgspec SmallWork"
BARE_GEN = "bare, one async generator"
MODEL = "iter_works(model=SmallWork)"
FULL = "iter_works() (full Work)"
MODEL_TARGET = 0.95
BOOKKEEPING_TARGET_US = 1.0


class SmallWork(msgspec.Struct, rename="camel", gc=False):
    """The five fields a typical user reads, declared like :class:`~kling_async.Work`."""

    work_id: int | None = None
    create_time: int | None = None
    status: int | None = None
    type: str | None = None
    content_type: str | None = None


class _SmallItem(msgspec.Struct, gc=False):
    works: list[SmallWork] = msgspec.field(default_factory=list)


class _SmallPage(msgspec.Struct, gc=False):
    history: list[_SmallItem] = msgspec.field(default_factory=list)


_SMALL_PAGE_DECODER = msgspec.json.Decoder(_SmallPage)


async def bare_walk(base_url: str) -> int:
    """What one writes without the client: sequential pages, one Struct decode per page."""
    works = 0
    headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "bench-bare"}
    url = f"{base_url}/assets/"
    async with aiohttp.ClientSession() as session:
        page_num = 1
        while True:
            params = {"pageNum": str(page_num), "pageSize": str(PAGE_SIZE)}
            async with session.get(url, params=params, headers=headers) as resp:
                resp.raise_for_status()
                page = _SMALL_PAGE_DECODER.decode(await resp.read())
            if not page.history:
                return works
            for item in page.history:
                for _work in item.works:
                    works += 1
            page_num += 1


async def bare_generator_walk(base_url: str) -> int:
    """The bare loop, its works handed out by one async generator (as any ``async for``
    API must): what that shape costs, and nothing else."""

    async def works_of() -> AsyncIterator[SmallWork]:
        headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "bench-bare"}
        url = f"{base_url}/assets/"
        async with aiohttp.ClientSession() as session:
            page_num = 1
            while True:
                params = {"pageNum": str(page_num), "pageSize": str(PAGE_SIZE)}
                async with session.get(url, params=params, headers=headers) as resp:
                    resp.raise_for_status()
                    page = _SMALL_PAGE_DECODER.decode(await resp.read())
                if not page.history:
                    return
                for item in page.history:
                    for work in item.works:
                        yield work
                page_num += 1

    works = 0
    async for _work in works_of():
        works += 1
    return works


async def model_walk(base_url: str) -> int:
    works = 0
    async with KlingSession(TOKEN, base_url=base_url) as kling:
        async for _work in kling.iter_works(page_size=PAGE_SIZE, model=SmallWork):
            works += 1
    return works


async def full_walk(base_url: str) -> int:
    works = 0
    async with KlingSession(TOKEN, base_url=base_url) as kling:
        async for _work in kling.iter_works(page_size=PAGE_SIZE):
            works += 1
    return works


Walker = Callable[[str], Coroutine[Any, Any, int]]
HTTP_CONTENDERS: dict[str, Walker] = {
    BARE: bare_walk,
    BARE_GEN: bare_generator_walk,
    MODEL: model_walk,
    FULL: full_walk,
}


def run_http(tasks: int, repeats: int) -> tuple[int, dict[str, Timing], dict[str, Timing]]:
    """Every contender against one static server, interleaved, ``repeats`` times: the wall
    time of each walk, and the CPU time of this process (the client) during it."""
    timings = {name: Timing() for name in HTTP_CONTENDERS}
    cpu = {name: Timing() for name in HTTP_CONTENDERS}
    counts: set[int] = set()
    with FakeServerProcess(tasks=tasks, token=TOKEN, static=True, extra=("--one-work",)) as server:
        for walker in HTTP_CONTENDERS.values():  # warm-up: the server encodes each page
            counts.add(asyncio.run(walker(server.base_url)))
        for _ in range(repeats):
            for name, walker in HTTP_CONTENDERS.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                counts.add(asyncio.run(walker(server.base_url)))
                timings[name].times.append(time.perf_counter() - start)
                cpu[name].times.append(time.process_time() - start_cpu)
    if len(counts) != 1:
        raise RuntimeError(f"the contenders counted different numbers of works: {counts}")
    return counts.pop(), timings, cpu


# --------------------------------------------------------------------------- bookkeeping


def decoded_pages(tasks: int) -> list[_WorksPage[SmallWork]]:
    """The library's pages of one work per task, decoded as the walk decodes them."""
    library = FakeLibrary(tasks, seed=0)
    decoder = msgspec.json.Decoder(_WorksPage[SmallWork])
    pages = []
    for page_num in range(1, -(-tasks // PAGE_SIZE) + 2):
        raw = msgspec.json.decode(library.page_bytes(page_num, PAGE_SIZE))
        for item in raw["history"]:
            item["works"] = item["works"][:1]
        pages.append(decoder.decode(msgspec.json.encode(raw)))
    return pages


async def bare_loop(pages: Sequence[_WorksPage[SmallWork]]) -> tuple[int, float]:
    """No walk and no generator: every work of every page, fetched as the walk fetches."""

    async def source(page_num: int) -> _WorksPage[SmallWork]:
        return pages[page_num - 1]

    works = 0
    start = time.process_time()
    for page_num in range(1, len(pages) + 1):
        page = await source(page_num)
        for item in page.history:
            for _work in item.works:
                works += 1
    return works, time.process_time() - start


async def bare_generator(pages: Sequence[_WorksPage[SmallWork]]) -> tuple[int, float]:
    """The least an async iterator of works costs: one async generator, nothing else."""

    async def source(page_num: int) -> _WorksPage[SmallWork]:
        return pages[page_num - 1]

    async def works_of() -> AsyncIterator[SmallWork]:
        for page_num in range(1, len(pages) + 1):
            page = await source(page_num)
            for item in page.history:
                for work in item.works:
                    yield work

    works = 0
    start = time.process_time()
    async for _work in works_of():
        works += 1
    return works, time.process_time() - start


async def walk_memory(pages: Sequence[_WorksPage[SmallWork]]) -> tuple[int, float]:
    """``iter_works(model=SmallWork)`` with the network replaced by the decoded pages."""
    works = 0
    async with KlingSession(TOKEN, base_url="http://127.0.0.1:9/v1/kling") as kling:
        start = time.process_time()
        walk: Walk[SmallWork] = kling.walk(page_size=PAGE_SIZE, model=SmallWork)
        empty = pages[-1]

        async def source(req: PlanRequest) -> Any:
            page = pages[req.page_num - 1] if req.page_num <= len(pages) else empty
            return walk._answer(page, b"", "", head=req.page_num == 1)

        walk._fetch = source  # type: ignore[method-assign]
        async for _work in kling._works(walk):
            works += 1
        elapsed = time.process_time() - start
        if walk.stats.requests:
            raise RuntimeError("the in-memory walk sent a request")
    return works, elapsed


def run_memory(tasks: int, repeats: int) -> tuple[int, dict[str, Timing]]:
    pages = decoded_pages(tasks)
    contenders = {
        "bare loop": bare_loop,
        "bare async generator": bare_generator,
        "iter_works(model=SmallWork)": walk_memory,
    }
    timings = {name: Timing() for name in contenders}
    counts: set[int] = set()
    gc.collect()
    for _ in range(repeats):
        for name, walker in contenders.items():
            works, elapsed = asyncio.run(walker(pages))
            counts.add(works)
            timings[name].times.append(elapsed)
    if len(counts) != 1:
        raise RuntimeError(f"the contenders counted different numbers of works: {counts}")
    return counts.pop(), timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_overhead", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    tasks, repeats = (200, 1) if args.quick else (20_000, args.repeats)
    print(machine_line())
    try:
        with sigterm_as_exit():
            works, http, cpu = run_http(tasks, repeats)
            mem_works, memory = run_memory(tasks, 3 * repeats)
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    pages = -(-tasks // PAGE_SIZE) + 1
    print(
        f"\n{tasks:,} tasks of one work ({works:,} works, {pages} pages of {PAGE_SIZE}), "
        f"static server in a child process at 0 ms; best of {repeats} interleaved repeats.\n"
    )
    bare, bare_cpu = http[BARE].best, cpu[BARE].best
    paired = statistics.median(
        b / m for b, m in zip(http[BARE].times, http[MODEL].times, strict=True)
    )
    rows = [
        [
            name,
            f"{t.best:.3f}",
            f"{t.median:.3f}",
            f"{works / t.best:,.0f}",
            f"{t.best / works * 1e6:.2f}",
            fmt_ratio(bare / t.best),
            f"{cpu[name].best / works * 1e6:.2f}",
            fmt_ratio(bare_cpu / cpu[name].best),
        ]
        for name, t in http.items()
    ]
    header = ["contender", "best s", "median s", "works/s", "µs/work", "x bare"]
    print(markdown_table([*header, "client CPU µs/work", "x bare (CPU)"], rows))
    base = memory["bare async generator"].best
    walked = memory["iter_works(model=SmallWork)"].best
    per_work = (walked - base) / mem_works * 1e6
    print(
        f"\nBookkeeping: the same {mem_works:,} works already decoded, in memory (no network), "
        "loop body empty.\n"
    )
    print(
        markdown_table(
            ["contender", "best s", "median s", "µs/work"],
            [
                [name, f"{t.best:.4f}", f"{t.median:.4f}", f"{t.best / mem_works * 1e6:.2f}"]
                for name, t in memory.items()
            ],
        )
    )
    print(f"\nwalk bookkeeping: {per_work:.2f} µs per work\n")
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    ratio = bare / http[MODEL].best
    ok = ratio >= MODEL_TARGET
    print(
        f"- {verdict(ok)} {MODEL} is {fmt_ratio(ratio)} bare (target >= {MODEL_TARGET}x); "
        f"median of the paired repeats {fmt_ratio(paired)}; by the client's CPU per work "
        f"{fmt_ratio(bare_cpu / cpu[MODEL].best)} bare (bare's over ours; {BARE_GEN}: "
        f"{fmt_ratio(bare / http[BARE_GEN].best)} wall, "
        f"{fmt_ratio(bare_cpu / cpu[BARE_GEN].best)} CPU)"
    )
    ok = per_work <= BOOKKEEPING_TARGET_US
    print(
        f"- {verdict(ok)} walk bookkeeping {per_work:.2f} µs per work "
        f"(target <= {BOOKKEEPING_TARGET_US:g} µs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
