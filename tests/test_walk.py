"""The page walk against the fake server: prefetch, early stop, drift, since, runaway guard,
checkpoints and raw works."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import msgspec
import pytest
from aiohttp import web

from kling_async import KlingSession, WalkCheckpoint, WalkStalledError
from kling_async._planner import Answer, Planner
from kling_async.testing import FakeKlingServer, Faults

from .conftest import TOKEN, Scripted, make_page

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


def session(server: FakeKlingServer, **kwargs: object) -> KlingSession:
    options: dict[str, object] = dict(FAST)
    options.update(kwargs)
    return KlingSession(server.token, base_url=server.base_url, **options)  # type: ignore[arg-type]


def walk_tasks() -> list[asyncio.Task[object]]:
    """The client's page requests still alive (the in-process server's tasks aside)."""
    return [t for t in asyncio.all_tasks() if "Walk._fetch" in repr(t.get_coro())]


def library_ids(server: FakeKlingServer, page_size: int = 40) -> list[int]:
    """Every work id of the server's library as it stands, newest first."""
    ids: list[int] = []
    page_num = 1
    while True:
        history = server.library.page(page_num, page_size)["history"]
        if not history:
            return ids
        ids.extend(w["workId"] for item in history for w in item["works"])
        page_num += 1


@pytest.mark.parametrize("prefetch", [0, 1, 4])
async def test_walk_yields_library_in_order(prefetch: int) -> None:
    """With or without prefetch, the walk yields the whole library once, in order."""
    async with FakeKlingServer(tasks=300, seed=3) as server:
        expected = library_ids(server, 25)
        async with session(server) as kling:
            got = [w.work_id async for w in kling.iter_works(page_size=25, prefetch=prefetch)]
        assert got == expected
        # prefetch + 1 pages, and with prefetch one head probe besides.
        assert server.stats.max_in_flight <= prefetch + 1 + (prefetch > 0)


