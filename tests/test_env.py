"""KLING_BASE_URL and USEAPI_TOKEN point KlingSession and the CLI at another server (a fake
one), so that examples written for useapi.net run against kling-async fake-server unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kling_async import KlingSession, cli
from kling_async.testing import FakeKlingServer


async def test_kling_base_url_sets_the_default_base_url(
    kling_fake_server: FakeKlingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KlingSession() with both variables set talks to the fake server; an explicit base_url
    still wins over the variable."""
    monkeypatch.setenv("KLING_BASE_URL", kling_fake_server.base_url)
    monkeypatch.setenv("USEAPI_TOKEN", kling_fake_server.token)
    async with KlingSession() as kling:
        assert kling.base_url == kling_fake_server.base_url
        assert (await kling.get_assets(page_size=3)).history
    explicit = KlingSession(base_url="https://example.com/v1/kling/")
    assert explicit.base_url == "https://example.com/v1/kling"


def test_kling_base_url_unset_or_empty_means_useapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset or empty, the default is useapi.net's."""
    monkeypatch.delenv("KLING_BASE_URL", raising=False)
    assert KlingSession("t").base_url == "https://api.useapi.net/v1/kling"
    monkeypatch.setenv("KLING_BASE_URL", "")
    assert KlingSession("t").base_url == "https://api.useapi.net/v1/kling"


@pytest.mark.parametrize(
    "value", ["ftp://x/v1/kling", "not a url", "http://[::1/v1", "http://h:99999/"]
)
def test_a_bad_kling_base_url_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A bad KLING_BASE_URL is a ValueError that names the variable."""
    monkeypatch.setenv("KLING_BASE_URL", value)
    with pytest.raises(ValueError, match="KLING_BASE_URL"):
        KlingSession("t")


def test_cli_export_follows_kling_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """kling-async export with no --base-url and no --token: both from the environment."""
    with FakeKlingServer(20, token="env-token", seed=5) as server:
        monkeypatch.setenv("KLING_BASE_URL", server.base_url)
        monkeypatch.setenv("USEAPI_TOKEN", server.token)
        out = tmp_path / "w.jsonl"
        assert cli.main(["export", str(out), "-q"]) == 0
    assert len(out.read_bytes().splitlines()) >= 20


def test_cli_export_with_a_bad_kling_base_url_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad KLING_BASE_URL: exit 2, one line naming the variable."""
    monkeypatch.setenv("KLING_BASE_URL", "gopher://x")
    assert cli.main(["export", str(tmp_path / "w.jsonl"), "--token", "t"]) == 2
    err = capsys.readouterr().err
    assert "KLING_BASE_URL" in err and len(err.splitlines()) == 1


def test_no_event_loop_needed_to_build_a_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a KlingSession outside any event loop is fine (nothing loop-bound is made)."""
    monkeypatch.setenv("KLING_BASE_URL", "http://127.0.0.1:9/v1/kling")
    kling = KlingSession("t")
    assert asyncio.run(kling.close()) is None
