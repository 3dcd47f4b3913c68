"""Whatever a server or the network does to a request, the error is a KlingError: hostile
redirect Locations (raw bytes on a socket), and open_cdn's failures before and while the body
is read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from kling_async import KlingError, KlingSession, RedirectError, TransportError

from .conftest import TOKEN, Scripted

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """Start a socket server that answers every request with the given raw bytes."""
    servers: list[asyncio.Server] = []

    async def start(response: bytes) -> str:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(response)
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


BAD_LOCATIONS = [
    b"http://[::1/x",  # unclosed IPv6 bracket
    b"//[zz]/",  # invalid IPv6 host
    b"http://h:99999/x",  # port out of range
    b"http://h:abc/",  # port not a number
    b"http://user:pa ss@/",  # user info and no host
    b"http://user:secret@127.0.0.1:9/",  # user info: aiohttp would send it as Basic auth
    b"http://\xff\xfe.example/",  # not UTF-8 (host)
    b"/\xff\xfe/path",  # not UTF-8 (path)
    b"http://" + b"a" * 300 + b".example/",  # IDNA label too long
    b"http://xn--zz--/",  # IDNA that does not round-trip
    b"mailto:someone@example.com",
    b"file:///etc/passwd",
]


@pytest.mark.parametrize("location", BAD_LOCATIONS, ids=lambda b: repr(b)[2:40])
async def test_hostile_redirect_location_is_a_redirect_error(
    raw_server: Callable[[bytes], Awaitable[str]], location: bytes
) -> None:
    """A redirect whose Location cannot be followed is a RedirectError (a KlingError), from the
    API and from open_cdn, never aiohttp's or yarl's ValueError/UnicodeError."""
    root = await raw_server(
        b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
    )
    async with KlingSession(TOKEN, base_url=root + "/v1/kling", max_retries=0) as kling:
        with pytest.raises(RedirectError) as api:
            await kling.get_assets()
        with pytest.raises(RedirectError):
            async with kling.open_cdn(root + "/file.mp4"):
                pass
    assert TOKEN not in str(api.value)


async def test_redirect_loop_is_a_redirect_error(scripted: Scripted) -> None:
    """More than 5 redirects end with RedirectError."""

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.path_qs})

    scripted.handle(loop)
    async with KlingSession(TOKEN, base_url=scripted.base_url, max_retries=0) as kling:
        with pytest.raises(RedirectError, match="more than 5 redirects"):
            async with kling.open_cdn(scripted.base_url + "/f.mp4"):
                pass


@pytest.mark.parametrize("url", ["http://[::1", "ftp://127.0.0.1/x", "", "http://u:p@h/x"])
async def test_open_cdn_refuses_unusable_urls(url: str) -> None:
    """open_cdn refuses a URL it would not follow with RedirectError, before any request."""
    kling = KlingSession(TOKEN)
    with pytest.raises(RedirectError):
        async with kling.open_cdn(url):
            pass


async def test_open_cdn_connection_refused_is_a_transport_error() -> None:
    """A CDN that refuses the connection: TransportError, not aiohttp's ClientConnectorError."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with KlingSession(TOKEN) as kling:
        with pytest.raises(TransportError) as info:
            async with kling.open_cdn(f"http://127.0.0.1:{port}/f.mp4?sig=abc"):
                pass
    assert "sig=abc" not in str(info.value)  # signed URLs stay out of messages


async def test_open_cdn_timeout_is_a_transport_error(scripted: Scripted) -> None:
    """A CDN that does not answer within the timeout: TransportError."""

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    scripted.handle(silent)
    async with KlingSession(TOKEN) as kling:
        with pytest.raises(TransportError, match="within"):
            async with kling.open_cdn(
                scripted.base_url + "/f.mp4", timeout=aiohttp.ClientTimeout(total=0.2)
            ):
                pass


async def test_open_cdn_body_cut_short_is_a_transport_error(
    raw_server: Callable[[bytes], Awaitable[str]],
) -> None:
    """A body cut short while the caller reads it inside the block: TransportError, which
    `except KlingError` around the block catches."""
    root = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this")
    kling = KlingSession(TOKEN)  # outside `async with`: open_cdn opens its own pool
    with pytest.raises(KlingError) as info:
        async with kling.open_cdn(root + "/f.mp4") as resp:
            await resp.read()
    assert isinstance(info.value, TransportError)
    assert kling._pools == {}
