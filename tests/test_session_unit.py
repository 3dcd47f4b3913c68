"""Thin unit tests of request shape and error mapping, with aioresponses (no sockets)."""

from __future__ import annotations

import re

import pytest
from aioresponses import aioresponses

from kling_async import AuthenticationError, BadRequestError, KlingSession

BASE = "https://api.useapi.net/v1/kling"
ASSETS = re.compile(r"^https://api\.useapi\.net/v1/kling/assets/\?.*$")
TOKEN = "tok-unit-123"


@pytest.fixture
def mocked() -> aioresponses:
    with aioresponses() as m:
        yield m


async def test_request_shape(mocked: aioresponses, sample_bytes: bytes) -> None:
    """GET {base}/assets/ with the query parameters set, bearer token, Accept and User-Agent."""
    mocked.get(ASSETS, body=sample_bytes, content_type="application/json")
    async with KlingSession(TOKEN, email="me@example.com") as kling:
        page = await kling.get_assets(page_num=3, page_size=10, content_type="video")
    assert page.history[0].works[0].work_id == 123456789
    ((method, url), calls) = next(iter(mocked.requests.items()))
    assert method == "GET"
    assert url.path == "/v1/kling/assets/"
    assert dict(url.query) == {
        "pageNum": "3",
        "pageSize": "10",
        "contentType": "video",
        "email": "me@example.com",
    }
    headers = calls[0].kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("kling-async/")


async def test_email_argument_overrides_session(mocked: aioresponses, sample_bytes: bytes) -> None:
    """A call's email wins over the session's; without either, no email is sent."""
    mocked.get(ASSETS, body=sample_bytes, repeat=True)
    async with KlingSession(TOKEN, email="a@example.com") as kling:
        await kling.get_assets(email="b@example.com")
    async with KlingSession(TOKEN) as kling:
        await kling.get_assets()
    urls = [url for (_, url) in mocked.requests]
    assert [u.query.get("email") for u in urls] == ["b@example.com", None]


async def test_error_mapping_not_retried(mocked: aioresponses) -> None:
    """401 and 400 map to their typed errors at once, with the body's error message."""
    mocked.get(ASSETS, status=401, payload={"error": "Unauthorized", "code": 401})
    mocked.get(ASSETS, status=400, payload={"error": "Invalid parameters"})
    async with KlingSession(TOKEN, backoff_base=0) as kling:
        with pytest.raises(AuthenticationError, match="Unauthorized") as auth:
            await kling.get_assets()
        with pytest.raises(BadRequestError, match="Invalid parameters"):
            await kling.get_assets()
    assert auth.value.status == 401
    assert sum(len(calls) for calls in mocked.requests.values()) == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"page_num": 0}, {"page_size": 0}, {"content_type": "gif"}],
)
async def test_invalid_arguments_raise_before_request(
    mocked: aioresponses, kwargs: dict[str, object]
) -> None:
    """page_num < 1, page_size < 1 or an unknown content_type raise ValueError, no request."""
    async with KlingSession(TOKEN) as kling:
        with pytest.raises(ValueError):
            await kling.get_assets(**kwargs)  # type: ignore[arg-type]
        walk_kwargs = {("start_page" if k == "page_num" else k): v for k, v in kwargs.items()}
        with pytest.raises(ValueError):
            kling.walk(**walk_kwargs)  # type: ignore[arg-type]
    assert mocked.requests == {}


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """USEAPI_TOKEN is used when no token is passed; none at all is a clear error."""
    monkeypatch.setenv("USEAPI_TOKEN", "env-token-xyz")
    kling = KlingSession()
    assert kling._headers["Authorization"] == "Bearer env-token-xyz"
    monkeypatch.delenv("USEAPI_TOKEN")
    with pytest.raises(ValueError, match="USEAPI_TOKEN"):
        KlingSession()


def test_repr_hides_token() -> None:
    """repr() shows the base URL and email but never the token."""
    text = repr(KlingSession(TOKEN, email="me@example.com"))
    assert TOKEN not in text and "***" in text and "me@example.com" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"max_retries": -1},
        {"base_url": "not a url"},
        {"max_response_bytes": 0},
    ],
)
def test_bad_settings(kwargs: dict[str, object]) -> None:
    """Impossible settings are refused when the session is made."""
    with pytest.raises(ValueError):
        KlingSession(TOKEN, **kwargs)  # type: ignore[arg-type]


def test_token_with_whitespace_refused_without_echo() -> None:
    """A token that would break the header is refused, and the error does not repeat it."""
    with pytest.raises(ValueError) as info:
        KlingSession("abc\r\nX-Evil: 1")
    assert "X-Evil" not in str(info.value)


@pytest.mark.parametrize("token", ["токен-секрет", "tok\x00en", "tok\x7fen", "jeton-é"])
def test_token_that_no_header_can_carry_refused_without_echo(token: str) -> None:
    """A token that is not printable ASCII is refused when the session is made (aiohttp would
    fail mid-request with UnicodeEncodeError), and the error does not repeat it."""
    with pytest.raises(ValueError) as info:
        KlingSession(token)
    assert token not in str(info.value)
