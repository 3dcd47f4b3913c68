"""Proxies: API and CDN requests through a real forward proxy on 127.0.0.1, the token only
ever in the API's Authorization header, never in a Proxy-* header or to the CDN."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from kling_async import KlingSession, cli
from kling_async._download import Downloader
from kling_async.testing import FakeKlingServer

TOKEN = "sk-proxy-test-5be1"
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


class ForwardProxy:
    """A tiny HTTP forward proxy (absolute-form requests only) that records what it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[URL, CIMultiDict[str]]] = []
        self.server: TestServer | None = None
        self.client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._forward)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.client = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            await self.server.close()

    async def _forward(self, request: web.Request) -> web.Response:
        # An absolute-form request line gives request.url its target; a request meant for
        # the proxy itself would name the proxy's own port.
        target = request.url
        self.seen.append((target, CIMultiDict(request.headers)))
        assert self.server is not None
        if target.port == self.server.port:
            return web.Response(status=400, text="not a proxy request")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP and not k.lower().startswith("proxy-")
        }
        assert self.client is not None
        async with self.client.get(target, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            out = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() not in _HOP and k.lower() != "content-length"
            }
            return web.Response(status=resp.status, body=body, headers=out)

    def api_requests(self, server: FakeKlingServer) -> list[tuple[URL, CIMultiDict[str]]]:
        return [(u, h) for u, h in self.seen if u.port == server.port]

    def cdn_requests(self, server: FakeKlingServer) -> list[tuple[URL, CIMultiDict[str]]]:
        return [(u, h) for u, h in self.seen if u.port == server.cdn_port]


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    forward = ForwardProxy()
    await forward.start()
    try:
        yield forward
    finally:
        await forward.close()


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variables from the machine running the tests (NO_PROXY would bypass
    127.0.0.1, HTTP_PROXY would send everything elsewhere)."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def assert_token_only_in_api_authorization(
    proxy: ForwardProxy, server: FakeKlingServer, token: str
) -> None:
    for url, headers in proxy.seen:
        for name, value in headers.items():
            if token in value:
                assert name.lower() == "authorization" and url.port == server.port, name
        assert "Proxy-Authorization" not in headers or token not in headers["Proxy-Authorization"]
    for _, headers in proxy.cdn_requests(server):
        assert "Authorization" not in headers


async def walk_and_download(kling: KlingSession, folder: Path) -> int:
    works = 0
    async with Downloader(kling, folder, jobs=2, file_types=["MP4", "PNG"]) as downloader:
        walk = kling.walk(page_size=10, prefetch=2, max_pages=3)
        async with aclosing(walk.__aiter__()) as batches:
            async for batch in batches:
                works += len(batch.works)
                for work in batch.works[:2]:
                    await downloader.submit(work)
        await downloader.join()
        assert downloader.stats.files >= 2 and downloader.stats.failed == 0
    await kling.get_accounts()
    return works


async def test_explicit_proxy_carries_every_request(proxy: ForwardProxy, tmp_path: Path) -> None:
    """proxy=URL: every API request (pages, download links, accounts) and every CDN file
    goes through the proxy; the token is only in the API requests' Authorization."""
    async with (
        FakeKlingServer(tasks=40, token=TOKEN, file_size=64) as server,
        KlingSession(TOKEN, base_url=server.base_url, proxy=proxy.url) as kling,
    ):
        assert await walk_and_download(kling, tmp_path) > 0
        stats = server.stats
        api_total = stats.requests + stats.downloads + stats.accounts_requests
    assert len(proxy.api_requests(server)) == api_total
    assert len(proxy.cdn_requests(server)) == stats.cdn_requests >= 2
    assert_token_only_in_api_authorization(proxy, server, TOKEN)


async def test_environment_proxy_and_no_proxy(
    proxy: ForwardProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session the client creates follows HTTP_PROXY, and NO_PROXY bypasses it."""
    async with FakeKlingServer(tasks=20, token=TOKEN, file_size=64) as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with KlingSession(TOKEN, base_url=server.base_url) as kling:
            await walk_and_download(kling, tmp_path / "a")
        through = len(proxy.seen)
        assert len(proxy.api_requests(server)) > 0 and len(proxy.cdn_requests(server)) > 0
        assert_token_only_in_api_authorization(proxy, server, TOKEN)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with KlingSession(TOKEN, base_url=server.base_url) as kling:
            await walk_and_download(kling, tmp_path / "b")
        assert len(proxy.seen) == through


async def test_given_session_keeps_its_own_proxy_settings(
    proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's aiohttp session is not routed by the environment (its trust_env decides)."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with (
        FakeKlingServer(tasks=5, token=TOKEN) as server,
        aiohttp.ClientSession() as http,
        KlingSession(TOKEN, base_url=server.base_url, session=http) as kling,
    ):
        await kling.get_assets()
    assert proxy.seen == []


async def test_proxy_credentials_go_to_the_proxy_only(proxy: ForwardProxy) -> None:
    """user:password@ in the proxy URL becomes Proxy-Authorization, never the token."""
    url = URL(proxy.url).with_user("me").with_password("s3cret")
    async with (
        FakeKlingServer(tasks=5, token=TOKEN) as server,
        KlingSession(TOKEN, base_url=server.base_url, proxy=str(url)) as kling,
    ):
        await kling.get_assets()
    (_, headers), *_ = proxy.seen
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"me:s3cret").decode()
    assert "s3cret" not in repr(kling)
    assert_token_only_in_api_authorization(proxy, server, TOKEN)


async def test_cli_proxy_option(proxy: ForwardProxy, tmp_path: Path) -> None:
    """kling-async export --proxy URL sends its requests through the proxy."""
    out = tmp_path / "w.jsonl"
    async with FakeKlingServer(tasks=30, token=TOKEN) as server:
        args = ["export", str(out), "-q", "--base-url", server.base_url, "--token", TOKEN]
        status = await asyncio.to_thread(cli.main, [*args, "--proxy", proxy.url])
        assert status == 0
        assert len(proxy.api_requests(server)) == server.stats.requests > 0
    assert_token_only_in_api_authorization(proxy, server, TOKEN)


def test_unusable_environment_proxy_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy variable that is not an http(s) URL is refused when the session is made."""
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="HTTPS_PROXY"):
        KlingSession(TOKEN)
    KlingSession(TOKEN, proxy="http://127.0.0.1:3128")  # an explicit proxy wins