async def test_one_page_at_a_time_the_usual_page_takes_one_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk one page at a time receives and hands out the usual page in one planner step
    (Planner.receive_in_sequence): every full page after the first two (page 1 proves the
    page size, page 2 is the first one asked right after the page above), with the same
    works as ever. Losing that step costs nothing visible but CPU, so it is pinned here."""
    given = 0
    receive_in_sequence = Planner.receive_in_sequence

    def counting(self: Planner[object], req_id: int, answer: Answer[object]) -> object:
        nonlocal given
        batch = receive_in_sequence(self, req_id, answer)
        given += batch is not None
        return batch

    monkeypatch.setattr(Planner, "receive_in_sequence", counting)
    async with FakeKlingServer(tasks=400, seed=1) as server:
        expected = library_ids(server, 20)
        async with session(server) as kling:
            walk = kling.walk(page_size=20)
            got = [w.work_id async for page in walk for w in page.works]
    assert got == expected
    assert given >= 400 // 20 - 2


async def test_prefetch_keeps_n_plus_one_in_flight() -> None:
    """prefetch=4 keeps five page requests in flight against a slow server (and at times a
    head probe besides)."""
    async with FakeKlingServer(tasks=400, latency=0.05) as server:
        async with session(server) as kling:
            n = sum([1 async for _ in kling.iter_works(page_size=40, prefetch=4)])
        assert n == len(library_ids(server))
        assert server.stats.max_in_flight in (5, 6)


async def test_prefetch_stops_at_empty_page() -> None:
    """At the first empty page the walk ends; requests beyond it are cancelled, not awaited."""
    async with FakeKlingServer(tasks=100, latency=0.2) as server:
        async with session(server) as kling:
            walk = kling.walk(page_size=50, prefetch=4)
            pages = [b.page_num async for b in walk]
            assert walk_tasks() == []  # pages in flight past the end were cancelled
        assert pages == [1, 2]
        assert walk.finished
        # Page 1 alone (it shows the head of the list), then pages 2-6 together; head probes
        # (page 1 of size 1) prove that 2 and the empty 3 saw the same list.
        asked = Counter(server.stats.pages)
        asked[1] -= walk.stats.probes
        assert set(asked.values()) == {1}  # each page once
        assert max(asked) <= 7  # page 2 answered, one more went out: nothing beyond
        assert walk.stats.probes >= 1 and walk.stats.refetches == 0


async def test_max_items_no_request_beyond_need_with_prefetch() -> None:
    """max_items caps the pages asked for, even with prefetch."""
    async with FakeKlingServer(tasks=1000) as server:
        async with session(server) as kling:
            got = [w async for w in kling.iter_works(page_size=10, max_items=15, prefetch=8)]
        assert len(got) == 15
        assert server.stats.requests <= 2


async def test_max_pages_bounds_the_walk() -> None:
    """max_pages asks for at most that many pages (head probes aside)."""
    async with FakeKlingServer(tasks=1000) as server:
        async with session(server) as kling:
            walk = kling.walk(page_size=10, max_pages=3, prefetch=2)
            pages = [b async for b in walk]
        assert len(pages) == 3 and server.stats.requests == 3 + walk.stats.probes


async def test_cancel_mid_prefetch_is_prompt_and_clean() -> None:
    """Cancelling a prefetching walk raises CancelledError promptly and leaves no task."""
    async with FakeKlingServer(tasks=1000, latency=0.3) as server, session(server) as kling:

        async def consume() -> None:
            async for _ in kling.iter_works(prefetch=4):
                pass

        task = asyncio.create_task(consume())
        while server.stats.in_flight < 5:  # page 1 alone, then five together
            await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5
        assert walk_tasks() == []


async def test_break_out_of_prefetching_walk_cancels_requests() -> None:
    """Leaving `async for` early cancels the prefetched requests."""
    async with FakeKlingServer(tasks=1000, latency=0.3) as server, session(server) as kling:
        async for _ in kling.iter_works(prefetch=4):
            break
        await asyncio.sleep(0.05)  # the generator's finaliser runs on the loop
        assert walk_tasks() == []


async def test_shared_backoff_slows_every_request(scripted: Scripted) -> None:
    """A 429 with Retry-After on one page holds back the walk's next requests too."""
    arrivals: list[tuple[str, float]] = []
    limited = {"done": False}

    async def handler(request: web.Request) -> web.Response:
        page_num = request.query["pageNum"]
        arrivals.append((page_num, time.monotonic()))
        if page_num == "3" and not limited["done"]:
            limited["done"] = True
            return web.json_response({"error": "busy"}, status=429, headers={"Retry-After": "0.4"})
        body = make_page(int(page_num), 2, total_pages=8)
        return web.Response(body=body, content_type="application/json")

    scripted.handle(handler)
    async with KlingSession(TOKEN, base_url=scripted.base_url, **FAST) as kling:  # type: ignore[arg-type]
        works = [w async for w in kling.iter_works(page_size=2, prefetch=2)]
    assert len(works) == 16
    limit_at = next(t for p, t in arrivals if p == "3")
    # Requests already on their way when the 429 was answered arrive within milliseconds;
    # none is sent during the 0.4 s the server asked for.
    after = [(p, t - limit_at) for p, t in arrivals if t - limit_at > 0.05]
    assert after, "requests after the 429"
    assert all(dt >= 0.39 for _, dt in after), after


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_exactly_once_under_head_inserts(prefetch: int) -> None:
    """New works at the head during the walk: no work twice, every pre-existing work once."""
    async with FakeKlingServer(tasks=2000, seed=11) as server:
        before = library_ids(server)
        server.faults = Faults(inserts_per_request=7)
        async with session(server) as kling:
            walk = kling.walk(page_size=40, prefetch=prefetch)
            got = [w.work_id async for b in walk for w in b.works]
        counts = Counter(got)
        assert max(counts.values()) == 1
        assert set(before) <= set(counts)
        assert walk.stats.duplicates > 0  # the drift really happened


