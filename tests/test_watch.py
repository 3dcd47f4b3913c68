"""watch_works against the fake server: new works exactly once, pending works held back,
state saved and restored, transient errors ridden out."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from kling_async import AuthenticationError, KlingSession, Watcher, WatchState, Work
from kling_async.testing import FakeKlingServer, Faults

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


def session(server: FakeKlingServer, **kwargs: object) -> KlingSession:
    options: dict[str, object] = dict(FAST)
    options.update(kwargs)
    return KlingSession(server.token, base_url=server.base_url, **options)  # type: ignore[arg-type]


async def take(watcher: Watcher, n: int, timeout: float = 10.0) -> list[Work]:
    """The next n works of a watcher."""
    got: list[Work] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.append(await anext(watcher))
    return got


class Collector:
    """Runs a watcher in a task for the whole test and collects what it yields."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.works: list[Work] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for work in self.watcher:
            self.works.append(work)

    async def polls(self, n: int, timeout: float = 10.0) -> list[Work]:
        """Wait for n more finished polls; return the works yielded meanwhile."""
        start, target = len(self.works), self.watcher.polls + n
        async with asyncio.timeout(timeout):
            while self.watcher.polls < target:
                if self.task.done():
                    self.task.result()
                await asyncio.sleep(0.005)
        return self.works[start:]

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def succeeded_ids_newer_than(server: FakeKlingServer, created: int) -> set[int]:
    ids: set[int] = set()
    page_num = 1
    while True:
        history = server.library.page(page_num, 100)["history"]
        works = [w for item in history for w in item["works"]]
        ids.update(w["workId"] for w in works if w["createTime"] > created and w["status"] == 99)
        if not works or works[-1]["createTime"] <= created:
            return ids
        page_num += 1


async def test_starts_from_now_and_yields_new_works() -> None:
    """Existing works are not yielded; works inserted later are, once each."""
    async with FakeKlingServer(tasks=200) as server, session(server) as kling:
        watch = Collector(kling.watch_works(interval=0.02))
        assert await watch.polls(2) == []
        new = server.insert_tasks(3, content_type="video")
        got = await watch.polls(3)
        await watch.stop()
        assert sorted(w.work_id for w in got) == sorted(new)


async def test_exactly_once_under_fast_head_inserts() -> None:
    """With inserts at every request, each new succeeded work is yielded exactly once."""
    async with FakeKlingServer(tasks=500, seed=2) as server, session(server) as kling:
        watch = Collector(kling.watch_works(interval=0.01, page_size=10))
        await watch.polls(1)
        start = watch.watcher.state.watermark
        assert start is not None
        server.faults = Faults(inserts_per_request=3)
        await watch.polls(30)
        server.faults = Faults()
        await watch.polls(2)
        await watch.stop()
        got = watch.works
        counts = Counter(w.work_id for w in got)
        assert counts and max(counts.values()) == 1
        assert set(counts) == succeeded_ids_newer_than(server, start)


async def test_only_succeeded_holds_back_rendering_works() -> None:
    """A work still rendering is yielded once it reaches status 99, not before, and once."""
    async with FakeKlingServer(tasks=50) as server, session(server) as kling:
        watch = Collector(kling.watch_works(interval=0.02))
        watcher = watch.watcher
        await watch.polls(1)
        pending = server.insert_tasks(1, content_type="image", pending=True)
        assert await watch.polls(3) == []
        assert set(watcher.state.pending) == set(pending)
        server.insert_tasks(5, content_type="video")  # pushes the pending work down the list
        server.complete_pending()
        got = await watch.polls(3)
        await watch.stop()
        ids = [w.work_id for w in got]
        assert set(pending) <= set(ids) and len(ids) == len(set(ids))
        assert all(w.succeeded for w in got)
        assert watcher.state.pending == {}


async def test_all_statuses_when_not_only_succeeded() -> None:
    """only_succeeded=False yields rendering works at once."""
    async with FakeKlingServer(tasks=50) as server, session(server) as kling:
        watch = Collector(kling.watch_works(interval=0.02, only_succeeded=False))
        await watch.polls(1)
        pending = server.insert_tasks(1, content_type="video", pending=True)
        got = await watch.polls(2)
        await watch.stop()
        assert [w.work_id for w in got] == pending and not got[0].succeeded


async def test_state_saved_and_restored_repeats_and_misses_nothing() -> None:
    """A watcher stopped mid-poll, restarted from its saved state, repeats and misses nothing."""
    async with FakeKlingServer(tasks=100) as server, session(server) as kling:
        start = server.library.page(1, 1)["history"][0]["works"][0]["createTime"]
        first = kling.watch_works(interval=0.02, since=start)
        server.insert_tasks(12, content_type="video")
        got = await take(first, 5)
        saved = first.state.to_json()  # saved after handling the fifth work
        await first.aclose()
        server.insert_tasks(4, content_type="video")  # arrive while no watcher runs
        watch = Collector(kling.watch_works(interval=0.02, state=WatchState.from_json(saved)))
        got += await watch.polls(3)
        await watch.stop()
        counts = Counter(w.work_id for w in got)
        assert max(counts.values()) == 1
        assert set(counts) == succeeded_ids_newer_than(server, start)
        assert len(counts) == 16


