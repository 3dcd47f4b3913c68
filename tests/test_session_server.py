"""KlingSession against a real aiohttp server on 127.0.0.1: paging, retries, timeouts,
connection release and session ownership."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from kling_async import (
    AuthenticationError,
    DecodeError,
    KlingSession,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
)

from .conftest import TOKEN, Scripted, make_page


def pages(total_pages: int = 3, tasks: int = 2, per_task: int = 1):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        page_num = int(request.query.get("pageNum", "1"))
        body = make_page(page_num, tasks, per_task=per_task, total_pages=total_pages)
        return web.Response(body=body, content_type="application/json")

    return handler


def fast(scripted: Scripted, **kwargs: object) -> KlingSession:
    """A session on the scripted server with tiny backoff."""
    options: dict[str, object] = {"backoff_base": 0.001, "backoff_cap": 0.01}
    options.update(kwargs)
    return KlingSession(TOKEN, base_url=scripted.base_url, **options)  # type: ignore[arg-type]


async def test_iter_works_walks_until_empty_page(scripted: Scripted) -> None:
    """Every work of every history item, in order, then one request for the empty page."""
    scripted.handle(pages(total_pages=3, tasks=2, per_task=2))
    async with fast(scripted) as kling:
        works = [w async for w in kling.iter_works(page_size=2)]
    expected = [(p * 1000 + t) * 10 + w for p in (1, 2, 3) for t in range(2) for w in range(2)]
    assert [w.work_id for w in works] == expected
    assert [r.query["pageNum"] for r in scripted.requests] == ["1", "2", "3", "4"]
    assert {r.query["pageSize"] for r in scripted.requests} == {"2"}
    assert scripted.requests[0].path == "/v1/kling/assets/"


async def test_iter_pages_from_start_page(scripted: Scripted) -> None:
    """iter_pages yields decoded pages from start_page on."""
    scripted.handle(pages(total_pages=4))
    async with fast(scripted) as kling:
        got = [p async for p in kling.iter_pages(start_page=3, page_size=2)]
    assert [p.history[0].task.id for p in got if p.history[0].task] == [3000, 4000]
    assert [r.query["pageNum"] for r in scripted.requests] == ["3", "4", "5"]


async def test_max_items_stops_without_further_requests(scripted: Scripted) -> None:
    """max_items yields exactly that many works and asks for no page beyond need."""
    scripted.handle(pages(total_pages=10, tasks=2))
    async with fast(scripted) as kling:
        works = [w async for w in kling.iter_works(page_size=2, max_items=3)]
    assert len(works) == 3
    assert [r.query["pageNum"] for r in scripted.requests] == ["1", "2"]


async def test_walk_holds_one_page(scripted: Scripted) -> None:
    """Breaking out early leaves no request in flight and the session reusable."""
    scripted.handle(pages(total_pages=50))
    async with fast(scripted) as kling:
        async for _ in kling.iter_works():
            break
        assert len(scripted.requests) == 1
        assert (await kling.get_assets(page_num=2)).history


async def test_retries_429_then_succeeds(scripted: Scripted) -> None:
    """429s are retried, honouring Retry-After, and the same page is asked again."""
    calls = {"n": 0}
    ok = pages()

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "0"})
        return await ok(request)

    scripted.handle(handler)
    async with fast(scripted) as kling:
        page = await kling.get_assets(page_num=2)
    assert page.history
    assert [r.query["pageNum"] for r in scripted.requests] == ["2", "2", "2"]


async def test_retry_after_is_honoured(scripted: Scripted) -> None:
    """A Retry-After of 0.3 s delays the retry by about that much, not by the tiny backoff."""
    calls = {"n": 0}
    ok = pages()

    async def handler(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.json_response({"error": "busy", "retryAfter": 0.3}, status=429)
        return await ok(request)

    scripted.handle(handler)
    async with fast(scripted) as kling:
        started = time.monotonic()
        await kling.get_assets()
    assert time.monotonic() - started >= 0.29


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_retried_then_raised(scripted: Scripted, status: int) -> None:
    """A 5xx that persists is retried max_retries times, then raised as ServerError."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>Bad Gateway</body></html>", status=status, content_type="text/html"
        )

    scripted.handle(handler)
    async with fast(scripted, max_retries=3) as kling:
        with pytest.raises(ServerError) as info:
            await kling.get_assets()
    assert info.value.status == status
    assert "Bad Gateway" in info.value.message
    assert len(scripted.requests) == 4


