"""Any body: whatever a server sends as a page is an AssetsPage or a DecodeError, never another
exception and never a hang; a body above max_response_bytes is refused before it is in memory.

The property tests run at two levels: the sans-I/O ``_http.decode`` with many examples, and a
real loopback server + ``KlingSession.get_assets`` (one server and one session shared by every
example of a test) with fewer. ``derandomize=True`` keeps the inputs the same on every run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import APIError, AssetsPage, DecodeError, KlingSession, ServerError, _http
from kling_async._walk import decode_page
from kling_async.models import ASSETS_PAGE_DECODER
from kling_async.testing import FakeLibrary

from .conftest import TOKEN

FIXTURES = Path(__file__).parent / "fixtures"
PAGE_URL = "http://127.0.0.1:1/v1/kling/assets/?pageNum=3&pageSize=40"
MiB = 1024 * 1024

# Stable in CI: the same examples on every run, and no example database written to disk.
SANS_IO = settings(max_examples=500, deadline=None, derandomize=True, database=None)
LOOPBACK = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    # One server and one session serve every example: nothing in them needs resetting.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# -- strategies ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: ints far beyond 64 bits land in int fields
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=40,
)


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field holding the documented type, or any JSON value at all."""
    return st.one_of(good, json_values)


def some_of(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with any subset of these fields, each of them possibly mistyped."""
    return st.fixed_dictionaries({}, optional={k: either(v) for k, v in fields.items()})


ids = st.integers(min_value=-(2**70), max_value=2**70)
resource = some_of({"resource": st.text(), "height": ids, "width": ids, "duration": ids})
task_info = some_of(
    {
        "type": st.text(),
        "inputs": st.lists(some_of({"token": st.none(), "fromWorkId": ids}), max_size=2),
        "arguments": st.lists(some_of({"name": st.text(), "value": st.text()}), max_size=3),
        "extraArgs": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "callbackPayloads": st.lists(json_values, max_size=3),
    }
)
work = some_of(
    {
        "workId": ids,
        "createTime": ids,
        "status": ids,
        "contentType": st.sampled_from(["video", "image", "audio", "gif"]),
        "resource": resource,
        "cover": resource,
        "taskInfo": task_info,
        "selfComment": some_of({"rate": ids, "tags": st.lists(json_values, max_size=2)}),
        "downloadInfo": some_of({"fileTypes": st.lists(some_of({"type": st.text()}))}),
        "favored": st.booleans(),
    }
)
history_item = some_of(
    {
        "works": st.lists(work, max_size=4),
        "task": some_of({"id": ids, "taskInfo": task_info, "createTime": ids}),
        "etaTime": ids,
    }
)
page_shaped = some_of(
    {
        "history": st.lists(history_item, max_size=4),
        "limitations": st.lists(some_of({"type": st.text(), "remaining": ids}), max_size=2),
        "userPoints": some_of({"points": st.lists(some_of({"amount": ids})), "total": ids}),
        "userTickets": some_of({"ticket": st.lists(some_of({"balance": ids}))}),
    }
)


def encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


json_bodies = st.builds(encode, json_values, st.booleans())
page_bodies = st.builds(encode, page_shaped, st.booleans())

REAL_PAGES = (
    (FIXTURES / "assets-sample-200.json").read_bytes(),
    FakeLibrary(30, seed=5).page_bytes(1, 4),
)


@st.composite
def mutated_pages(draw: st.DrawFn) -> bytes:
    """A real page truncated, with a byte replaced, or with random bytes spliced in."""
    body = draw(st.sampled_from(REAL_PAGES))
    at = draw(st.integers(min_value=0, max_value=len(body)))
    how = draw(st.sampled_from(["truncate", "replace", "splice"]))
    if how == "truncate":
        return body[:at]
    if how == "replace":
        return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    return body[:at] + draw(st.binary(min_size=1, max_size=16)) + body[at:]


any_body = st.one_of(st.binary(max_size=2048), json_bodies, page_bodies)


def check_decode(body: bytes) -> AssetsPage | DecodeError:
    """The property: an AssetsPage, or a DecodeError naming the page; anything else escapes.

    Decoded as ``get_assets`` does: a field of an unexpected type is converted or None."""
    try:
        page = decode_page(body, PAGE_URL)
    except DecodeError as exc:
        assert "pageNum=3" in str(exc)
        return exc
    assert isinstance(page, AssetsPage)
    page.works()
    return page


# -- sans-I/O ------------------------------------------------------------------------------


@settings(SANS_IO, max_examples=1000)  # cheap: twice the examples
@given(st.binary(max_size=4096))
def test_decode_any_bytes(body: bytes) -> None:
    """Arbitrary bytes decode to an AssetsPage or raise DecodeError, nothing else."""
    check_decode(body)


@SANS_IO
@given(json_bodies)
def test_decode_any_json_value(body: bytes) -> None:
    """Any JSON value (st.recursive) decodes to an AssetsPage or raises DecodeError."""
    check_decode(body)


@SANS_IO
@given(page_bodies)
def test_decode_page_shaped_objects_with_random_types(body: bytes) -> None:
    """Objects shaped like pages, with random types in known fields: AssetsPage or DecodeError."""
    check_decode(body)


@SANS_IO
@given(mutated_pages())
def test_decode_mutated_real_pages(body: bytes) -> None:
    """Real pages truncated or corrupted anywhere: AssetsPage or DecodeError."""
    check_decode(body)


def test_decode_invalid_utf8_in_string_is_decode_error() -> None:
    """A page whose "type" string holds the byte 0x80 is a DecodeError naming the page."""
    with pytest.raises(DecodeError, match="pageNum=3"):
        _http.decode(
            ASSETS_PAGE_DECODER, b'{"history":[{"works":[{"type":"\x80"}]}]}', url=PAGE_URL
        )


def test_invalid_utf8_in_a_lazy_part_reads_as_none() -> None:
    """A lazy part (here the task) is not decoded with the page: its byte 0x80 is found when
    it is read, and the part reads as None, like any part that is not an object."""
    page = _http.decode(
        ASSETS_PAGE_DECODER, b'{"history":[{"task":{"type":"\x80"}}]}', url=PAGE_URL
    )
    assert page.history[0].task is None


error_bodies = st.one_of(
    st.binary(max_size=1024),
    json_bodies,
    st.builds(
        encode,
        some_of({"error": st.text(), "retryAfter": st.floats(), "code": ids}),
        st.booleans(),
    ),
)


@SANS_IO
@given(
    status=st.sampled_from([400, 401, 402, 403, 404, 418, 429, 500, 502, 503, 504]),
    body=error_bodies,
    retry_after=st.none() | st.text(max_size=40),
)
def test_error_response_any_body(status: int, body: bytes, retry_after: str | None) -> None:
    """Any error body and Retry-After header map to the status's APIError, never raise."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    error = _http.error_for_response(status, headers, body, url=PAGE_URL)
    assert isinstance(error, APIError) and error.status == status
    assert isinstance(error.message, str)
    wait = _http.retry_after(headers, body)
    assert wait is None or wait >= 0


def test_error_body_invalid_utf8_is_plain_message() -> None:
    """A 500 whose JSON "error" string holds the byte 0x80 is still a ServerError."""
    body = b'{"error":"\x80 overloaded"}'
    assert isinstance(_http.error_for_response(500, {}, body, url=PAGE_URL), ServerError)


def test_well_typed_page_shapes_decode() -> None:
    """Sanity of the strategies: the untouched real pages decode, with their works."""
    for body in REAL_PAGES:
        page = check_decode(body)
        assert isinstance(page, AssetsPage) and page.works()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


DEEP = 100_000
DEEP_BODIES = {
    "unknown field": b'{"extra":' + nested(DEEP) + b"}",
    "extraArgs": b'{"history":[{"task":{"taskInfo":{"extraArgs":{"a":' + nested(DEEP) + b"}}}}]}",
    "callbackPayloads": b'{"history":[{"works":[{"taskInfo":{"callbackPayloads":'
    + nested(DEEP)
    + b"}}]}]}",
    "selfComment.tags": b'{"history":[{"works":[{"selfComment":{"tags":' + nested(DEEP) + b"}}]}]}",
}


@pytest.mark.parametrize("where", sorted(DEEP_BODIES))
def test_decode_deeply_nested_json_is_decode_error(where: str) -> None:
    """JSON nested 100,000 deep in an unknown or Any-typed field is a DecodeError."""
    with pytest.raises(DecodeError, match="pageNum=3"):
        _http.decode(ASSETS_PAGE_DECODER, DEEP_BODIES[where], url=PAGE_URL)


def test_error_body_deeply_nested_json_is_plain_message() -> None:
    """A 500 whose JSON body is nested 100,000 deep still maps to a ServerError."""
    body = DEEP_BODIES["unknown field"]
    error = _http.error_for_response(500, {}, body, url=PAGE_URL)
    assert isinstance(error, ServerError)
    assert _http.retry_after({}, body) is None


# -- through a real loopback server --------------------------------------------------------


@dataclass
class BodyServer:
    """A loopback server answering every request with ``body`` (whole or chunked)."""

    server: TestServer
    body: bytes = b""
    chunked: bool = False
    requests: int = 0
    status: int = 200

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1/kling"))


@pytest.fixture
async def body_server() -> AsyncIterator[BodyServer]:
    """One server for every example of a property test."""
    holder: list[BodyServer] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        state = holder[0]
        state.requests += 1
        if not state.chunked:
            return web.Response(
                status=state.status, body=state.body, content_type="application/json"
            )
        resp = web.StreamResponse(status=state.status)
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(state.body), 97):
            await resp.write(state.body[i : i + 97])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    holder.append(BodyServer(server))
    try:
        yield holder[0]
    finally:
        await server.close()


