"""Hostile arguments: an email full of URL syntax reaches the server intact as one parameter,
huge page sizes go through as one parameter, and injection or wrong types are refused locally,
before any request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import KlingSession

from .conftest import TOKEN, Scripted, make_page

HOSTILE_EMAILS = [
    "a&b@example.com",
    "a=b@example.com",
    "a#b@example.com",
    "a+b@example.com",
    "100%@example.com",
    "a%41b%2B@example.com",  # looks percent-encoded: must not be decoded on the way
    "a?b@example.com",
    "a/b/../c@example.com",
    "john doe@example.com",
    " padded@example.com ",
    "x@example.com&pageNum=9&pageSize=1",
    "x@example.com#fragment",
    "a;b,c:d@example.com",
    "üñí@exämple.com",
    "用户@例子.公司",
    "😀@example.com",
    "a\r\nX-Injected: 1@example.com",
    "a\tb\x00c@example.com",
]


def api(total_pages: int = 2) -> Any:
    """Assets pages (empty past ``total_pages``) and download links, like the API."""

    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith("/download"):
            body = {"cdnUrl": "http://127.0.0.1:9/files/1.mp4", "status": "success"}
            return web.Response(body=json.dumps(body), content_type="application/json")
        page_num = int(request.query.get("pageNum", "1"))
        body_bytes = make_page(page_num, 2, total_pages=total_pages)
        return web.Response(body=body_bytes, content_type="application/json")

    return handler


def session(scripted: Scripted, **options: Any) -> KlingSession:
    return KlingSession(TOKEN, base_url=scripted.base_url, max_retries=0, **options)


def assert_one_email_each(scripted: Scripted, email: str, keys: set[str]) -> None:
    """Every request carried exactly these keys once, and the email exactly as given."""
    assert scripted.requests
    for request in scripted.requests:
        assert sorted(request.query.keys()) == sorted(keys)
        assert request.query.getall("email") == [email]


@pytest.mark.parametrize("email", HOSTILE_EMAILS)
async def test_hostile_email_reaches_server_as_one_parameter(
    scripted: Scripted, email: str
) -> None:
    """get_assets, a walk and get_download_link each send the email intact, as one parameter."""
    scripted.handle(api())
    async with session(scripted) as kling:
        await kling.get_assets(email=email)
        assert_one_email_each(scripted, email, {"pageNum", "pageSize", "email"})
        scripted.requests.clear()

        works = [w async for w in kling.iter_works(email=email, content_type="video")]
        assert len(works) == 4
        assert_one_email_each(scripted, email, {"pageNum", "pageSize", "contentType", "email"})
        scripted.requests.clear()

        await kling.get_download_link([123456789, 987654321], file_types=["MP4"], email=email)
        assert_one_email_each(scripted, email, {"workIds", "fileTypes", "email"})
        assert scripted.requests[0].query["workIds"] == "123456789,987654321"


async def test_hostile_session_email_reaches_server(scripted: Scripted) -> None:
    """The session-wide email is sent as intact as a per-call one."""
    email = "x@example.com&email=other@example.com"
    scripted.handle(api())
    async with KlingSession(TOKEN, base_url=scripted.base_url, email=email) as kling:
        [batch async for batch in kling.walk()]
        assert_one_email_each(scripted, email, {"pageNum", "pageSize", "email"})
        scripted.requests.clear()
        await kling.get_download_link(1)
        assert_one_email_each(scripted, email, {"workIds", "email"})


ANY_EMAIL = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # lone surrogates: no UTF-8 form
    min_size=1,
    max_size=40,
).filter(str.strip)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    # One loopback server serves every example; its request list is cleared per example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(email=ANY_EMAIL)
async def test_any_email_round_trips(scripted: Scripted, email: str) -> None:
    """Any non-blank text as email arrives byte-for-byte as the one email parameter."""
    scripted.handle(api())
    scripted.requests.clear()
    async with session(scripted) as kling:
        await kling.get_assets(email=email)
    assert_one_email_each(scripted, email, {"pageNum", "pageSize", "email"})


async def test_lone_surrogate_email_refused_locally(scripted: Scripted) -> None:
    """An email that cannot be encoded as UTF-8 is a ValueError, with no request."""
    scripted.handle(api())
    async with session(scripted) as kling:
        with pytest.raises(ValueError):
            await kling.get_assets(email="a\ud800@example.com")
    assert scripted.requests == []


@pytest.mark.parametrize("page_size", [10**9, 10**30])
async def test_huge_page_size_sent_intact(scripted: Scripted, page_size: int) -> None:
    """A huge page_size reaches the server as one exact decimal parameter."""
    scripted.handle(api(total_pages=1))
    async with session(scripted) as kling:
        await kling.get_assets(page_size=page_size, page_num=10**30)
        assert len([w async for w in kling.iter_works(page_size=page_size)]) == 2
    first, *walk = scripted.requests
    assert first.query.getall("pageSize") == [str(page_size)]
    assert first.query.getall("pageNum") == [str(10**30)]
    # Page 1 is short (2 entries) and page 2 empty: page 2 at the size served tells the end
    # from a server capping the page size.
    assert [(r.query["pageNum"], r.query["pageSize"]) for r in walk] == [
        ("1", str(page_size)),
        ("2", str(page_size)),
        ("2", "2"),
    ]
    for request in scripted.requests:
        assert sorted(request.query.keys()) == ["pageNum", "pageSize"]
        assert len(request.query.getall("pageSize")) == 1


CONTENT_TYPE_INJECTIONS = [
    "video&pageNum=9",
    "video#",
    "video ",
    "VIDEO",
    "video\r\nX: 1",
    "",
    "video,image",
]


def all_calls(kling: KlingSession, **kwargs: Any) -> dict[str, Any]:
    """Coroutines that each make the library's first request with these arguments."""

    async def first_of(agen: Any) -> None:
        async for _ in agen:
            break

    return {
        "get_assets": lambda: kling.get_assets(**kwargs),
        "iter_works": lambda: first_of(kling.iter_works(**kwargs)),
        "iter_pages": lambda: first_of(kling.iter_pages(**kwargs)),
        "walk": lambda: first_of(kling.walk(**kwargs)),
        "watch_works": lambda: first_of(kling.watch_works(**kwargs)),
    }


