"""FakeKlingServer over real HTTP on 127.0.0.1, with plain aiohttp requests."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from typing import Any

import aiohttp
import msgspec
import pytest
from yarl import URL

import kling_async.testing
from kling_async.testing import FAULT_KINDS, FakeKlingServer, FakeLibrary, Faults

AUTH = {"Authorization": "Bearer test-token"}


class Reply:
    """Status, headers and body of one response."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


async def get(
    url: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = AUTH,
    timeout: float = 10,
) -> Reply:
    """One GET with a fresh session (so no connection is reused across faults)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url, params=params, headers=headers) as resp,
    ):
        return Reply(resp.status, resp.headers, await resp.read())


async def assets(server: FakeKlingServer, **params: str) -> Reply:
    return await get(server.base_url + "/assets/", params)


async def task_ids(server: FakeKlingServer, **params: str) -> list[int]:
    reply = await assets(server, **params)
    assert reply.status == 200
    return [e["task"]["id"] for e in reply.json()["history"]]


# --------------------------------------------------------------------------- the API


async def test_base_url_and_paths_with_or_without_slash() -> None:
    """base_url is http://127.0.0.1:PORT/v1/kling; both assets paths answer."""
    async with FakeKlingServer(tasks=10) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1/kling"
        for path in ("/assets", "/assets/"):
            reply = await get(server.base_url + path)
            assert reply.status == 200
            assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
        for path in ("/assets/download", "/assets/download/"):
            assert (await get(server.base_url + path)).status == 400


async def test_defaults_and_paging() -> None:
    """pageNum defaults to 1 and pageSize to 40; pages follow each other without overlap."""
    async with FakeKlingServer(tasks=100, seed=3) as server:
        default = await assets(server)
        assert default.body == server.library.page_bytes(1, 40)
        first = await task_ids(server, pageNum="1", pageSize="30")
        second = await task_ids(server, pageNum="2", pageSize="30")
        whole = await task_ids(server, pageSize="100000")
        assert first + second == whole[:60]
        assert len(whole) == 100


async def test_page_past_the_end_is_empty() -> None:
    """A page past the end has an empty history and every other top-level field."""
    async with FakeKlingServer(tasks=10) as server:
        body = (await assets(server, pageNum="2", pageSize="10")).json()
        assert body["history"] == []
        assert set(body) == {"limitations", "history", "userPoints", "userTickets"}


@pytest.mark.parametrize(
    "headers",
    [None, {"Authorization": "Bearer wrong"}, {"Authorization": "test-token"}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_unauthorized(headers: dict[str, str] | None) -> None:
    """A missing or wrong bearer token gets 401 {"error": "Unauthorized", "code": 401}."""
    async with FakeKlingServer(tasks=10) as server:
        for path in ("/assets/", "/assets/download"):
            reply = await get(server.base_url + path, {"workIds": "1"}, headers=headers)
            assert reply.status == 401
            assert reply.json() == {"error": "Unauthorized", "code": 401}


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": "0"},
        {"pageSize": "-1"},
        {"pageSize": "ten"},
        {"pageSize": "2.5"},
        {"pageNum": "0"},
        {"pageNum": "x"},
        {"pageNum": "-3"},
        {"contentType": "gif"},
        {"contentType": "VIDEO"},
    ],
)
async def test_invalid_parameters(params: dict[str, str]) -> None:
    """Bad pageSize, pageNum or contentType gets 400 {"error": "Invalid parameters"}."""
    async with FakeKlingServer(tasks=10) as server:
        reply = await assets(server, **params)
        assert reply.status == 400
        assert reply.json() == {"error": "Invalid parameters"}


async def test_content_type_filter() -> None:
    """contentType keeps only that type and pages over the filtered listing."""
    async with FakeKlingServer(tasks=200) as server:
        everything = (await assets(server, pageSize="200")).json()["history"]
        for content_type in ("video", "image", "audio"):
            pages = [
                (await assets(server, contentType=content_type, pageNum=str(n), pageSize="9"))
                for n in (1, 2)
            ]
            got = [e for p in pages for e in p.json()["history"]]
            assert {w["contentType"] for e in got for w in e["works"]} == {content_type}
            expected = [e for e in everything if e["works"][0]["contentType"] == content_type]
            assert got == expected[:18]


