"""Session lifecycle: close() ends everything still running, even a long backoff, with a typed
error; outside `async with` nothing leaks and nothing is tied to one event loop.

No timed assertion: a close() that did not interrupt the wait would leave the task running for
300 s (the longest Retry-After the client honours), far past the generous bounds used here.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from kling_async import KlingError, KlingSession, SessionClosedError, TransportError, Work
from kling_async.testing import FakeKlingServer

from .conftest import TOKEN, Scripted, make_page

BOUND = 30.0  # far above the few milliseconds a prompt close() takes, far below the backoff


def rate_limited(scripted: Scripted, *, fast_pages: int = 0) -> list[int]:
    """Pages up to fast_pages answer; every other request gets a 429 asking for 600 s."""
    pages: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("pageNum", "1"))
        pages.append(page)
        if page > fast_pages:
            return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "600"})
        return web.Response(
            body=make_page(page, 2, total_pages=50), content_type="application/json"
        )

    scripted.handle(handler)
    return pages


async def one_page(request: web.Request) -> web.Response:
    return web.Response(body=make_page(1, 1), content_type="application/json")


async def wait_for_requests(pages: list[int], n: int) -> None:
    while len(pages) < n:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # let the client reach its backoff


@pytest.mark.parametrize("shared", [True, False], ids=["async-with", "no-async-with"])
async def test_close_ends_a_call_waiting_out_a_long_backoff(
    scripted: Scripted, shared: bool
) -> None:
    """get_assets sleeping on a 600 s Retry-After ends with SessionClosedError on close()."""
    pages = rate_limited(scripted)
    kling = KlingSession(TOKEN, base_url=scripted.base_url)
    if shared:
        await kling.__aenter__()
    task = asyncio.create_task(kling.get_assets())
    await asyncio.wait_for(wait_for_requests(pages, 1), BOUND)
    await kling.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(task, BOUND)
    assert pages == [1]  # not retried


async def test_close_ends_a_prefetching_walk_in_a_backoff(scripted: Scripted) -> None:
    """A walk whose prefetched pages all wait out a 600 s backoff ends on close()."""
    pages = rate_limited(scripted, fast_pages=1)
    got: list[Work] = []
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:

        async def consume() -> None:
            async for work in kling.iter_works(page_size=2, prefetch=3):
                got.append(work)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(wait_for_requests(pages, 5), BOUND)  # page 1, then 2-5
        await kling.close()
        with pytest.raises(SessionClosedError) as info:
            await asyncio.wait_for(task, BOUND)
    assert isinstance(info.value, KlingError)
    assert len(got) == 2


async def test_close_ends_a_watch_between_polls(kling_fake_server: FakeKlingServer) -> None:
    """A watcher sleeping its interval (an hour) ends with SessionClosedError on close()."""
    kling = KlingSession(kling_fake_server.token, base_url=kling_fake_server.base_url)
    watcher = kling.watch_works(interval=3600)

    async def consume() -> None:
        async for _ in watcher:
            pass

    task = asyncio.create_task(consume())
    while kling_fake_server.stats.requests < 1:  # the first poll sets the watermark
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await kling.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(task, BOUND)


async def test_calls_after_close_raise_session_closed(scripted: Scripted) -> None:
    """Every call, walk and `async with` after close() raises SessionClosedError."""
    scripted.handle(one_page)
    kling = KlingSession(TOKEN, base_url=scripted.base_url)
    await kling.close()
    with pytest.raises(SessionClosedError):
        await kling.get_assets()
    with pytest.raises(SessionClosedError):
        await kling.get_download_link(123)
    with pytest.raises(SessionClosedError):
        async for _ in kling.iter_works():
            pass
    with pytest.raises(SessionClosedError):
        async with kling:
            pass
    with pytest.raises(SessionClosedError):
        async with kling.open_cdn(scripted.base_url):
            pass
    assert scripted.requests == []


async def test_a_closed_aiohttp_session_is_a_kling_error(scripted: Scripted) -> None:
    """The caller's aiohttp session, closed, gives SessionClosedError, not aiohttp's
    RuntimeError."""
    scripted.handle(one_page)
    http = aiohttp.ClientSession()
    await http.close()
    kling = KlingSession(TOKEN, base_url=scripted.base_url, session=http)
    with pytest.raises(SessionClosedError, match="aiohttp"):
        await kling.get_assets()


@pytest.fixture
def threaded_server() -> Iterator[FakeKlingServer]:
    with FakeKlingServer(30, token=TOKEN, seed=3) as server:
        yield server


def test_no_async_with_no_leak_and_no_loop_binding(threaded_server: FakeKlingServer) -> None:
    """One KlingSession used without `async with` under several asyncio.run calls: every call
    and walk works, and no pool is left open (no ResourceWarning, no "Event loop is closed")."""
    kling = KlingSession(TOKEN, base_url=threaded_server.base_url)

    async def one_page() -> int:
        return len((await kling.get_assets(page_size=5)).history)

    async def walk() -> int:
        return len([w async for w in kling.iter_works(page_size=7, prefetch=2)])

    async def bare_walk() -> int:
        return sum([len(b.works) async for b in kling.walk(page_size=9)])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(one_page()) == 5
        total = asyncio.run(walk())
        assert total > 30
        assert asyncio.run(bare_walk()) == total
        assert asyncio.run(one_page()) == 5
        assert kling._pools == {}
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_async_with_in_two_loops_one_after_the_other(threaded_server: FakeKlingServer) -> None:
    """A closed session says so in the next loop; a new one works there (no loop state)."""
    kling = KlingSession(TOKEN, base_url=threaded_server.base_url)

    async def use() -> int:
        async with kling:
            return len((await kling.get_assets(page_size=3)).history)

    assert asyncio.run(use()) == 3
    with pytest.raises(SessionClosedError):
        asyncio.run(use())


async def test_close_ends_a_request_in_flight_on_the_callers_session(scripted: Scripted) -> None:
    """With session= (an aiohttp session close() must leave open), a request the server sits
    on for 600 s ends with SessionClosedError on close(); the caller's session still works."""
    started = asyncio.Event()

    async def sit(request: web.Request) -> web.Response:
        if request.query.get("pageNum") == "1":
            started.set()
            await asyncio.sleep(600)
        return web.Response(body=make_page(2, 1), content_type="application/json")

    scripted.handle(sit)
    async with aiohttp.ClientSession() as http:
        kling = KlingSession(TOKEN, base_url=scripted.base_url, session=http)
        task = asyncio.create_task(kling.get_assets())
        await asyncio.wait_for(started.wait(), BOUND)
        await kling.close()
        with pytest.raises(SessionClosedError):
            await asyncio.wait_for(task, BOUND)
        assert not http.closed
        async with http.get(scripted.base_url + "/assets/?pageNum=2") as resp:
            assert resp.status == 200