@pytest.mark.parametrize("content_type", CONTENT_TYPE_INJECTIONS)
async def test_content_type_injection_refused_locally(
    scripted: Scripted, content_type: str
) -> None:
    """A content_type that is not video/image/audio is a ValueError everywhere, no request."""
    scripted.handle(api())
    async with session(scripted) as kling:
        for name, call in all_calls(kling, content_type=content_type).items():
            with pytest.raises(ValueError, match="content_type"):
                await call()
            assert scripted.requests == [], name


BAD_NUMBERS = [1.0, 2.5, "1", "2", True, False, None, b"1", 0, -1, [1]]


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=repr)
async def test_bad_page_numbers_refused_locally(scripted: Scripted, value: object) -> None:
    """page_num, start_page, page_size of a wrong type or < 1: TypeError/ValueError, no request."""
    scripted.handle(api())
    async with session(scripted) as kling:
        calls = {
            "get_assets(page_num)": lambda: kling.get_assets(page_num=value),  # type: ignore[arg-type]
            **{f"{n}(page_size)": c for n, c in all_calls(kling, page_size=value).items()},
            **{
                f"{n}(start_page)": c
                for n, c in all_calls(kling, start_page=value).items()
                if n in ("iter_works", "iter_pages", "walk")
            },
        }
        for name, call in calls.items():
            with pytest.raises((TypeError, ValueError)):
                await call()
            assert scripted.requests == [], name