async def test_several_accounts() -> None:
    """Each email has its own library; email is required and must be known."""
    emails = ["a@example.com", "b@example.com"]
    async with FakeKlingServer(tasks=20, emails=emails) as server:
        a = (await assets(server, email="a@example.com")).json()["history"]
        b = (await assets(server, email="B@example.com")).json()["history"]
        ids_a = {w["workId"] for e in a for w in e["works"]}
        ids_b = {w["workId"] for e in b for w in e["works"]}
        assert not ids_a & ids_b
        assert [e["task"]["taskInfo"] for e in a] != [e["task"]["taskInfo"] for e in b]
        for params in ({}, {"email": "c@example.com"}):
            assert (await assets(server, **params)).status == 400
        wid = str(next(iter(ids_b)))
        url = server.base_url + "/assets/download"
        assert (await get(url, {"workIds": wid, "email": "b@example.com"})).status == 200
        assert (await get(url, {"workIds": wid, "email": "a@example.com"})).status == 400
        assert (await get(url, {"workIds": wid})).status == 400


async def test_single_account_email_optional_but_checked() -> None:
    """With one email configured, email may be omitted but a wrong one gets 400."""
    async with FakeKlingServer(tasks=5, emails=["me@example.com"]) as server:
        assert (await assets(server)).status == 200
        assert (await assets(server, email="me@example.com")).status == 200
        assert (await assets(server, email="other@example.com")).status == 400
    async with FakeKlingServer(tasks=5) as server:
        assert (await assets(server, email="anyone@example.com")).status == 200


# --------------------------------------------------------------------------- download + CDN


def first_work(server: FakeKlingServer, content_type: str) -> int:
    """Id of the newest finished work of a content type."""
    for entry in server.library.page(1, 100, content_type)["history"]:
        for work in entry["works"]:
            if work["status"] == 99:
                return int(work["workId"])
    raise AssertionError("no finished work")


async def test_download_single_file_from_another_origin() -> None:
    """One work and one file type: cdnUrl is that file, on the CDN's own port, no auth."""
    async with FakeKlingServer(tasks=50, file_size=10_000) as server:
        wid = first_work(server, "video")
        reply = await get(server.base_url + "/assets/download", {"workIds": str(wid)})
        assert reply.status == 200
        body = reply.json()
        assert body["status"] == "success"
        cdn = URL(body["cdnUrl"])
        assert cdn.port == server.cdn_port != server.port
        assert cdn.path == f"/files/{wid}.mp4"
        file = await get(body["cdnUrl"], headers=None)
        assert file.status == 200
        assert file.headers["Content-Length"] == "10000"
        assert file.headers["Content-Type"] == "video/mp4"
        assert file.body == server.file_bytes(wid, "MP4")
        stats = server.stats
        assert (stats.downloads, stats.cdn_requests, stats.cdn_auth_requests) == (1, 1, 0)


async def test_download_zip_of_several_files() -> None:
    """Several works or file types give a zip with entries <workId>.<ext>."""
    async with FakeKlingServer(tasks=50, file_size=100) as server:
        video, image, audio = (first_work(server, t) for t in ("video", "image", "audio"))
        url = server.base_url + "/assets/download"
        cases = [
            ({"workIds": f"{video},{image}"}, {f"{video}.mp4", f"{image}.png"}),
            ({"workIds": str(audio)}, {f"{audio}.mp3", f"{audio}.wav"}),
            ({"workIds": f"{audio},{video}", "fileTypes": "WAV"}, {f"{audio}.wav"}),
        ]
        for params, names in cases:
            reply = await get(url, params)
            assert reply.status == 200, params
            cdn_url = reply.json()["cdnUrl"]
            assert URL(cdn_url).path.endswith(".zip")
            archive = zipfile.ZipFile(io.BytesIO((await get(cdn_url, headers=None)).body))
            assert set(archive.namelist()) == names
            for name in names:
                wid, ext = name.split(".")
                assert archive.read(name) == server.file_bytes(int(wid), ext)
        single = await get(url, {"workIds": str(audio), "fileTypes": "MP3"})
        assert URL(single.json()["cdnUrl"]).path == f"/files/{audio}.mp3"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"workIds": ""},
        {"workIds": "abc"},
        {"workIds": "1,,2"},
        {"workIds": "123"},
        {"workIds": "WORK", "fileTypes": "GIF"},
        {"workIds": "WORK", "fileTypes": "PNG"},
    ],
)
async def test_download_invalid_parameters(params: dict[str, str]) -> None:
    """Missing or invalid workIds, unknown works or file types get 400."""
    async with FakeKlingServer(tasks=50) as server:
        wid = str(first_work(server, "video"))
        params = {k: v.replace("WORK", wid) for k, v in params.items()}
        reply = await get(server.base_url + "/assets/download", params)
        assert reply.status == 400
        assert reply.json() == {"error": "Invalid parameters"}