async def test_exactly_once_with_out_of_order_answers(scripted: Scripted) -> None:
    """Pages answered out of order while works arrive cannot hide a work at a boundary."""
    total = 400
    state = {"inserted": 0}

    async def handler(request: web.Request) -> web.Response:
        page_num = int(request.query["pageNum"])
        size = int(request.query["pageSize"])
        # Later pages answer first; every request inserts two tasks at the head.
        await asyncio.sleep(0.05 * max(0, 6 - page_num % 6))
        state["inserted"] += 2
        head = list(range(-state["inserted"], 0))
        ids = head + list(range(total))
        chunk = ids[(page_num - 1) * size : page_num * size]
        history = [
            {
                "works": [{"workId": 10_000 + i, "createTime": 10**12 - i}],
                "task": {"id": 10_000 + i},
            }
            for i in chunk
        ]
        return web.json_response({"history": history})

    scripted.handle(handler)
    async with KlingSession(TOKEN, base_url=scripted.base_url, **FAST) as kling:  # type: ignore[arg-type]
        walk = kling.walk(page_size=20, prefetch=4)
        got = [w.work_id async for b in walk for w in b.works]
    counts = Counter(got)
    assert max(counts.values()) == 1
    assert {10_000 + i for i in range(total)} <= set(counts)


