"""The kling_fake_server fixture and marker, run through pytester."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers
filterwarnings = error
"""

TESTS = """
import asyncio
import json
import urllib.request

import aiohttp
import pytest

from kling_async.testing import FakeKlingServer, Faults


async def fetch(server, token="test-token", **params):
    async with aiohttp.ClientSession() as session:
        async with session.get(
            server.base_url + "/assets/",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, await resp.json()


async def test_defaults(kling_fake_server):
    assert isinstance(kling_fake_server, FakeKlingServer)
    assert kling_fake_server.token == "test-token"
    assert kling_fake_server._thread is None  # runs in this test's loop
    status, body = await fetch(kling_fake_server, pageSize="1000")
    assert status == 200 and len(body["history"]) == 100


@pytest.mark.kling_fake_server(tasks=5, token="other", seed=4, faults=Faults(at={1: "500"}))
async def test_marker(kling_fake_server):
    assert kling_fake_server.token == "other"
    assert (await fetch(kling_fake_server, token="other"))[0] == 500
    status, body = await fetch(kling_fake_server, token="other")
    assert status == 200 and len(body["history"]) == 5


def test_sync(kling_fake_server):
    request = urllib.request.Request(
        kling_fake_server.base_url + "/assets/?pageSize=3",
        headers={"Authorization": "Bearer test-token"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert len(json.load(resp)["history"]) == 3
    assert kling_fake_server.stats.requests == 1


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_gets_a_thread(kling_fake_server):
    assert kling_fake_server._thread is not None
    assert (await fetch(kling_fake_server))[0] == 200


@pytest.mark.kling_fake_server(7)
def test_positional_marker_is_an_error(kling_fake_server):
    pass
"""


def plugin_args() -> list[str]:
    """Load the plugin explicitly unless the installed entry point already does."""
    names = {ep.name for ep in entry_points(group="pytest11")}
    # hypothesis's plugin imports all of hypothesis at session end: a second of nothing here.
    args = ["-p", "no:hypothesispytest"] if "hypothesispytest" in names else []
    if "kling_async" not in names:
        args += ["-p", "kling_async.testing.pytest_plugin"]
    return args


def test_fixture_marker_and_modes(pytester: pytest.Pytester) -> None:
    """The fixture serves async tests in their loop, sync tests from a thread, per marker."""
    pytester.makeini(INI)
    pytester.makepyfile(test_bot=TESTS)
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*keyword arguments only*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    """The kling_fake_server marker is registered, so --strict-markers accepts it."""
    pytester.makeini(INI)
    result = pytester.runpytest(*plugin_args(), "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.kling_fake_server(**kwargs)*"])


def test_strict_mode(pytester: pytest.Pytester) -> None:
    """In pytest-asyncio strict mode, marked async tests get the server in their loop."""
    pytester.makeini(INI.replace("asyncio_mode = auto", "asyncio_mode = strict"))
    pytester.makepyfile(
        test_strict="""
        import pytest

        @pytest.mark.asyncio
        async def test_in_loop(kling_fake_server):
            assert kling_fake_server._thread is None
            assert kling_fake_server.base_url.startswith("http://127.0.0.1:")

        def test_sync(kling_fake_server):
            assert kling_fake_server._thread is not None
        """
    )
    pytester.runpytest(*plugin_args()).assert_outcomes(passed=2)