async def test_cdn_counts_leaked_authorization() -> None:
    """The CDN needs no auth and counts requests that carry an Authorization header."""
    async with FakeKlingServer(tasks=50) as server:
        wid = first_work(server, "image")
        cdn_url = (await get(server.base_url + "/assets/download", {"workIds": str(wid)})).json()[
            "cdnUrl"
        ]
        assert (await get(cdn_url, headers=AUTH)).status == 200
        assert (await get(cdn_url, headers=None)).status == 200
        assert (server.stats.cdn_requests, server.stats.cdn_auth_requests) == (2, 1)
        assert (await get(server.cdn_url + "/files/nothing.txt", headers=None)).status == 404


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("429", 429, "application/json"),
        ("429_body", 429, "application/json"),
        ("500", 500, "application/json"),
        ("502", 502, "text/html"),
        ("503", 503, "application/json"),
        ("504", 504, "text/html"),
    ],
)
async def test_status_faults(kind: str, status: int, content_type: str) -> None:
    """Each status fault answers its code and body type; the next request is normal."""
    async with FakeKlingServer(tasks=10, faults=Faults(at={1: kind})) as server:
        reply = await assets(server)
        assert reply.status == status
        assert reply.headers["Content-Type"].startswith(content_type)
        if content_type == "text/html":
            assert reply.body.startswith(b"<html>")
            assert str(status).encode() in reply.body
        else:
            assert "error" in reply.json()
        assert (await assets(server)).status == 200
        assert server.stats.faults == {kind: 1}
        assert server.stats.statuses == {status: 1, 200: 1}


async def test_retry_after_variants() -> None:
    """429 carries Retry-After (configurable, omittable); 429_body puts retryAfter in JSON."""
    faults = Faults(at={1: "429", 2: "429_body"}, retry_after="7")
    async with FakeKlingServer(tasks=10, faults=faults) as server:
        header = await assets(server)
        assert header.headers["Retry-After"] == "7"
        body = await assets(server)
        assert "Retry-After" not in body.headers
        assert body.json()["retryAfter"] == 7
        assert isinstance(body.json()["error"], str)
        server.faults = Faults(at={3: "429"}, omit_retry_after=True)
        omitted = await assets(server)
        assert omitted.status == 429 and "Retry-After" not in omitted.headers
    async with FakeKlingServer(tasks=10, faults=Faults(at={1: "429"})) as server:
        assert (await assets(server)).headers["Retry-After"] == "0"


async def test_drop_raises_payload_error_in_the_client() -> None:
    """ "drop" promises a full body, sends half, hangs up: the client gets a payload error."""
    async with FakeKlingServer(tasks=100, faults=Faults(at={1: "drop"})) as server:
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            await assets(server)
        assert (await assets(server)).status == 200
        assert server.stats.faults == {"drop": 1}
        assert server.stats.statuses == {200: 1}


async def test_broken_json_is_a_complete_200() -> None:
    """ "broken_json" is a complete 200 application/json response that does not parse."""
    async with FakeKlingServer(tasks=10, faults=Faults(at={1: "broken_json"})) as server:
        reply = await assets(server)
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/json")
        assert int(reply.headers["Content-Length"]) == len(reply.body)
        with pytest.raises(msgspec.DecodeError):
            reply.json()


async def test_slow_trips_a_client_timeout_and_close_does_not_hang() -> None:
    """ "slow" outlasts a client timeout; closing the server wakes the sleeping handler."""
    server = FakeKlingServer(tasks=10, faults=Faults(at={1: "slow"}, slow_seconds=30))
    await server.start()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await get(server.base_url + "/assets/", timeout=0.2)
        assert server.stats.in_flight == 1
    finally:
        started = time.monotonic()
        await server.close()
    assert time.monotonic() - started < 2


async def test_slow_answers_after_slow_seconds() -> None:
    """A patient client gets the normal page once slow_seconds have passed."""
    async with FakeKlingServer(tasks=10, faults=Faults(at={1: "slow"}, slow_seconds=0.1)) as s:
        started = time.monotonic()
        assert (await assets(s)).status == 200
        assert time.monotonic() - started >= 0.1