@pytest.fixture
async def body_client(body_server: BodyServer) -> AsyncIterator[KlingSession]:
    """One session for every example of a property test."""
    async with KlingSession(TOKEN, base_url=body_server.base_url, max_retries=0) as kling:
        yield kling


async def fetch_through(
    server: BodyServer, kling: KlingSession, body: bytes, chunked: bool
) -> AssetsPage | DecodeError:
    server.body, server.chunked = body, chunked
    before = server.requests
    try:
        page = await asyncio.wait_for(kling.get_assets(page_num=3), 10)
    except DecodeError as exc:
        assert "pageNum=3" in str(exc)
        result: AssetsPage | DecodeError = exc
    else:
        assert isinstance(page, AssetsPage)
        result = page
    assert server.requests == before + 1  # a complete 200 is never retried
    return result


@LOOPBACK
@given(body=any_body, chunked=st.booleans())
async def test_get_assets_any_body_over_loopback(
    body_server: BodyServer, body_client: KlingSession, body: bytes, chunked: bool
) -> None:
    """Any 200 body, with Content-Length or chunked, ends as AssetsPage or DecodeError."""
    await fetch_through(body_server, body_client, body, chunked)


@LOOPBACK
@given(body=page_bodies, chunked=st.booleans())
async def test_get_assets_page_shaped_over_loopback(
    body_server: BodyServer, body_client: KlingSession, body: bytes, chunked: bool
) -> None:
    """Page-shaped JSON with random field types, over a real socket: AssetsPage or DecodeError."""
    result = await fetch_through(body_server, body_client, body, chunked)
    assert isinstance(result, DecodeError) or result == check_decode(body)


