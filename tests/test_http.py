"""The sans-I/O seam: request building, status mapping, Retry-After, backoff. No server."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kling_async import KlingSession, _http, errors
from kling_async.models import ASSETS_PAGE_DECODER


def test_assets_params_only_what_is_set() -> None:
    """pageNum and pageSize always; contentType and email only when given."""
    assert _http.assets_params(page_num=2, page_size=40, content_type=None, email=None) == {
        "pageNum": "2",
        "pageSize": "40",
    }
    assert _http.assets_params(
        page_num=1, page_size=5, content_type="audio", email="a+b@example.com"
    ) == {"pageNum": "1", "pageSize": "5", "contentType": "audio", "email": "a+b@example.com"}


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"page_num": 0}, ValueError, "page_num must be >= 1"),
        ({"page_size": 0}, ValueError, "page_size must be >= 1"),
        ({"page_size": -3}, ValueError, "page_size"),
        ({"content_type": "gif"}, ValueError, "content_type must be one of video, image, audio"),
        ({"email": ""}, ValueError, "email must not be empty"),
        ({"page_num": 1.5}, TypeError, "page_num must be an int"),
        ({"page_size": True}, TypeError, "page_size must be an int"),
    ],
)
def test_assets_params_refuses_bad_arguments(
    kwargs: dict[str, object], exc: type[Exception], match: str
) -> None:
    """Out-of-range arguments raise before any request is built."""
    args: dict[str, object] = {
        "page_num": 1,
        "page_size": 40,
        "content_type": None,
        "email": None,
    } | kwargs
    with pytest.raises(exc, match=match):
        _http.assets_params(**args)  # type: ignore[arg-type]


def test_headers_carry_token_accept_and_user_agent() -> None:
    """Bearer token, JSON Accept and a kling-async User-Agent (useapi's edge refuses urllib's)."""
    headers = _http.request_headers("tok")
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("kling-async/")


def test_urls() -> None:
    """Requests go to {base_url}/assets/ whatever trailing slash the base URL has."""
    for base in ("https://api.useapi.net/v1/kling", "https://api.useapi.net/v1/kling/"):
        url = _http.normalize_base_url(base)
        assert str(_http.assets_url(url)) == "https://api.useapi.net/v1/kling/assets/"
        assert str(_http.download_url(url)) == "https://api.useapi.net/v1/kling/assets/download"
    for bad in ("api.useapi.net/v1", "ftp://x/y", "https://x/y?token=1"):
        with pytest.raises(ValueError, match="base_url"):
            _http.normalize_base_url(bad)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (402, errors.PaymentRequiredError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (504, errors.ServerError),
        (418, errors.APIError),
    ],
)
def test_status_maps_to_typed_error(status: int, cls: type[errors.APIError]) -> None:
    """Each documented status maps to its class, carrying status, message and body."""
    body = b'{"error": "Something", "code": %d}' % status
    error = _http.error_for_response(status, {}, body, url="http://h/assets/?pageNum=3")
    assert type(error) is cls
    assert (error.status, error.message, error.body) == (status, "Something", body)
    assert "pageNum=3" in str(error) and "Something" in str(error)


def test_retryable_statuses() -> None:
    """Only 429 and 500/502/503/504 are retried."""
    assert {s for s in range(400, 600) if _http.is_retryable_status(s)} == {
        429,
        500,
        502,
        503,
        504,
    }


def test_message_from_plain_text_and_html() -> None:
    """A non-JSON body becomes a short single-line prefix of its text."""
    assert _http.error_message(b"404 page not found") == "404 page not found"
    html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\n" + b"x" * 1000
    message = _http.error_message(html)
    assert message.startswith("<html> <head><title>502 Bad Gateway</title>")
    assert len(message) <= _http.MESSAGE_PREFIX + 1 and "\n" not in message
    assert _http.error_message(b"") == "(empty body)"
    assert _http.error_message(b'{"code": 500}') == '{"code": 500}'


def test_parse_retry_after_seconds_and_dates() -> None:
    """Retry-After as delta-seconds or an HTTP date; garbage and the past never go negative."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert _http.parse_retry_after("7") == 7.0
    assert _http.parse_retry_after(" 2.5 ") == 2.5
    assert _http.parse_retry_after("-4") == 0.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert _http.parse_retry_after(later, now=now) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert _http.parse_retry_after(earlier, now=now) == 0.0
    for junk in (None, "", "soon", "nan"):
        assert _http.parse_retry_after(junk) is None


def test_retry_after_header_then_body() -> None:
    """The header wins; else a JSON body's retryAfter; else None."""
    assert _http.retry_after({"Retry-After": "3"}, b'{"retryAfter": 9}') == 3.0
    assert _http.retry_after({}, b'{"error": "busy", "retryAfter": 9}') == 9.0
    assert _http.retry_after({}, b"<html>busy</html>") is None
    error = _http.error_for_response(429, {"Retry-After": "4"}, b"{}", url="u")
    assert isinstance(error, errors.RateLimitError) and error.retry_after == 4.0


def test_backoff_full_jitter_bounds() -> None:
    """Delays stay within [0, min(cap, base * 2**attempt)] and spread across it."""
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(30.0, 1.0 * 2**attempt)
        delays = [_http.backoff_delay(attempt, base=1.0, cap=30.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2
    assert _http.backoff_delay(10_000, base=1.0, cap=30.0) <= 30.0


def test_decode_error_names_url_and_reason() -> None:
    """A body that is not an assets page raises DecodeError naming the URL, chained."""
    with pytest.raises(errors.DecodeError, match=r"pageNum=4.*truncated") as info:
        _http.decode(ASSETS_PAGE_DECODER, b'{"history": [', url="http://h/assets/?pageNum=4")
    assert info.value.__cause__ is not None


def test_download_params() -> None:
    """workIds are comma-joined; unknown file types and empty id lists are refused."""
    assert _http.download_params([1, 2], ["MP4", "PNG"], None) == {
        "workIds": "1,2",
        "fileTypes": "MP4,PNG",
    }
    with pytest.raises(ValueError, match="at least one"):
        _http.download_params([], None, None)
    with pytest.raises(ValueError, match="unknown file types"):
        _http.download_params([1], ["GIF"], None)


@given(
    email=st.one_of(st.none(), st.text(min_size=1)),
    content_type=st.sampled_from([None, *_http.CONTENT_TYPES]),
    page_num=st.integers(1, 10**9),
    page_size=st.integers(1, 10**4),
)
@example(email="a&b=c#d+e f%20g;h/i?j@k.l", content_type=None, page_num=1, page_size=40)
@example(email="zoë+ü@例え.jp", content_type="video", page_num=7, page_size=1)
def test_a_walks_page_url_is_the_one_with_query_gives(
    email: str | None, content_type: str | None, page_num: int, page_size: int
) -> None:
    """A walk builds each page's URL from a template encoded once; it must be the URL (and
    the bytes on the wire) that ``with_query`` of the page's parameters gives."""
    kling = KlingSession("t", base_url="http://127.0.0.1:9/v1/kling")
    try:
        params = _http.assets_params(
            page_num=page_num, page_size=page_size, content_type=content_type, email=email
        )
    except ValueError:
        return  # refused before any request, by the walk too (tests of the arguments)
    walk = kling.walk(email=email, content_type=content_type)
    expected = kling._assets_url.with_query(params)
    built = walk._page_url(page_num, page_size)
    assert built == expected
    assert str(built) == str(expected)
    assert built.raw_path_qs == expected.raw_path_qs
