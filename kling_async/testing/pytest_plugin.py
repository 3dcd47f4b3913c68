"""pytest plugin: the ``kling_fake_server`` fixture and marker.

Registered as the ``kling_async`` ``pytest11`` entry point, so installing the package is
enough::

    async def test_my_bot(kling_fake_server):
        async with KlingSession(
            token=kling_fake_server.token, base_url=kling_fake_server.base_url
        ) as kling:
            ...

``@pytest.mark.kling_fake_server(tasks=5000, latency=0.1, ...)`` passes keyword arguments to
:class:`~kling_async.testing.FakeKlingServer` (defaults: ``tasks=100, token="test-token",
seed=0``). An ``async def`` test run by pytest-asyncio in a function-scoped loop gets a
server running in that loop; any other test gets one running in a background thread.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ._server import FakeKlingServer

__all__ = ["kling_fake_server", "pytest_configure"]

_DEFAULTS: dict[str, Any] = {"tasks": 100, "token": "test-token", "seed": 0}

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``kling_fake_server`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        "kling_fake_server(**kwargs): keyword arguments for the kling_fake_server fixture's "
        "FakeKlingServer (tasks, token, seed, emails, faults, latency, ...)",
    )


def _server_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    kwargs = dict(_DEFAULTS)
    marker = request.node.get_closest_marker("kling_fake_server")
    if marker is not None:
        if marker.args:
            raise pytest.UsageError(
                f"@pytest.mark.kling_fake_server takes keyword arguments only, got {marker.args!r}"
            )
        kwargs.update(marker.kwargs)
    return kwargs


def _in_function_loop_of_pytest_asyncio(request: pytest.FixtureRequest) -> bool:
    """Whether pytest-asyncio runs this test in a function-scoped event loop."""
    if not _HAVE_PYTEST_ASYNCIO:
        return False
    if not inspect.iscoroutinefunction(getattr(request, "function", None)):
        return False
    marker = request.node.get_closest_marker("asyncio")
    if marker is None:
        return False  # strict mode without the marker: another plugin (anyio?) runs it
    scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if not scope:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pragma: no cover - older pytest-asyncio
            scope = None
    return (scope or "function") == "function"


@pytest.fixture
def kling_fake_server(request: pytest.FixtureRequest) -> FakeKlingServer:
    """A started :class:`~kling_async.testing.FakeKlingServer`, closed after the test.

    Configured by ``@pytest.mark.kling_fake_server(**kwargs)``. An asyncio test in a
    function-scoped loop gets a server in that loop; any other test (sync, or in a wider
    loop scope, or run by another async plugin) gets one in a background thread.
    """
    if _in_function_loop_of_pytest_asyncio(request):
        server: FakeKlingServer = request.getfixturevalue("_kling_fake_server_async")
    else:
        server = request.getfixturevalue("_kling_fake_server_thread")
    return server


@pytest.fixture
def _kling_fake_server_thread(request: pytest.FixtureRequest) -> Iterator[FakeKlingServer]:
    with FakeKlingServer(**_server_kwargs(request)) as server:
        yield server


if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture(loop_scope="function")
    async def _kling_fake_server_async(
        request: pytest.FixtureRequest,
    ) -> AsyncIterator[FakeKlingServer]:
        async with FakeKlingServer(**_server_kwargs(request)) as server:
            yield server
