"""Secrets: the API token appears in no log record (everything at DEBUG), no error (its chain
and attributes included) and no repr; ``Authorization`` goes only to base_url's origin."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from kling_async import (
    AuthenticationError,
    BadRequestError,
    DecodeError,
    KlingError,
    KlingSession,
    RateLimitError,
    ServerError,
    TransportError,
    WalkCheckpoint,
)
from kling_async._http import USER_AGENT
from kling_async.testing import FakeKlingServer, Faults

from .conftest import Scripted, make_page

SECRET = "sk-SECRET-7f3a9c"
FAST: dict[str, Any] = {"backoff_base": 0.001, "backoff_cap": 0.01}


# -- finding the token ---------------------------------------------------------------------


def leaks_in_error(
    exc: BaseException, path: str = "error", seen: set[int] | None = None
) -> list[str]:
    """Where the token shows in an exception: str, repr, args, every attribute (recursively
    into exceptions and containers), and the __cause__ / __context__ chain."""
    seen = set() if seen is None else seen
    if id(exc) in seen:
        return []
    seen.add(id(exc))
    found = [
        f"{path}.{how}"
        for how, text in (("str", str(exc)), ("repr", repr(exc)), ("args", repr(exc.args)))
        if SECRET in text
    ]
    for name, value in vars(exc).items():
        found += leaks_in_value(value, f"{path}.{name}", seen)
    for name in ("__cause__", "__context__"):
        linked = getattr(exc, name)
        if linked is not None:
            found += leaks_in_error(linked, f"{path}.{name}", seen)
    return found


def leaks_in_value(value: object, path: str, seen: set[int]) -> list[str]:
    if isinstance(value, BaseException):
        return leaks_in_error(value, path, seen)
    found = [path] if SECRET in repr(value) or SECRET in str(value) else []
    if isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            found += leaks_in_value(item, f"{path}[{i}]", seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            found += leaks_in_value(item, f"{path}[{key!r}]", seen)
    elif hasattr(value, "__dict__") and id(value) not in seen:
        seen.add(id(value))
        for name, item in vars(value).items():
            found += leaks_in_value(item, f"{path}.{name}", seen)
    return found


def assert_no_leak(exc: BaseException) -> None:
    """The token is nowhere in the error, nor in its formatted traceback (the whole chain)."""
    assert leaks_in_error(exc) == []
    assert SECRET not in "".join(traceback.format_exception(exc))


class Recorder(logging.Handler):
    """Keeps every record that reaches the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Every logger at DEBUG (root, kling_async, aiohttp, asyncio); the records, all handlers'."""
    for name in (None, "kling_async", "aiohttp", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    recorder = Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    try:
        yield recorder.records
    finally:
        root.removeHandler(recorder)
        assert_logs_clean(recorder.records + caplog.records)


def assert_logs_clean(records: list[logging.LogRecord]) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        text = "\n".join([record.getMessage(), repr(record.args), formatter.format(record)])
        assert SECRET not in text, f"token in a {record.name} log record"
        assert SECRET not in repr(vars(record))


def session(server: FakeKlingServer | Scripted, **options: Any) -> KlingSession:
    return KlingSession(SECRET, base_url=server.base_url, **{**FAST, **options})


# -- logs and errors -----------------------------------------------------------------------


async def test_no_token_in_logs_or_errors_across_failures(logs: list[logging.LogRecord]) -> None:
    """Retries, 401, exhausted 429/500/drop/timeout, broken JSON: the token shows nowhere."""
    errors: list[BaseException] = []
    async with FakeKlingServer(tasks=400, token=SECRET, seed=2) as server:
        base_url = server.base_url
        # A walk that survives every transient fault (retries logged at DEBUG).
        server.faults = Faults(
            rate=0.3,
            kinds=("429", "429_body", "500", "502", "503", "504", "drop", "slow"),
            slow_seconds=1.0,
        )
        async with session(server, timeout=0.3, max_retries=10) as kling:
            walk = kling.walk(page_size=20, prefetch=2)
            works = [w async for batch in walk for w in batch.works]
            assert works and walk.stats.retries > 0
            assert SECRET not in repr(walk) + repr(walk.stats) + repr(walk.checkpoint())

        expected = {
            "429": RateLimitError,
            "500": ServerError,
            "drop": TransportError,
            "slow": TransportError,
            "broken_json": DecodeError,
        }
        for kind, cls in expected.items():
            server.faults = Faults(rate=1.0, kinds=(kind,), slow_seconds=1.0)
            async with session(server, timeout=0.3, max_retries=2) as kling:
                with pytest.raises(cls) as info:
                    async for _ in kling.iter_works(page_size=20):
                        pass
            errors.append(info.value)
        server.faults = Faults()

        # 401: this session's token is wrong for the server, and is still the secret.
        server.token = "another-token"
        async with session(server) as kling:
            with pytest.raises(AuthenticationError) as auth:
                await kling.get_assets()
            errors.append(auth.value)
            with pytest.raises(AuthenticationError) as auth_dl:
                await kling.get_download_link(123456789)
            errors.append(auth_dl.value)
    # Nothing listening any more: connection refused.
    async with KlingSession(SECRET, base_url=base_url, max_retries=1, **FAST) as kling:
        with pytest.raises(TransportError) as refused:
            await kling.get_assets()
        errors.append(refused.value)

    assert len(errors) == len(expected) + 3
    for error in errors:
        assert isinstance(error, KlingError)
        assert_no_leak(error)
    assert any(r.name == "kling_async" and "retry" in r.getMessage() for r in logs)


async def test_no_token_in_downloads_and_cdn(logs: list[logging.LogRecord]) -> None:
    """Download links and CDN fetches: the CDN never sees Authorization, no log shows the token."""
    async with FakeKlingServer(tasks=50, token=SECRET) as server:
        async with session(server) as kling:
            page = await kling.get_assets(page_size=10)
            ids = [w.work_id for w in page.works() if w.work_id is not None][:3]
            links = [await kling.get_download_link(ids[0])]
            links.append(await kling.get_download_link(ids))
            for link in links:
                assert link.cdn_url is not None
                async with kling.http.get(link.cdn_url) as resp:
                    assert resp.status == 200
                    assert await resp.read()
            with pytest.raises(BadRequestError) as info:
                await kling.get_download_link(1)
        assert server.stats.cdn_requests == 2
        assert server.stats.cdn_auth_requests == 0
    assert_no_leak(info.value)


async def test_no_token_in_reprs() -> None:
    """repr of KlingSession, Walk, WalkStats, WalkCheckpoint, Watcher and WatchState."""
    async with FakeKlingServer(tasks=30, token=SECRET) as server, session(server) as kling:
        walk = kling.walk(page_size=10)
        [batch async for batch in walk]
        watcher = kling.watch_works(since=0, interval=0.01)
        await anext(watcher)
        await watcher.aclose()
        checkpoint = walk.checkpoint()
        shown = [kling, walk, walk.stats, checkpoint, watcher, watcher.state]
        texts = [repr(x) for x in shown] + [str(x) for x in shown]
        restored = WalkCheckpoint(next_page=1, page_size=10)
        texts.append(repr(kling.walk(resume=restored)))
    assert "token='***'" in repr(kling)
    for text in texts:
        assert SECRET not in text


async def test_no_token_in_error_from_malformed_response() -> None:
    """A response aiohttp cannot parse is a TransportError with no token in its chain."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        base_url = f"http://127.0.0.1:{port}/v1/kling"
        async with KlingSession(SECRET, base_url=base_url, max_retries=0) as kling:
            with pytest.raises(TransportError) as info:
                await kling.get_assets()
    finally:
        server.close()
        await server.wait_closed()
    assert_no_leak(info.value)


# -- where Authorization goes --------------------------------------------------------------


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A second loopback server on another port: another origin. Records its requests."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        if "bounce" in request.query:
            return web.Response(status=307, headers={"Location": request.query["bounce"]})
        return web.Response(body=make_page(1, 2), content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/")).rstrip("/"), seen
    finally:
        await server.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_other_origin_drops_authorization(
    scripted: Scripted, elsewhere: tuple[str, list[web.Request]], status: int
) -> None:
    """A redirect to another origin arrives without Authorization but with the User-Agent."""
    other_url, other_seen = elsewhere

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": f"{other_url}/mirror/assets/"})

    scripted.handle(redirect)
    async with session(scripted) as kling:
        page = await kling.get_assets()
    assert page.history
    assert scripted.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    [moved] = other_seen
    assert moved.path == "/mirror/assets/"
    assert "Authorization" not in moved.headers
    assert moved.headers["User-Agent"] == USER_AGENT


@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_within_origin_keeps_authorization(scripted: Scripted, status: int) -> None:
    """A redirect to another path of base_url's origin keeps Authorization."""

    async def handler(request: web.Request) -> web.Response:
        if request.path.startswith("/v1/kling/assets"):
            return web.Response(status=status, headers={"Location": "/v2/moved/?pageNum=1"})
        return web.Response(body=make_page(1, 2), content_type="application/json")

    scripted.handle(handler)
    async with session(scripted) as kling:
        assert (await kling.get_assets()).history
    first, moved = scripted.requests
    assert moved.path == "/v2/moved/"
    assert first.headers["Authorization"] == moved.headers["Authorization"] == f"Bearer {SECRET}"


async def test_redirect_chain_leaving_and_returning(
    scripted: Scripted, elsewhere: tuple[str, list[web.Request]]
) -> None:
    """API -> other origin -> API: Authorization is dropped for the hop, sent again back home."""
    other_url, other_seen = elsewhere
    back = str(scripted.server.make_url("/v1/kling/back/"))

    async def api(request: web.Request) -> web.Response:
        if request.path == "/v1/kling/back/":
            return web.Response(body=make_page(1, 2), content_type="application/json")
        hop = URL(f"{other_url}/hop").with_query(bounce=back)
        return web.Response(status=302, headers={"Location": str(hop)})

    scripted.handle(api)
    async with session(scripted) as kling:
        assert (await kling.get_assets()).history
    assert [r.path for r in other_seen] == ["/hop"]
    assert "Authorization" not in other_seen[0].headers
    assert other_seen[0].headers["User-Agent"] == USER_AGENT
    assert [r.path for r in scripted.requests] == ["/v1/kling/assets/", "/v1/kling/back/"]
    assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in scripted.requests)