@pytest.mark.parametrize(
    ("status", "cls"), [(401, AuthenticationError), (404, NotFoundError), (400, Exception)]
)
async def test_client_errors_never_retried(
    scripted: Scripted, status: int, cls: type[Exception]
) -> None:
    """400/401/404 are raised at once: one request."""

    async def handler(request: web.Request) -> web.Response:
        if status == 404:
            return web.Response(text="404: Not Found", status=404)
        return web.json_response({"error": "nope", "code": status}, status=status)

    scripted.handle(handler)
    async with fast(scripted) as kling:
        with pytest.raises(cls):
            await kling.get_assets()
    assert len(scripted.requests) == 1


async def test_broken_json_is_decode_error_not_retried(scripted: Scripted) -> None:
    """A complete 200 with broken JSON raises DecodeError naming the page, after one request."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b'{"history": [{"works": [', content_type="application/json")

    scripted.handle(handler)
    async with fast(scripted) as kling:
        with pytest.raises(DecodeError, match="pageNum=7") as info:
            await kling.get_assets(page_num=7)
    assert info.value.__cause__ is not None
    assert len(scripted.requests) == 1


async def test_dropped_body_is_retried(scripted: Scripted) -> None:
    """A connection closed mid-body (declared length never reached) is retried."""
    calls = {"n": 0}
    ok = pages()

    async def handler(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = 10_000
            await resp.prepare(request)
            await resp.write(b'{"history": [')
            assert request.transport is not None
            request.transport.close()
            return resp
        return await ok(request)

    scripted.handle(handler)
    async with fast(scripted) as kling:
        page = await kling.get_assets()
    assert page.history and calls["n"] == 2


async def test_timeout_retried_then_transport_error(scripted: Scripted) -> None:
    """A response slower than timeout is retried, then raised as TransportError."""

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    scripted.handle(handler)
    async with fast(scripted, timeout=0.1, max_retries=1) as kling:
        with pytest.raises(TransportError, match=r"within 0\.1 s"):
            await kling.get_assets()
    assert len(scripted.requests) == 2


async def test_connection_refused_is_transport_error() -> None:
    """Nothing listening: TransportError after the retries, the cause chained."""
    async with KlingSession(
        TOKEN, base_url="http://127.0.0.1:9/v1/kling", max_retries=1, backoff_base=0.001
    ) as kling:
        with pytest.raises(TransportError) as info:
            await kling.get_assets()
    assert info.value.__cause__ is not None


async def test_rate_limit_exhausted(scripted: Scripted) -> None:
    """Persistent 429 ends in RateLimitError with retry_after."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "0"})

    scripted.handle(handler)
    async with fast(scripted, max_retries=2) as kling:
        with pytest.raises(RateLimitError) as info:
            await kling.get_assets()
    assert info.value.retry_after == 0.0 and len(scripted.requests) == 3


async def test_walk_retries_same_page_never_restarts(scripted: Scripted) -> None:
    """A walk that meets a 503 on page 2 asks page 2 again and goes on to the end."""
    seen: list[str] = []
    ok = pages(total_pages=3)

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query["pageNum"])
        if seen.count("2") == 1 and request.query["pageNum"] == "2":
            return web.Response(status=503, text="down")
        return await ok(request)

    scripted.handle(handler)
    async with fast(scripted) as kling:
        works = [w async for w in kling.iter_works(page_size=2)]
    assert len(works) == 6
    assert seen == ["1", "2", "2", "3", "4"]