@LOOPBACK
@given(body=mutated_pages(), chunked=st.booleans())
async def test_get_assets_mutated_real_pages_over_loopback(
    body_server: BodyServer, body_client: KlingSession, body: bytes, chunked: bool
) -> None:
    """Real pages corrupted anywhere, over a real socket: AssetsPage or DecodeError."""
    await fetch_through(body_server, body_client, body, chunked)


async def test_get_assets_5xx_with_invalid_utf8_is_server_error(
    body_server: BodyServer, body_client: KlingSession
) -> None:
    """Over a real socket, a 500 whose "error" holds the byte 0x80 is a ServerError."""
    body_server.status, body_server.body = 500, b'{"error":"\x80 overloaded"}'
    with pytest.raises(ServerError):
        await body_client.get_assets()


async def test_get_assets_deeply_nested_body_is_decode_error(
    body_server: BodyServer, body_client: KlingSession
) -> None:
    """Over a real socket, a page nested 100,000 deep is a DecodeError, not a RecursionError."""
    result = await fetch_through(body_server, body_client, DEEP_BODIES["extraArgs"], False)
    assert isinstance(result, DecodeError)


# -- oversized bodies ----------------------------------------------------------------------

HUGE = 200 * 1000 * 1000  # bytes the server offers
STREAM_CHUNK = 256 * 1024