async def test_cancelling_a_call_on_the_callers_session_is_not_wrapped(
    scripted: Scripted,
) -> None:
    """Cancellation of a request on a caller's session stays a CancelledError."""
    started = asyncio.Event()

    async def sit(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(600)
        return web.Response()

    scripted.handle(sit)
    async with aiohttp.ClientSession() as http:
        kling = KlingSession(TOKEN, base_url=scripted.base_url, session=http)
        task = asyncio.create_task(kling.get_assets())
        await asyncio.wait_for(started.wait(), BOUND)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, BOUND)
        # The request's own task ended with the call.
        assert not [t for t in asyncio.all_tasks() if "_send" in repr(t.get_coro())]


async def test_no_request_after_close_between_retries(scripted: Scripted) -> None:
    """close() while a call waits to retry (Retry-After: 0, the caller's own session): the
    retry is not sent, token and all; the call ends with SessionClosedError."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if len(seen) == 1:
            return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0"})
        return web.Response(body=make_page(1, 1), content_type="application/json")

    scripted.handle(handler)
    async with aiohttp.ClientSession() as http:
        closing: list[asyncio.Task[None]] = []
        kling = KlingSession(
            TOKEN,
            base_url=scripted.base_url,
            session=http,
            on_retry=lambda *_: closing.append(asyncio.ensure_future(kling.close())),
        )
        with pytest.raises(SessionClosedError):
            await kling.get_assets()
        await asyncio.gather(*closing)
        await asyncio.sleep(0.2)
    assert len(seen) == 1, f"{len(seen) - 1} request(s) after close()"


async def test_a_closed_session_sends_and_counts_nothing(scripted: Scripted) -> None:
    """A walk of a session closed outside ``async with``: SessionClosedError before any pool
    is opened or any request counted."""
    scripted.handle(lambda request: web.Response(status=500))
    kling = KlingSession(TOKEN, base_url=scripted.base_url)
    await kling.close()
    walk = kling.walk(page_size=2)
    with pytest.raises(SessionClosedError):
        async for _ in walk:
            pass
    assert scripted.requests == []
    assert walk.stats.requests == 0


def _stalling_body(
    started: asyncio.Event,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that promises 1,000 bytes, sends 13 and then sits for 600 s."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": "1000"}
        )
        await resp.prepare(request)
        await resp.write(b'{"history": [')
        started.set()
        await asyncio.sleep(600)
        return resp

    return handler


@pytest.mark.parametrize("shared", [True, False], ids=["async-with", "no-async-with"])
async def test_close_ends_a_call_reading_a_body(scripted: Scripted, shared: bool) -> None:
    """close() while a page's body is being read (the server stalls mid-body) ends the call
    with SessionClosedError at once, not after the request's timeout."""
    started = asyncio.Event()
    scripted.handle(_stalling_body(started))
    kling = KlingSession(TOKEN, base_url=scripted.base_url, timeout=600, max_retries=0)
    if shared:
        await kling.__aenter__()
    task = asyncio.create_task(kling.get_assets())
    await asyncio.wait_for(started.wait(), BOUND)
    await asyncio.sleep(0.05)  # the client is in read()
    await kling.close()
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(task, BOUND)


async def test_close_ends_a_cdn_read(scripted: Scripted) -> None:
    """The same for a file streamed with open_cdn(): the read ends (as a TransportError,
    the next step of the download then finds the session closed)."""
    started = asyncio.Event()
    scripted.handle(_stalling_body(started))
    async with KlingSession(TOKEN, base_url=scripted.base_url, timeout=600) as kling:

        async def read() -> bytes:
            async with kling.open_cdn(scripted.base_url + "/file.mp4") as resp:
                return await resp.read()

        task = asyncio.create_task(read())
        await asyncio.wait_for(started.wait(), BOUND)
        await asyncio.sleep(0.05)
        await kling.close()
        with pytest.raises(TransportError, match="closed"):
            await asyncio.wait_for(task, BOUND)
        with pytest.raises(SessionClosedError):
            await kling.get_assets()
