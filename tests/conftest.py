"""Shared fixtures: a scriptable aiohttp server on 127.0.0.1 and sample pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _fresh_lazy_drift_warnings() -> None:
    """Drift in a lazy part is logged once per process: each test starts with none logged."""
    from kling_async import models

    models._WARNED.clear()


@pytest.fixture
def sample_bytes() -> bytes:
    """The documentation's own sample response."""
    return (FIXTURES / "assets-sample-200.json").read_bytes()


def make_page(page_num: int, tasks: int, *, per_task: int = 1, total_pages: int = 3) -> bytes:
    """A small assets page: ``tasks`` entries of ``per_task`` works, empty past the end."""
    if page_num > total_pages:
        return json.dumps({"history": []}).encode()
    history = []
    for t in range(tasks):
        task_id = page_num * 1000 + t
        works = [
            {
                "workId": task_id * 10 + w,
                "taskId": task_id,
                "status": 99,
                "createTime": 1_800_000_000_000 - task_id * 1000,
            }
            for w in range(per_task)
        ]
        history.append({"works": works, "task": {"id": task_id}})
    return json.dumps({"history": history}).encode()


Handler = Callable[[web.Request], Any]


class Scripted:
    """A loopback server whose assets handler is a test-supplied coroutine."""

    def __init__(self, server: TestServer, app_state: dict[str, Any]) -> None:
        self.server = server
        self.state = app_state

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1/kling"))

    @property
    def requests(self) -> list[web.Request]:
        return self.state["requests"]  # type: ignore[no-any-return]

    def handle(self, handler: Handler) -> None:
        self.state["handler"] = handler


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    """A real aiohttp server on 127.0.0.1; tests set its handler with ``scripted.handle``."""
    state: dict[str, Any] = {"requests": [], "handler": None}

    async def dispatch(request: web.Request) -> web.StreamResponse:
        state["requests"].append(request)
        handler = state["handler"]
        assert handler is not None, "test forgot scripted.handle(...)"
        return await handler(request)  # type: ignore[no-any-return]

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", dispatch)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Scripted(server, state)
    finally:
        await server.close()