@dataclass
class Streamer:
    """What a streaming server wrote before the client hung up."""

    written: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    declare_length: bool = False


@pytest.fixture
async def streamer() -> AsyncIterator[tuple[Streamer, str]]:
    """A server offering a 200 MB JSON body in 256 KiB writes, counting what it wrote."""
    state = Streamer()
    chunk = b" " * STREAM_CHUNK

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        if state.declare_length:
            resp.content_length = HUGE
        else:
            resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            await resp.write(b'{"history": [], "pad": "')
            while state.written < HUGE:
                await resp.write(chunk)
                state.written += len(chunk)
        except ConnectionError:
            pass  # the client hung up: what it did not read was never sent
        finally:
            state.hung_up.set()
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield state, str(server.make_url("/v1/kling"))
    finally:
        await server.close()


async def refused(base_url: str, **options: Any) -> tuple[DecodeError, int]:
    """get_assets against the streamer: its DecodeError and the client's tracemalloc peak."""
    async with KlingSession(TOKEN, base_url=base_url, max_retries=0, **options) as kling:
        tracemalloc.start()
        try:
            with pytest.raises(DecodeError, match="max_response_bytes") as info:
                await asyncio.wait_for(kling.get_assets(), 30)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return info.value, peak


def test_default_max_response_bytes_is_64_mib() -> None:
    """Without max_response_bytes the cap is 64 MiB."""
    assert KlingSession(TOKEN).max_response_bytes == 64 * MiB


async def test_chunked_body_over_default_cap_refused_early(
    streamer: tuple[Streamer, str],
) -> None:
    """A 200 MB chunked body hits the default 64 MiB cap: the client hangs up long before."""
    state, base_url = streamer
    _, peak = await refused(base_url)
    await asyncio.wait_for(state.hung_up.wait(), 10)
    print(f"\nchunked 200 MB, default cap: server wrote {state.written:,} B, peak {peak:,} B")
    assert state.written < 100 * 1000 * 1000
    assert peak < 100 * 1000 * 1000


async def test_chunked_body_over_small_cap_refused_early(streamer: tuple[Streamer, str]) -> None:
    """With max_response_bytes=1 MiB, a 200 MB chunked body is dropped after a few MB."""
    state, base_url = streamer
    _, peak = await refused(base_url, max_response_bytes=MiB)
    await asyncio.wait_for(state.hung_up.wait(), 10)
    print(f"\nchunked 200 MB, 1 MiB cap: server wrote {state.written:,} B, peak {peak:,} B")
    assert state.written < 20 * MiB
    assert peak < 10 * MiB


async def test_declared_length_over_cap_refused_before_reading(
    streamer: tuple[Streamer, str],
) -> None:
    """A Content-Length of 200 MB is refused from the headers: the body is never read."""
    state, base_url = streamer
    state.declare_length = True
    error, peak = await refused(base_url)
    await asyncio.wait_for(state.hung_up.wait(), 10)
    print(f"\nContent-Length 200 MB: server wrote {state.written:,} B, peak {peak:,} B")
    assert f"body of {HUGE} bytes" in str(error)
    assert state.written < 20 * MiB
    assert peak < 10 * MiB


async def test_compressed_body_over_cap_refused(scripted: Any) -> None:
    """A 64 KB gzip body that inflates to 16 MiB is refused under a 1 MiB cap, not inflated."""
    inflated = b'{"history": [], "pad": "' + b"x" * (16 * MiB) + b'"}'
    bomb = gzip.compress(inflated, 9)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    scripted.handle(handler)
    assert len(bomb) < MiB
    _, peak = await refused(scripted.base_url, max_response_bytes=MiB)
    assert peak < 8 * MiB
