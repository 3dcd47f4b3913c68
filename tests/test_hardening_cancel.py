"""Cancellation: breaking out of a walk, cancelling mid-request or mid-retry-sleep, and closing
the session with pages in flight leave no connection, no task of the client and no warning; a
cancelled task raises CancelledError promptly and its request is never retried.

The server is the ``scripted`` aiohttp TestServer, which cancels a handler when its client
hangs up: its ``in_flight`` count dropping to 0 is the server seeing the connections closed.
Server latencies are 30 s, so the one timing bound (< 0.5 s from ``cancel()`` to
``CancelledError``) is far from noise.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kling_async import KlingSession, SessionClosedError, Work

from .conftest import TOKEN, Scripted, make_page

LONG = 30.0  # server latency: a cancellation that waited for it would be obvious
PROMPT = 0.5  # seconds from task.cancel() to CancelledError: the bound the issue demands
SOON = 5.0  # generous bound for the server to see a hang-up, never reached when healthy


PAGE = 2  # entries per page the scripted server serves, and the size the walks ask


def ahead(prefetch: int) -> int:
    """Pages a walk keeps in flight while its consumer holds a page: none without prefetch
    (the next page is asked when the consumer wants it), else the prefetch depth plus the
    page that takes over when one is answered."""
    return prefetch + 1 if prefetch else 0


@dataclass
class Tracker:
    """What the server saw: requests by page (head probes apart) and handlers running."""

    pages: list[int] = field(default_factory=list)
    probes: int = 0
    in_flight: int = 0

    @property
    def requests(self) -> int:
        return len(self.pages)


def slow_api(
    scripted: Scripted, *, fast_pages: int = 0, status: int = 200, retry_after: str = "30"
) -> Tracker:
    """Pages 1..fast_pages answer at once; any other request sleeps LONG (or is a 429)."""
    tracker = Tracker()

    async def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("pageNum", "1"))
        probe = request.query.get("pageSize") == "1"
        if probe:
            tracker.probes += 1
        else:
            tracker.pages.append(page)
        tracker.in_flight += 1
        try:
            if page > fast_pages:
                if status == 429:
                    return web.json_response(
                        {"error": "busy"}, status=429, headers={"Retry-After": retry_after}
                    )
                await asyncio.sleep(LONG)
            return web.Response(
                body=make_page(page, PAGE, total_pages=50), content_type="application/json"
            )
        finally:
            tracker.in_flight -= 1

    scripted.handle(handler)
    return tracker


def session(scripted: Scripted, **options: Any) -> KlingSession:
    return KlingSession(
        TOKEN, base_url=scripted.base_url, backoff_base=0.001, backoff_cap=0.01, **options
    )


def client_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running the client's coroutines (the in-process server's tasks aside)."""
    names = ("Walk.", "KlingSession.", "Watcher.")
    return [
        t
        for t in asyncio.all_tasks()
        if any(name in repr(t.get_coro()) for name in names) and t is not asyncio.current_task()
    ]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (up to SOON) for a condition the event loop brings about."""
    deadline = time.monotonic() + SOON
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {SOON} s: {what}"
        await asyncio.sleep(0.01)


async def cancel_promptly(task: asyncio.Task[Any]) -> float:
    """Cancel a task; assert it raises CancelledError within PROMPT; return the latency."""
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    elapsed = time.monotonic() - started
    print(f"\ncancel -> CancelledError in {elapsed * 1000:.1f} ms")
    assert elapsed < PROMPT
    return elapsed


def server_connections(scripted: Scripted) -> int:
    """Connections the server still has open."""
    runner = scripted.server.runner
    assert runner is not None and runner.server is not None
    return len(runner.server.connections)


async def assert_all_released(
    tracker: Tracker, connector: aiohttp.BaseConnector | None, scripted: Scripted | None = None
) -> None:
    """No client task left, no connection held, and the server saw the connections close.

    With the session open, the pool has every connection back (idle keep-alive ones may stay
    open); with it closed (``scripted`` given), the server has no connection left at all.
    """
    await eventually(lambda: not client_tasks(), "client tasks finished")
    await eventually(lambda: tracker.in_flight == 0, "server handlers ended by the hang-up")
    assert connector is not None
    if scripted is None:
        assert len(connector._acquired) == 0
    else:
        assert connector.closed
        await eventually(lambda: server_connections(scripted) == 0, "server connections closed")


# -- breaking out of a walk ----------------------------------------------------------------


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_break_out_of_iter_works_with_aclosing(scripted: Scripted, prefetch: int) -> None:
    """Breaking out (aclosing) cancels the prefetched requests before the block ends."""
    tracker = slow_api(scripted, fast_pages=1)
    async with session(scripted) as kling:
        async with aclosing(kling.iter_works(page_size=PAGE, prefetch=prefetch)) as works:
            async for _ in works:
                await eventually(lambda: tracker.in_flight == ahead(prefetch), "prefetch in flight")
                assert len(client_tasks()) == ahead(prefetch)  # the filter sees the requests
                break
        assert client_tasks() == []
        await assert_all_released(tracker, kling.http.connector)
        # Still usable, and nothing was asked twice.
        assert (await kling.get_assets(page_num=1, page_size=PAGE)).history
    assert Counter(tracker.pages[:-1]) == Counter(range(1, ahead(prefetch) + 2))


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_break_out_of_iter_works_plain(scripted: Scripted, prefetch: int) -> None:
    """A plain break (no aclosing): the dropped generator cancels its requests soon after."""
    tracker = slow_api(scripted, fast_pages=1)
    async with session(scripted) as kling:
        async for _ in kling.iter_works(page_size=PAGE, prefetch=prefetch):
            await eventually(lambda: tracker.in_flight == ahead(prefetch), "prefetch in flight")
            break
        await assert_all_released(tracker, kling.http.connector)
    assert Counter(tracker.pages) == Counter(range(1, ahead(prefetch) + 2))


# -- cancelling a task ---------------------------------------------------------------------


async def test_cancel_mid_request(scripted: Scripted) -> None:
    """Cancelling get_assets while the server sits on the request: prompt, one request."""
    tracker = slow_api(scripted)
    async with session(scripted) as kling:
        task = asyncio.create_task(kling.get_assets())
        await eventually(lambda: tracker.in_flight == 1, "request in flight")
        assert client_tasks() == [task]
        await cancel_promptly(task)
        await assert_all_released(tracker, kling.http.connector)
        await asyncio.sleep(0.2)  # a retry would have been sent by now
    assert tracker.pages == [1]


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_cancel_walk_mid_request(scripted: Scripted, prefetch: int) -> None:
    """Cancelling a walk with pages in flight: prompt, each page asked once, nothing left."""
    tracker = slow_api(scripted, fast_pages=1)
    got: list[Work] = []
    async with session(scripted) as kling:

        async def consume() -> None:
            async for work in kling.iter_works(page_size=PAGE, prefetch=prefetch):
                got.append(work)

        task = asyncio.create_task(consume())
        await eventually(lambda: tracker.in_flight == prefetch + 1, "pages in flight")
        # A task per page in flight; one page at a time, it is awaited in the caller's task.
        assert len(client_tasks()) == (prefetch + 1 if prefetch else 0)
        await cancel_promptly(task)
        await assert_all_released(tracker, kling.http.connector)
        await asyncio.sleep(0.2)
    assert len(got) == PAGE
    assert Counter(tracker.pages) == Counter(range(1, prefetch + 3))


async def test_cancel_mid_retry_sleep(scripted: Scripted) -> None:
    """Cancelling during a 30 s Retry-After sleep: prompt, and the 429 is not asked again."""
    tracker = slow_api(scripted, status=429, retry_after="30")
    async with session(scripted, max_retries=5) as kling:
        task = asyncio.create_task(kling.get_assets())
        await eventually(lambda: tracker.requests == 1 and tracker.in_flight == 0, "the 429")
        await asyncio.sleep(0.05)
        await cancel_promptly(task)
        await assert_all_released(tracker, kling.http.connector)
        await asyncio.sleep(0.2)
    assert tracker.pages == [1]


async def test_cancel_walk_mid_shared_retry_sleep(scripted: Scripted) -> None:
    """A prefetching walk held back by a 30 s Retry-After: cancel is prompt, no retry sent."""
    tracker = slow_api(scripted, fast_pages=1, status=429, retry_after="30")
    async with session(scripted) as kling:

        async def consume() -> None:
            async for _ in kling.iter_works(page_size=PAGE, prefetch=4):
                pass

        task = asyncio.create_task(consume())
        await eventually(
            lambda: tracker.requests >= 6 and tracker.in_flight == 0, "page 1 and the 429s"
        )
        await asyncio.sleep(0.05)
        await cancel_promptly(task)
        await assert_all_released(tracker, kling.http.connector)
        await asyncio.sleep(0.2)
    # Pages 2-6 got a 429: none was asked again.
    assert set(tracker.pages) >= {1, 2, 3, 4, 5, 6}
    assert max(Counter(tracker.pages).values()) == 1


# -- closing the session with pages in flight ----------------------------------------------


async def test_leave_async_with_while_prefetching(scripted: Scripted) -> None:
    """Cancelled inside `async with KlingSession` with 5 pages in flight: prompt, all closed."""
    tracker = slow_api(scripted, fast_pages=1)
    connectors: list[aiohttp.BaseConnector | None] = []

    async def consume() -> None:
        async with session(scripted) as kling:
            connectors.append(kling.http.connector)
            async for _ in kling.iter_works(page_size=PAGE, prefetch=4):
                pass

    task = asyncio.create_task(consume())
    await eventually(lambda: tracker.in_flight == 5, "pages 2-6 in flight")
    await cancel_promptly(task)
    await assert_all_released(tracker, connectors[0], scripted)
    assert Counter(tracker.pages) == Counter(range(1, 7))


async def test_cancel_consumer_busy_between_works(scripted: Scripted) -> None:
    """Cancelled while handling a work (not awaiting a page), pages in flight: all released."""
    tracker = slow_api(scripted, fast_pages=1)
    connectors: list[aiohttp.BaseConnector | None] = []
    busy = asyncio.Event()

    async def consume() -> None:
        async with session(scripted) as kling:
            connectors.append(kling.http.connector)
            async for _ in kling.iter_works(page_size=PAGE, prefetch=4):
                busy.set()
                await asyncio.sleep(LONG)

    task = asyncio.create_task(consume())
    await busy.wait()
    await eventually(lambda: tracker.in_flight == 5, "pages 2-6 in flight")
    await cancel_promptly(task)
    await assert_all_released(tracker, connectors[0], scripted)


def open_pool(kling: KlingSession) -> aiohttp.BaseConnector | None:
    """The connector of the pool a call outside `async with` opened (the only one)."""
    (pool,) = kling._pools.values()
    return pool.http.connector


@pytest.mark.parametrize("shared", [True, False], ids=["async-with", "no-async-with"])
async def test_close_session_while_prefetching(scripted: Scripted, shared: bool) -> None:
    """kling.close() with 5 pages in flight, inside `async with` or not: the walk ends with
    SessionClosedError, nothing is left, and no page is asked again."""
    tracker = slow_api(scripted, fast_pages=1)
    kling = session(scripted)
    if shared:
        await kling.__aenter__()

    async def consume() -> None:
        async for _ in kling.iter_works(page_size=PAGE, prefetch=4):
            pass

    task = asyncio.create_task(consume())
    await eventually(lambda: tracker.in_flight == 5, "pages 2-6 in flight")
    connector = kling.http.connector if shared else open_pool(kling)
    started = time.monotonic()
    await kling.close()
    with pytest.raises(SessionClosedError, match="closed"):
        await asyncio.wait_for(task, SOON)
    print(f"\nclose -> walk ended in {(time.monotonic() - started) * 1000:.1f} ms")
    await assert_all_released(tracker, connector, scripted)
    assert Counter(tracker.pages) == Counter(range(1, 7))  # no page asked again
    with pytest.raises(SessionClosedError):
        await kling.get_assets()


async def test_close_then_cancel_each_prompt(scripted: Scripted) -> None:
    """Cancelling three get_assets stuck on the server, then closing: nothing left behind."""
    tracker = slow_api(scripted)
    kling = session(scripted)
    tasks = [asyncio.create_task(kling.get_assets(page_num=n)) for n in (1, 2, 3)]
    await eventually(lambda: tracker.in_flight == 3, "three requests in flight")
    connector = open_pool(kling)  # the three calls share the pool they opened
    for task in tasks:
        await cancel_promptly(task)
    assert kling._pools == {}  # the last of them closed it
    await kling.close()
    await assert_all_released(tracker, connector, scripted)
    assert sorted(tracker.pages) == [1, 2, 3]