async def test_since_yields_existing_newer_works() -> None:
    """since= yields the works created after it, then keeps watching."""
    async with FakeKlingServer(tasks=100) as server, session(server) as kling:
        cut = server.library.page(1, 40)["history"][9]["works"][0]["createTime"]
        watch = Collector(kling.watch_works(interval=0.02, since=cut))
        got = await watch.polls(2)
        await watch.stop()
        assert {w.work_id for w in got} == succeeded_ids_newer_than(server, cut)


async def test_transient_errors_do_not_end_the_watch() -> None:
    """429, 5xx, drops and broken JSON back off and retry; the watch goes on."""
    async with FakeKlingServer(tasks=50) as server, session(server, max_retries=0) as kling:
        watch = Collector(kling.watch_works(interval=0.01, max_backoff=0.05))
        await watch.polls(1)
        server.faults = Faults(at={1: "503", 2: "broken_json", 3: "drop", 4: "429"})
        server.reset_stats()
        new = server.insert_tasks(2, content_type="video")
        got = await watch.polls(3)
        await watch.stop()
        assert sorted(w.work_id for w in got) == sorted(new)
        assert sum(server.stats.faults.values()) == 4


async def test_client_errors_end_the_watch() -> None:
    """A 401 ends the watch with AuthenticationError."""
    async with (
        FakeKlingServer(tasks=10) as server,
        KlingSession("wrong-token", base_url=server.base_url) as kling,
    ):
        with pytest.raises(AuthenticationError):
            async for _ in kling.watch_works(interval=0.01):
                pass


def test_state_round_trip_and_arguments() -> None:
    """WatchState survives JSON; since and state together are refused."""
    state = WatchState(watermark=5, delivered=[1, 2], pending={3: 4})
    assert WatchState.from_json(state.to_json()) == state
    kling = KlingSession("t")
    with pytest.raises(ValueError, match="either since or state"):
        kling.watch_works(since=1, state=state)
    with pytest.raises(ValueError, match="interval"):
        kling.watch_works(interval=0)


async def test_restart_mid_poll_repeats_nothing() -> None:
    """A bot stopped after one work of a poll, restarted from its state, repeats nothing."""
    async with FakeKlingServer(tasks=50, seed=3) as server, session(server) as kling:
        start = server.library.page(1, 1)["history"][0]["works"][0]["createTime"]
        server.insert_tasks(6, content_type="video")
        first = kling.watch_works(interval=0.01, page_size=2, since=start)
        got = await take(first, 1)
        saved = first.state.to_json()
        await first.aclose()
        watch = Collector(
            kling.watch_works(interval=0.01, page_size=2, state=WatchState.from_json(saved))
        )
        got += await watch.polls(3)
        await watch.stop()
        counts = Counter(w.work_id for w in got)
        assert max(counts.values()) == 1 and set(counts) == succeeded_ids_newer_than(server, start)


async def test_transient_error_mid_poll_repeats_nothing() -> None:
    """A 503 in the middle of a poll: the next poll neither repeats nor misses a work."""
    async with (
        FakeKlingServer(tasks=50, seed=3) as server,
        session(server, max_retries=0) as kling,
    ):
        start = server.library.page(1, 1)["history"][0]["works"][0]["createTime"]
        server.insert_tasks(6, content_type="video")
        server.faults = Faults(at={2: "503"})
        watch = Collector(kling.watch_works(interval=0.01, page_size=2, since=start))
        await watch.polls(4)
        await watch.stop()
        counts = Counter(w.work_id for w in watch.works)
        assert server.stats.faults["503"] == 1
        assert max(counts.values()) == 1 and set(counts) == succeeded_ids_newer_than(server, start)


async def test_pending_work_that_never_succeeds_is_given_up() -> None:
    """A held-back work older than max_pending_age is dropped, so polls stop walking to it."""
    async with FakeKlingServer(tasks=50) as server, session(server) as kling:
        watch = Collector(kling.watch_works(interval=0.01, max_pending_age=3600))
        await watch.polls(1)
        stuck = server.insert_tasks(1, content_type="video", pending=True)
        await watch.polls(2)
        assert set(watch.watcher.state.pending) == set(stuck)
        # New works keep arriving; the create times move on past the age limit.
        created = server.library.page(1, 1)["history"][0]["works"][0]["createTime"]
        watch.watcher.state.watermark = created + 3_600_001
        await watch.polls(2)
        await watch.stop()
        assert watch.watcher.state.pending == {}