@pytest.mark.parametrize(
    "work_ids",
    [True, "123456789", "123,456", 1.0, [], [0], [-5], [1, "2"], [1.5], [None]],
    ids=repr,
)
async def test_bad_work_ids_refused_locally(scripted: Scripted, work_ids: object) -> None:
    """get_download_link with work ids that are not positive ints: an error, no request."""
    scripted.handle(api())
    async with session(scripted) as kling:
        with pytest.raises((TypeError, ValueError)):
            await kling.get_download_link(work_ids)  # type: ignore[arg-type]
    assert scripted.requests == []


@pytest.mark.parametrize("file_types", [["MP4&workIds=1"], ["mp4"], "MP4", ["GIF"], ["MP4,PNG"]])
async def test_bad_file_types_refused_locally(scripted: Scripted, file_types: object) -> None:
    """File types other than MP4/MP3/WAV/PNG (as a list) are a ValueError, no request."""
    scripted.handle(api())
    async with session(scripted) as kling:
        with pytest.raises(ValueError):
            await kling.get_download_link(1, file_types=file_types)  # type: ignore[arg-type]
    assert scripted.requests == []


@pytest.mark.parametrize("email", ["", "   ", "\t\n", 42, b"x@example.com"], ids=repr)
async def test_bad_email_refused_locally(scripted: Scripted, email: object) -> None:
    """A blank or non-str email is refused (ValueError/TypeError) before any request."""
    scripted.handle(api())
    async with session(scripted) as kling:
        for name, call in all_calls(kling, email=email).items():
            with pytest.raises((TypeError, ValueError)):
                await call()
            assert scripted.requests == [], name
        with pytest.raises((TypeError, ValueError)):
            await kling.get_download_link(1, email=email)  # type: ignore[arg-type]
    assert scripted.requests == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", float("inf")),
        ("timeout", float("nan")),
        ("timeout", -1.0),
        ("backoff_base", float("inf")),
        ("backoff_cap", float("nan")),
        ("max_retries", 1.5),
        ("max_response_bytes", float("inf")),
    ],
)
def test_infinite_and_nan_settings_refused(name: str, value: object) -> None:
    """An infinite, NaN or mistyped setting is a ValueError/TypeError when the session is
    made, not an OverflowError inside aiohttp's timers at the first request."""
    with pytest.raises((ValueError, TypeError)):
        KlingSession(TOKEN, **{name: value})


@pytest.mark.parametrize("interval", [float("inf"), float("nan"), 0])
def test_bad_watch_interval_refused(interval: float) -> None:
    """watch_works(interval=inf/nan/0) is refused before any request."""
    with pytest.raises(ValueError):
        KlingSession(TOKEN).watch_works(interval=interval)


@pytest.mark.parametrize("since", [1_000_000_000, 1_714_521_600, 99_999_999_999])
async def test_since_in_epoch_seconds_refused_locally(scripted: Scripted, since: int) -> None:
    """since= that looks like epoch seconds is refused (the CLI's rule), before any request:
    as milliseconds it would mean 1970 and silently yield the whole library."""
    scripted.handle(api())
    kling = session(scripted)
    with pytest.raises(ValueError, match="epoch seconds"):
        kling.walk(since=since)
    with pytest.raises(ValueError, match=f"{since * 1000}"):
        async for _ in kling.iter_works(since=since):
            pass
    with pytest.raises(ValueError, match="epoch seconds"):
        kling.watch_works(since=since)
    assert scripted.requests == []


@pytest.mark.parametrize("since", [0, 999_999_999, 100_000_000_000, 1_714_521_600_000])
async def test_since_in_epoch_milliseconds_accepted(scripted: Scripted, since: int) -> None:
    """Epoch milliseconds on either side of the seconds range are taken as they are."""
    scripted.handle(api())
    async with session(scripted) as kling:
        works = [w async for w in kling.iter_works(since=since)]
    assert len(works) == 4  # every work of the page is newer than each of these
