"""watch_works: each poll's works oldest first, a bounded buffer, give_back, raw works and
max_polls."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import KlingSession, WatchState, Work
from kling_async.testing import FakeKlingServer

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


def session(server: FakeKlingServer) -> KlingSession:
    return KlingSession(server.token, base_url=server.base_url, **FAST)  # type: ignore[arg-type]


def newest_time(server: FakeKlingServer) -> int:
    """The newest createTime of the library (an image task's works differ by a few ms)."""
    works = [w for item in server.library.page(1, 5)["history"] for w in item["works"]]
    return max(w["createTime"] for w in works)


def work_dicts(server: FakeKlingServer, ids: list[int]) -> dict[int, dict[str, Any]]:
    wanted = set(ids)
    found: dict[int, dict[str, Any]] = {}
    for item in server.library.page(1, 100)["history"]:
        for work in item["works"]:
            if work["workId"] in wanted:
                found[work["workId"]] = work
    return found


async def one_poll(kling: KlingSession, **kwargs: Any) -> list[Work]:
    return [w async for w in kling.watch_works(interval=0.01, max_polls=1, **kwargs)]


async def test_a_poll_yields_oldest_first() -> None:
    """New works come in the order they were made: the reverse of the list's order."""
    async with FakeKlingServer(tasks=30, seed=5) as server, session(server) as kling:
        start = newest_time(server)
        first = server.insert_tasks(2, content_type="video")
        images = server.insert_tasks(1, content_type="image")  # four works, one task
        last = server.insert_tasks(2, content_type="audio")
        got = await one_poll(kling, since=start)
    times = [w.create_time or 0 for w in got]
    assert times == sorted(times)
    assert [w.work_id for w in got][:2] == first
    assert {w.work_id for w in got} == {*first, *images, *last}


async def test_bounded_buffer_keeps_order_and_loses_nothing() -> None:
    """More new works than max_buffer: each poll yields the oldest it can hold; the next
    polls bring the rest, every work once and the whole stream oldest first."""
    async with FakeKlingServer(tasks=30, seed=6) as server, session(server) as kling:
        start = newest_time(server)
        new = server.insert_tasks(9, content_type="video")
        watcher = kling.watch_works(interval=0.01, since=start, max_buffer=4, max_polls=4)
        got = [w async for w in watcher]
    assert [w.work_id for w in got] == new  # insert_tasks returns them oldest first
    assert watcher.state.delivered == []


async def test_give_back_ends_the_poll_and_comes_again_first() -> None:
    """A work given back ends its poll; the next poll starts again from it, and nothing after
    it was skipped or marked done."""
    async with FakeKlingServer(tasks=30, seed=7) as server, session(server) as kling:
        start = newest_time(server)
        new = server.insert_tasks(5, content_type="video")  # oldest first
        watcher = kling.watch_works(interval=0.01, since=start, max_polls=3)
        seen: list[int] = []
        failed_once = False
        async for work in watcher:
            assert work.work_id is not None
            seen.append(work.work_id)
            if work.work_id == new[2] and not failed_once:
                failed_once = True
                watcher.give_back(work)
                state = msgspec.json.decode(watcher.state.to_json())
                assert new[2] not in state["delivered"] and new[3] not in state["delivered"]
                continue
            if len(seen) == 6:
                break
        await watcher.aclose()
    assert seen == [*new[:3], new[2], new[3], new[4]]
    with pytest.raises(ValueError, match="yielded last"):
        watcher.give_back(Work(work_id=1))


async def test_raw_works_are_as_sent() -> None:
    """raw=True keeps each yielded work exactly as the API sent it, in last_raw."""
    async with FakeKlingServer(tasks=30, seed=8) as server, session(server) as kling:
        start = newest_time(server)
        new = server.insert_tasks(3, content_type="video")
        watcher = kling.watch_works(interval=0.01, since=start, raw=True, max_polls=1)
        raws: dict[int, Any] = {}
        async for work in watcher:
            assert work.work_id is not None and watcher.last_raw is not None
            raws[work.work_id] = msgspec.json.decode(watcher.last_raw)
        assert raws == work_dicts(server, new)


async def test_first_poll_from_now_then_max_polls() -> None:
    """Without since or state, max_polls=1 only notes where now is and yields nothing; a
    second watcher from that state yields exactly the works that arrived in between."""
    async with FakeKlingServer(tasks=30, seed=9) as server, session(server) as kling:
        watcher = kling.watch_works(interval=0.01, max_polls=1)
        assert [w async for w in watcher] == [] and watcher.state.watermark is not None
        new = server.insert_tasks(3, content_type="video")
        again = kling.watch_works(interval=0.01, max_polls=2, state=watcher.state)
        got = [w async for w in again]
    assert Counter(w.work_id for w in got) == Counter(new)


def test_arguments() -> None:
    """max_buffer and max_polls are checked at once."""
    kling = KlingSession("t")
    with pytest.raises(ValueError, match="max_buffer"):
        kling.watch_works(max_buffer=0)
    with pytest.raises(ValueError, match="max_polls"):
        kling.watch_works(max_polls=0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bursts=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=4),
    max_buffer=st.integers(min_value=1, max_value=5),
    page_size=st.integers(min_value=1, max_value=4),
)
async def test_bursts_come_once_and_oldest_first_whatever_the_buffer(
    bursts: list[int], max_buffer: int, page_size: int
) -> None:
    """Bursts of arrivals between polls, any buffer and page size: every new work exactly
    once, and the whole stream in creation order."""
    async with FakeKlingServer(tasks=20, seed=10) as server, session(server) as kling:
        state = WatchState(watermark=newest_time(server))
        new: list[int] = []
        got: list[Work] = []
        for burst in bursts:
            new += server.insert_tasks(burst, content_type="video")
            polls = burst // max_buffer + 2  # enough polls to drain the burst
            watcher = kling.watch_works(
                interval=0.001,
                state=state,
                max_buffer=max_buffer,
                max_polls=polls,
                page_size=page_size,
            )
            got += [w async for w in watcher]
            state = watcher.state
    assert [w.work_id for w in got] == new
    times = [w.create_time or 0 for w in got]
    assert times == sorted(times)