# -- a server that echoes the token ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, f'{{"error": "bad token {SECRET}", "echo": "Bearer {SECRET}"}}'),
        (401, f"<html><pre>Authorization: Bearer {SECRET}</pre></html>"),
        (403, f'{{"error": "denied: https://api.useapi.net/x?token={SECRET}&a=1"}}'),
        (500, f"Internal error\nheaders: {{'Authorization': 'Bearer {SECRET}'}}"),
    ],
    ids=["json", "html", "in-a-url", "text"],
)
async def test_token_echoed_by_the_server_is_redacted(
    scripted: Scripted, logs: list[logging.LogRecord], status: int, body: str
) -> None:
    """An error body that echoes the token: the APIError's message, body and str show ***."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    scripted.handle(echo)
    async with session(scripted, max_retries=1) as kling:
        with pytest.raises(KlingError) as info:
            await kling.get_assets()
    assert_no_leak(info.value)
    assert "***" in str(info.value.body)  # type: ignore[attr-defined]


async def test_token_in_a_redirect_location_is_redacted(scripted: Scripted) -> None:
    """A redirect that quotes the token in a Location the client refuses: no token shown."""

    async def bounce(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"http://[{SECRET}/x"})

    scripted.handle(bounce)
    async with session(scripted, max_retries=0) as kling:
        with pytest.raises(TransportError) as info:
            await kling.get_assets()
    assert_no_leak(info.value)
