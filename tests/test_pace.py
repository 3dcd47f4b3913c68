"""The session-wide pace (min_request_interval), shared backoff, max_retry_after, on_retry
and the announcement of long waits. Spacing is measured on the server's side, with lower
bounds only."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from contextlib import aclosing
from pathlib import Path

import pytest
from aiohttp import web

from kling_async import KlingSession, RateLimitError
from kling_async._download import Downloader
from kling_async._retry import RequestGate
from kling_async.testing import FakeKlingServer

from .conftest import Scripted, make_page

INTERVAL = 0.15


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_pace_spaces_every_api_request_of_the_session(tmp_path: Path) -> None:
    """A prefetching walk and downloads running at once: the server sees the API requests
    at least min_request_interval apart; CDN files are not paced."""
    async with (
        FakeKlingServer(tasks=30, file_size=64) as server,
        KlingSession(
            server.token, base_url=server.base_url, min_request_interval=INTERVAL
        ) as kling,
        Downloader(kling, tmp_path, jobs=3, file_types=["MP4", "PNG"]) as downloader,
    ):
        walk = kling.walk(page_size=5, prefetch=3, max_pages=4)
        async with aclosing(walk.__aiter__()) as batches:
            async for batch in batches:
                for work in batch.works[:2]:
                    await downloader.submit(work)
        await downloader.join()
        times = server.stats.api_times
        assert server.stats.downloads >= 2 and server.stats.requests >= 4
        assert server.stats.cdn_requests >= 2
    assert len(times) == server.stats.requests + server.stats.downloads
    assert min(gaps(times)) >= 0.9 * INTERVAL


async def test_backoff_pauses_every_caller_of_the_session(scripted: Scripted) -> None:
    """A 429 with Retry-After on one request holds back another caller's request too."""
    arrivals: list[tuple[str, float]] = []
    first = True

    async def handler(request: web.Request) -> web.Response:
        nonlocal first
        arrivals.append((request.query.get("pageNum", "?"), time.monotonic()))
        if first:
            first = False
            return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "0.5"})
        return web.Response(body=make_page(1, 1), content_type="application/json")

    scripted.handle(handler)
    retried = asyncio.Event()
    async with KlingSession(
        "tok", base_url=scripted.base_url, on_retry=lambda *a: retried.set()
    ) as kling:
        one = asyncio.create_task(kling.get_assets(page_num=1))
        await retried.wait()
        await kling.get_assets(page_num=2)  # another caller, after the 429 was received
        await one
    (_, t429), *rest = arrivals
    later = [t for page, t in rest if page == "2"]
    assert later and later[0] - t429 >= 0.9 * 0.5


async def test_on_retry_and_max_retry_after(
    scripted: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    """on_retry gets (status, attempt, delay) before each wait; a Retry-After longer than
    max_retry_after is waited out for max_retry_after, then retried."""
    answers = iter([(429, "50"), (503, None), (200, None)])

    async def handler(request: web.Request) -> web.Response:
        status, after = next(answers)
        if status == 200:
            return web.Response(body=make_page(1, 1), content_type="application/json")
        headers = {"Retry-After": after} if after else {}
        return web.json_response({"error": "x"}, status=status, headers=headers)

    scripted.handle(handler)
    calls: list[tuple[int | None, int, float]] = []
    caplog.set_level(logging.DEBUG, logger="kling_async")
    async with KlingSession(
        "tok",
        base_url=scripted.base_url,
        max_retry_after=0.05,
        backoff_base=0.01,
        on_retry=lambda status, attempt, delay: calls.append((status, attempt, delay)),
    ) as kling:
        await kling.get_assets()
    assert [(s, a) for s, a, _ in calls] == [(429, 1), (503, 2)]
    assert calls[0][2] == 0.05
    assert "429 from the API: waiting 0 s (retry 1/5); Retry-After 50 s capped" in caplog.text


async def test_long_wait_logged_at_info_before_it_starts(
    scripted: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429 with Retry-After: 120 is logged at INFO (and on_retry called) before the wait
    starts; cancelling during that wait is not swallowed."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "120"})

    scripted.handle(handler)
    caplog.set_level(logging.INFO, logger="kling_async")
    retried = asyncio.Event()
    async with KlingSession(
        "tok", base_url=scripted.base_url, on_retry=lambda *args: retried.set()
    ) as kling:
        task = asyncio.create_task(kling.get_assets())
        await retried.wait()
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert infos == ["429 from the API: waiting 120 s (retry 1/5)"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(scripted.requests) == 1


async def test_retries_exhausted_still_raise(scripted: Scripted) -> None:
    """The shared backoff changes nothing about giving up: the last error is raised."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "0"})

    scripted.handle(handler)
    async with KlingSession("tok", base_url=scripted.base_url, max_retries=2) as kling:
        with pytest.raises(RateLimitError):
            await kling.get_assets()
    assert len(scripted.requests) == 3


async def test_gate_announces_long_pace_waits() -> None:
    """A pace wait over 2 s is announced to listeners (without sleeping it out here)."""
    gate = RequestGate(base=0, cap=0, min_interval=3.0)
    heard: list[tuple[str, float]] = []
    gate.announcers.append(lambda message, seconds: heard.append((message, seconds)))
    await gate.acquire()  # the first request goes at once
    task = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert heard and heard[0][0].startswith("pacing requests: waiting 3 s")


def test_arguments_are_checked() -> None:
    """Negative or non-finite pace and caps, a bad proxy or on_retry are refused at once."""
    for kwargs in (
        {"min_request_interval": -1},
        {"min_request_interval": float("nan")},
        {"max_retry_after": float("inf")},
        {"proxy": "ftp://proxy:21"},
    ):
        with pytest.raises(ValueError):
            KlingSession("tok", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        KlingSession("tok", on_retry=5)  # type: ignore[arg-type]
    kling = KlingSession("tok", min_request_interval=1.5, max_retry_after=60)
    assert kling.min_request_interval == 1.5 and kling.max_retry_after == 60
