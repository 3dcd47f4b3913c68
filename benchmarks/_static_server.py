"""A static, pre-encoded assets API for the benchmarks, so the server is not what is measured.

    python -m benchmarks._static_server --tasks 4000 --latency 0.1 --clock absent

Pages come from :class:`kling_async.testing.FakeLibrary` (the same bytes the fake server
sends), encoded once per ``(pageNum, pageSize)`` on first use and then served from memory
after ``--latency`` seconds. ``currentTimestamp`` is stamped per request as ``--clock`` says
(the modes of :data:`kling_async.testing._server.CLOCK_MODES`) by replacing a placeholder in
the cached bytes. The library does not change: for works arriving during a walk, use the
fake server itself. Prints its base URL on stdout, then serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence

import msgspec
from aiohttp import web

from kling_async.testing._library import FakeLibrary
from kling_async.testing._server import CLOCK_MODES

_PLACEHOLDER = 9_999_999_999_999
_PLACEHOLDER_BYTES = str(_PLACEHOLDER).encode()


class StaticApi:
    """The assets endpoint over a fixed library, every page encoded once."""

    def __init__(
        self, tasks: int, token: str, latency: float, clock: str, one_work: bool = False
    ) -> None:
        self.library = FakeLibrary(tasks, seed=0)
        self.one_work = one_work
        self.token = token
        self.latency = latency
        self.clock = clock
        self.requests = 0
        self._cache: dict[tuple[int, int], bytes] = {}

    def _stamp(self, body: bytes) -> bytes:
        mode = self.clock
        if mode in ("absent", "library"):
            return body
        now = int(time.time() * 1000)
        value = {
            "constant": 1_744_858_514_499,
            "coarse": now // 1000 * 1000,
            "backwards": 1_744_858_514_499 - 1000 * self.requests,
            "skewed": now + (5000 if self.requests % 2 else 0),
        }.get(mode, now)
        return body.replace(_PLACEHOLDER_BYTES, str(value).encode())

    async def assets(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "Unauthorized", "code": 401}, status=401)
        try:
            page_num = int(request.query.get("pageNum", "1"))
            page_size = int(request.query.get("pageSize", "40"))
        except ValueError:
            return web.json_response({"error": "Invalid parameters"}, status=400)
        if page_num < 1 or page_size < 1:
            return web.json_response({"error": "Invalid parameters"}, status=400)
        if self.latency:
            await asyncio.sleep(self.latency)
        key = (page_num, page_size)
        body = self._cache.get(key)
        if body is None:
            clock = None if self.clock == "absent" else _PLACEHOLDER
            if self.clock == "library":
                body = self.library.page_bytes(page_num, page_size)
            else:
                body = self.library.page_bytes(page_num, page_size, clock=clock)
            if self.one_work:
                body = _first_work_only(body)
            self._cache[key] = body
        return web.Response(body=self._stamp(body), content_type="application/json")


def _first_work_only(body: bytes) -> bytes:
    """The page with each task's first work only (image tasks hold four)."""
    page = msgspec.json.decode(body)
    for item in page.get("history") or []:
        item["works"] = item.get("works", [])[:1]
    return msgspec.json.encode(page)


async def serve(args: argparse.Namespace) -> None:
    api = StaticApi(args.tasks, args.token, args.latency, args.clock, args.one_work)
    app = web.Application()
    for path in ("/v1/kling/assets", "/v1/kling/assets/"):
        app.router.add_get(path, api.assets)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"http://127.0.0.1:{port}/v1/kling", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._static_server")
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--token", default="bench-token")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--clock", choices=CLOCK_MODES, default="library")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--one-work", action="store_true", help="one work per task")
    parser.add_argument("--seed", type=int, default=0, help="ignored (the library's is 0)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