async def test_error_raised_at_its_page(scripted: Scripted) -> None:
    """Works of earlier pages are yielded before the error of a later page is raised."""
    ok = pages(total_pages=3)

    async def handler(request: web.Request) -> web.Response:
        if request.query["pageNum"] == "2":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await ok(request)

    scripted.handle(handler)
    got = []
    async with fast(scripted) as kling:
        with pytest.raises(AuthenticationError):
            async for work in kling.iter_works():
                got.append(work)
    assert len(got) == 2


async def test_connections_released(scripted: Scripted) -> None:
    """After a walk, errors and retries, every connection is back in the pool."""
    ok = pages(total_pages=5)
    flaky = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        flaky["n"] += 1
        if flaky["n"] % 3 == 0:
            return web.Response(status=500, text="x")
        return await ok(request)

    scripted.handle(handler)
    async with fast(scripted) as kling:
        works = [w async for w in kling.iter_works()]
        assert len(works) == 10
        connector = kling.http.connector
        assert connector is not None
        assert sum(len(c) for c in connector._acquired_per_host.values()) == 0


async def test_owned_session_closed_passed_session_kept(scripted: Scripted) -> None:
    """The session closes its own aiohttp session, never one it was given."""
    scripted.handle(pages())
    async with fast(scripted) as kling:
        await kling.get_assets()
        own = kling.http
    assert own.closed
    async with aiohttp.ClientSession() as mine:
        async with fast(scripted, session=mine) as kling:
            await kling.get_assets()
        assert not mine.closed
        async with mine.get(scripted.base_url + "/assets/") as resp:
            assert resp.status == 200


async def test_cancellation_propagates_during_retry_sleep(scripted: Scripted) -> None:
    """Cancelling a task sleeping between retries raises CancelledError promptly."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "30"})

    scripted.handle(handler)
    async with fast(scripted) as kling:
        task = asyncio.create_task(kling.get_assets())
        while not scripted.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5
    assert len(scripted.requests) == 1


async def test_oversized_body_refused(scripted: Scripted) -> None:
    """A body above max_response_bytes is a DecodeError, with or without Content-Length."""
    big = json.dumps({"history": [], "pad": "x" * 5000}).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.query["pageNum"] == "1":
            return web.Response(body=big, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 1000):
            await resp.write(big[i : i + 1000])
        await resp.write_eof()
        return resp

    scripted.handle(handler)
    async with fast(scripted, max_response_bytes=4096) as kling:
        with pytest.raises(DecodeError, match="max_response_bytes"):
            await kling.get_assets(page_num=1)
        with pytest.raises(DecodeError, match="max_response_bytes"):
            await kling.get_assets(page_num=2)
    assert len(scripted.requests) == 2


async def test_open_cdn_never_sends_the_token(scripted: Scripted) -> None:
    """open_cdn follows redirects by hand, with a User-Agent and never Authorization, even on
    the API's own origin; a redirect to a non-http(s) URL is refused."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/file.mp4":
            return web.Response(body=b"data")
        if request.path.endswith("/evil"):
            raise web.HTTPFound("file:///etc/passwd")
        raise web.HTTPFound("/file.mp4")

    scripted.handle(handler)
    async with fast(scripted) as kling:
        async with kling.open_cdn(scripted.base_url + "/start") as resp:
            assert resp.status == 200 and await resp.read() == b"data"
        with pytest.raises(TransportError, match="non-http"):
            async with kling.open_cdn(scripted.base_url + "/evil"):
                pass
    assert [r.path for r in scripted.requests] == ["/v1/kling/start", "/file.mp4", "/v1/kling/evil"]
    assert all("Authorization" not in r.headers for r in scripted.requests)
    assert all(r.headers["User-Agent"].startswith("kling-async/") for r in scripted.requests)