async def test_latency_applies_to_each_assets_request() -> None:
    """latency sleeps before answering each assets request; it can be changed at runtime."""
    async with FakeKlingServer(tasks=10, latency=0.1) as server:
        started = time.monotonic()
        await assets(server)
        assert time.monotonic() - started >= 0.1
        server.latency = 0.2
        started = time.monotonic()
        await assets(server)
        assert time.monotonic() - started >= 0.2


async def fault_sequence(server: FakeKlingServer, n: int) -> list[int]:
    return [(await assets(server)).status for _ in range(n)]


async def test_fault_rate_is_deterministic() -> None:
    """rate draws kinds from kinds, reproducibly for a seed, differently for another."""
    faults = Faults(rate=0.5, kinds=("500", "503"))
    runs = []
    for seed in (1, 1, 2):
        async with FakeKlingServer(tasks=5, seed=seed, faults=faults) as server:
            runs.append(await fault_sequence(server, 30))
    assert runs[0] == runs[1] != runs[2]
    assert set(runs[0]) == {200, 500, 503}
    assert 5 < runs[0].count(200) < 25


def test_faults_validation() -> None:
    """Unknown kinds and out-of-range rates are rejected when the Faults is built."""
    assert set(FAULT_KINDS) >= {"429", "500", "502", "503", "504", "drop", "slow"}
    with pytest.raises(ValueError):
        Faults(kinds=("418",))
    with pytest.raises(ValueError):
        Faults(at={1: "teapot"})
    with pytest.raises(ValueError):
        Faults(rate=1.5)


async def test_inserts_shift_pages_forward() -> None:
    """Tasks inserted at the head push older tasks onto later pages."""
    async with FakeKlingServer(tasks=30) as server:
        before = await task_ids(server, pageSize="10")
        new_ids = server.insert_tasks(3, content_type="video")
        after = await task_ids(server, pageSize="10")
        assert after[3:] == before[:7]
        head = (await assets(server, pageSize="3")).json()["history"]
        assert [w["workId"] for e in reversed(head) for w in e["works"]] == new_ids


async def test_inserts_per_request() -> None:
    """inserts_per_request inserts before each assets request, fractions accumulating."""
    async with FakeKlingServer(tasks=30, faults=Faults(inserts_per_request=0.5)) as server:
        pages = [await task_ids(server, pageSize="1") for _ in range(4)]
        # Requests 2 and 4 each see one new task on top.
        assert pages[1] != pages[0]
        assert pages[2] == pages[1]
        assert pages[3] != pages[2]
        assert server.library.count() == 32
        server.faults = Faults(inserts_per_request=2)
        await assets(server)
        assert server.library.count() == 34


async def test_pending_inserts_and_completion() -> None:
    """pending=True inserts in-progress works; set_status/complete_pending finish them."""
    async with FakeKlingServer(tasks=10) as server:
        ids = server.insert_tasks(2, content_type="audio", pending=True)

        async def statuses() -> list[int]:
            head = (await assets(server, pageSize="2")).json()["history"]
            return [e["works"][0]["status"] for e in head]

        assert await statuses() == [5, 5]
        server.set_status(ids[1], 99)
        assert await statuses() == [99, 5]
        assert server.complete_pending() == [ids[0]]
        assert await statuses() == [99, 99]


async def test_deletions_shift_pages_back() -> None:
    """Deleting tasks or works pulls later tasks back onto earlier pages."""
    async with FakeKlingServer(tasks=30) as server:
        before = await task_ids(server, pageSize="30")
        removed = server.delete_tasks([0, 1])
        assert (await task_ids(server, pageSize="10")) == before[2:12]
        single = next(e for e in server.library.page(1, 28)["history"][:10] if len(e["works"]) == 1)
        assert server.delete_works([single["works"][0]["workId"]])
        after = await task_ids(server, pageSize="30")
        assert after == [t for t in before[2:] if t != single["task"]["id"]]
        assert removed
        download = await get(server.base_url + "/assets/download", {"workIds": str(removed[0])})
        assert download.status == 400
        with pytest.raises(KeyError):
            server.delete_works([removed[0]])


# --------------------------------------------------------------------------- stats