async def test_runaway_guard_same_page_forever(scripted: Scripted) -> None:
    """A server that ignores pageNum (a full first page served again for page 2) trips
    WalkStalledError instead of looping forever."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=make_page(1, 3), content_type="application/json")

    scripted.handle(handler)
    async with KlingSession(TOKEN, base_url=scripted.base_url, **FAST) as kling:  # type: ignore[arg-type]
        with pytest.raises(WalkStalledError, match="page 2") as info:
            async for _ in kling.iter_works(page_size=3, max_stale_pages=3):
                pass
    assert info.value.page_num == 2
    assert len(scripted.requests) < 10


async def test_short_page_served_again_is_the_end(scripted: Scripted) -> None:
    """A proxy answering past the end with the (short) last page again: the walk just ends."""

    async def handler(request: web.Request) -> web.Response:
        page = min(int(request.query["pageNum"]), 3)
        size = int(request.query["pageSize"])
        body = make_page(page, size if page < 3 else 1, total_pages=3)
        return web.Response(body=body, content_type="application/json")

    scripted.handle(handler)
    async with KlingSession(TOKEN, base_url=scripted.base_url, **FAST) as kling:  # type: ignore[arg-type]
        walk = kling.walk(page_size=3, prefetch=2)
        got = [w.work_id async for b in walk for w in b.works]
    assert len(got) == 7 and len(set(got)) == 7 and walk.finished


async def test_runaway_guard_arrivals_faster_than_a_page_per_request() -> None:
    """Works arriving at a page or more per request: no walk can end, so it stops clearly."""
    async with FakeKlingServer(tasks=500, faults=Faults(inserts_per_request=50)) as server:
        async with session(server) as kling:
            with pytest.raises(WalkStalledError):
                async for _ in kling.iter_works(page_size=40):
                    pass
        assert server.stats.requests < 20


async def test_since_stops_at_first_older_page() -> None:
    """since yields only newer works and asks for no page beyond the one reaching it."""
    async with FakeKlingServer(tasks=1000) as server:
        page3 = server.library.page(3, 40)["history"]
        cut = page3[10]["works"][0]["createTime"]
        async with session(server) as kling:
            got = [w async for w in kling.iter_works(page_size=40, since=cut)]
        assert got and all(w.create_time is not None and w.create_time > cut for w in got)
        newer = [
            w["workId"]
            for p in (1, 2, 3)
            for item in server.library.page(p, 40)["history"]
            for w in item["works"]
            if w["createTime"] > cut
        ]
        assert [w.work_id for w in got] == newer
        assert server.stats.pages == [1, 2, 3]


async def test_since_accepts_aware_datetime_only() -> None:
    """since takes an aware datetime (or epoch ms); a naive one is refused."""
    from datetime import datetime, timezone

    async with FakeKlingServer(tasks=10) as server, session(server) as kling:
        future = datetime(2100, 1, 1, tzinfo=timezone.utc)
        assert [w async for w in kling.iter_works(since=future)] == []
        with pytest.raises(ValueError, match="aware"):
            kling.walk(since=datetime(2020, 1, 1))


async def test_checkpoint_resume_exactly_once_across_inserts() -> None:
    """A walk stopped after 3 pages resumes from its checkpoint: every work once, even with
    many new works inserted in between."""
    async with FakeKlingServer(tasks=600, seed=5) as server:
        before = library_ids(server)
        async with session(server) as kling:
            first: list[int] = []
            walk = kling.walk(page_size=40)
            async for batch in walk:
                first.extend(w.work_id for w in batch.works)  # type: ignore[misc]
                if batch.page_num == 3:
                    break
            saved = msgspec.json.encode(walk.checkpoint())
            server.insert_tasks(130)  # more than three pages of drift
            resumed = kling.walk(resume=msgspec.json.decode(saved, type=WalkCheckpoint))
            second = [w.work_id async for b in resumed for w in b.works]
        assert resumed.finished
        assert sorted(first + second) == sorted(before)
        # Resumed where its place was (page 3), read on to find it again past the arrivals:
        # about one page per page_size works that arrived, not from page 1.
        assert server.stats.pages[3] == 3
        assert resumed.stats.pages <= (600 + 130) // 40 - 3 + 6


async def test_raw_works_are_lossless() -> None:
    """raw=True hands each work exactly as sent: every key, camelCase, same values."""
    async with FakeKlingServer(tasks=30) as server:
        sent = [w for item in server.library.page(1, 30)["history"] for w in item["works"]]
        async with session(server) as kling:
            batches = [b async for b in kling.walk(page_size=30, raw=True)]
        raws = [msgspec.json.decode(r) for b in batches for r in b.raw_works]
        assert raws == sent
        assert [w.work_id for b in batches for w in b.works] == [w["workId"] for w in sent]


@pytest.mark.parametrize("tasks", [5, 9])
async def test_page_answered_late_cannot_hide_a_work_at_the_end(tasks: int) -> None:
    """A prefetched page answered after the next ones (a 429 retry) while a work arrives, with
    nothing after it to show the drift: the walk still yields every pre-existing work."""
    async with FakeKlingServer(tasks=tasks, seed=1) as server:
        before = library_ids(server, 2)
        server.faults = Faults(at={1: "429"}, retry_after="0.2", inserts_per_request=0.25)
        async with session(server) as kling:
            got = [w.work_id async for w in kling.iter_works(page_size=2, prefetch=2)]
        assert max(Counter(got).values()) == 1
        assert set(before) <= set(got)


async def test_checkpoint_after_late_page_loses_nothing() -> None:
    """A checkpoint taken right after an out-of-order answer resumes without losing a work."""
    async with FakeKlingServer(tasks=40, seed=1) as server:
        before = library_ids(server, 2)
        server.faults = Faults(at={1: "429"}, retry_after="0.2", inserts_per_request=0.25)
        got: list[int | None] = []
        async with session(server) as kling:
            walk = kling.walk(page_size=2, prefetch=2)
            async for batch in walk:
                got += [w.work_id for w in batch.works]
                if batch.page_num == 3:
                    saved = msgspec.json.encode(walk.checkpoint())
                    break  # the process dies here
            resumed = kling.walk(resume=msgspec.json.decode(saved, type=WalkCheckpoint))
            got += [w.work_id async for b in resumed for w in b.works]
        assert max(Counter(got).values()) == 1
        assert set(before) <= set(got)


async def test_no_false_stall_at_the_tail() -> None:
    """Arrivals of 3/4 page per request re-serve the tail on shrinking pages: not a stall."""
    async with FakeKlingServer(tasks=60, seed=1) as server:
        before = library_ids(server)
        server.faults = Faults(inserts_per_request=30)
        async with session(server) as kling:
            got = [w.work_id async for w in kling.iter_works(page_size=40)]
        assert max(Counter(got).values()) == 1
        assert set(before) <= set(got)