async def test_stats_counting_and_reset() -> None:
    """Stats count requests, pages in order, statuses, headers and max in-flight."""
    async with FakeKlingServer(tasks=10, latency=0.1) as server:
        async with aiohttp.ClientSession(
            headers={**AUTH, "User-Agent": "kling-test/1.0", "Accept": "application/json"}
        ) as session:

            async def fetch(page_num: int) -> int:
                url = server.base_url + "/assets/"
                async with session.get(url, params={"pageNum": str(page_num)}) as resp:
                    await resp.read()
                    return resp.status

            assert await asyncio.gather(*(fetch(n) for n in (1, 2, 3, 4))) == [200] * 4
        stats = server.stats
        assert stats.requests == 4
        assert sorted(stats.pages) == [1, 2, 3, 4]
        assert stats.max_in_flight == 4
        assert stats.in_flight == 0
        assert stats.statuses == {200: 4}
        assert stats.last_headers is not None
        assert stats.last_headers["user-agent"] == "kling-test/1.0"
        assert stats.last_headers["Accept"] == "application/json"
        server.latency = 0
        assert (await assets(server, pageNum="x")).status == 400
        assert stats.pages[-1] == 4 and stats.statuses[400] == 1
        server.reset_stats()
        stats = server.stats
        assert (stats.requests, stats.pages, stats.statuses, stats.max_in_flight) == (
            0,
            [],
            {},
            0,
        )
        assert stats.last_headers is None


async def test_pages_list_preserves_arrival_order() -> None:
    """stats.pages records pageNum in the order requests arrive."""
    async with FakeKlingServer(tasks=10) as server:
        for n in (3, 1, 2):
            await assets(server, pageNum=str(n))
        assert server.stats.pages == [3, 1, 2]


async def test_at_counts_from_reset() -> None:
    """Faults.at numbers assets requests from start or the last stats reset."""
    async with FakeKlingServer(tasks=5, faults=Faults(at={2: "500"})) as server:
        assert await fault_sequence(server, 3) == [200, 500, 200]
        server.stats.reset()
        assert await fault_sequence(server, 2) == [200, 500]


# --------------------------------------------------------------------------- lifecycle


async def test_explicit_start_and_close() -> None:
    """start()/close() work without a context manager; base_url needs a started server."""
    server = FakeKlingServer(tasks=3)
    with pytest.raises(RuntimeError):
        _ = server.base_url
    await server.start()
    try:
        assert (await assets(server)).status == 200
        with pytest.raises(RuntimeError):
            await server.start()
    finally:
        await server.close()
    await server.close()  # idempotent


def sync_get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_thread_mode_serves_and_mutates() -> None:
    """`with FakeKlingServer(...)` serves from a background thread; mutations are safe."""
    with FakeKlingServer(tasks=20, faults=Faults(at={2: "503"})) as server:
        url = server.base_url + "/assets/?pageSize=5"
        status, body = sync_get(url, AUTH)
        assert status == 200
        first = msgspec.json.decode(body)["history"]
        assert sync_get(url, AUTH)[0] == 503
        server.insert_tasks(1)
        later = msgspec.json.decode(sync_get(url, AUTH)[1])["history"]
        assert [e["task"] for e in later[1:]] == [e["task"] for e in first[:4]]
        assert sync_get(url, {})[0] == 401
        assert server.stats.requests == 4
    with pytest.raises(RuntimeError):
        _ = server.base_url


async def test_thread_mode_from_async_code() -> None:
    """The thread mode also serves clients running in another event loop."""
    with FakeKlingServer(tasks=5) as server:
        assert (await assets(server)).status == 200


async def test_huge_library_serves_a_deep_page_fast() -> None:
    """Page 25,000 of a 1,000,000-task library is served without building the library."""
    async with FakeKlingServer(tasks=1_000_000) as server:
        started = time.monotonic()
        reply = await assets(server, pageNum="25000", pageSize="40")
        assert time.monotonic() - started < 2
        history = reply.json()["history"]
        assert len(history) == 40
        assert reply.body == FakeLibrary(1_000_000).page_bytes(25_000, 40)


def test_public_api_and_no_pytest_import() -> None:
    """__all__ is the public surface, and importing it does not import pytest."""
    assert kling_async.testing.__all__ == [
        "FAULT_KINDS",
        "FakeKlingServer",
        "FakeLibrary",
        "FakeStats",
        "Faults",
    ]
    code = "import sys, kling_async.testing; assert 'pytest' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
