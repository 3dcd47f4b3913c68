"""The walk over loopback against servers unlike our default fake: every clock behaviour, a
capped page size (offsets by the size asked or served), a last page served again past the end,
works arriving and answers coming back out of order; with prefetch 0, 2 and 4."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from kling_async import KlingSession, WalkCheckpoint
from kling_async.testing import FakeKlingServer, Faults
from kling_async.testing._server import CLOCK_MODES

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}
SIZE = 20


def all_ids(server: FakeKlingServer, size: int = SIZE) -> list[int]:
    """Every work id of the library as it stands, newest first (straight from the library)."""
    ids: list[int] = []
    page = 1
    while history := server.library.page(page, size)["history"]:
        ids.extend(w["workId"] for item in history for w in item["works"])
        page += 1
    return ids


def assert_exactly_once(got: list[int], before: list[int]) -> None:
    counts = Counter(got)
    assert max(counts.values(), default=1) == 1, "a work yielded twice"
    assert not [w for w in before if w not in counts], "a work lost"


async def walk_ids(server: FakeKlingServer, prefetch: int, **walk: object) -> list[int]:
    async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:  # type: ignore[arg-type]
        got: list[int] = []
        async for batch in kling.walk(page_size=SIZE, prefetch=prefetch, **walk):  # type: ignore[arg-type]
            got.extend(w.work_id for w in batch.works if w.work_id is not None)
        return got


@pytest.mark.parametrize("prefetch", [0, 2, 4])
@pytest.mark.parametrize("clock", [c for c in CLOCK_MODES if c != "library"])
async def test_exactly_once_whatever_the_clock(clock: str, prefetch: int) -> None:
    """Works arriving, some answers late (out of order): every work once, in every clock mode."""
    async with FakeKlingServer(tasks=300, seed=4, clock=clock) as server:
        before = all_ids(server)
        server.faults = Faults(
            inserts_per_request=3, rate=0.3, kinds=("slow",), slow_seconds=0.02, seed=7
        )
        got = await walk_ids(server, prefetch)
    assert_exactly_once(got, before)


@pytest.mark.parametrize("prefetch", [0, 2, 4])
@pytest.mark.parametrize("offsets", ["served", "asked"])
async def test_a_capped_page_size_loses_nothing(
    offsets: str, prefetch: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A server serving 7 entries when 20 are asked: the walk adapts, warns once, loses none."""
    async with FakeKlingServer(tasks=120, seed=2, page_size_cap=7, cap_offsets=offsets) as server:
        before = all_ids(server)
        async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:  # type: ignore[arg-type]
            with caplog.at_level(logging.WARNING, logger="kling_async"):
                walk = kling.walk(page_size=SIZE, prefetch=prefetch)
                got = [w.work_id async for b in walk for w in b.works]
    assert_exactly_once([g for g in got if g is not None], before)
    assert walk.stats.page_size_caps == 1 and walk.stats.page_size == 7
    assert walk.checkpoint().page_size == 7
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "at most 7" in warnings[0].getMessage()


@pytest.mark.parametrize("prefetch", [0, 2, 4])
async def test_a_library_smaller_than_a_capped_page(prefetch: int) -> None:
    """Fewer works than a page behind a cap counting offsets by the size asked: page 2 at the
    size served finds the rest, where page 2 at the size asked is empty."""
    async with FakeKlingServer(tasks=12, seed=3, page_size_cap=5, cap_offsets="asked") as server:
        before = all_ids(server)
        got = await walk_ids(server, prefetch)
    assert_exactly_once(got, before)


@pytest.mark.parametrize("prefetch", [0, 2, 4])
@pytest.mark.parametrize("tasks", [100, 107])
async def test_last_page_served_again_ends_the_walk(tasks: int, prefetch: int) -> None:
    """A proxy answering past the end with the last page again (full or short): the walk ends
    normally with every work once, no WalkStalledError."""
    async with FakeKlingServer(tasks=tasks, seed=5, past_end="repeat") as server:
        before = all_ids(server)
        async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:  # type: ignore[arg-type]
            walk = kling.walk(page_size=SIZE, prefetch=prefetch)
            got = [w.work_id async for b in walk for w in b.works]
    assert walk.finished
    assert_exactly_once([g for g in got if g is not None], before)


@pytest.mark.parametrize("prefetch", [0, 2, 4])
async def test_resume_after_any_batch_with_many_arrivals(prefetch: int) -> None:
    """Stopped after any batch, resumed after more than three pages of new works: nothing
    lost, nothing repeated; the resumed walk starts at the page its place was on (not page 1
    again) and reads about one page more per page of arrivals."""
    async with FakeKlingServer(tasks=200, seed=6, clock="absent") as server:
        before = all_ids(server)
        for stop_after in (1, 3, 5):
            async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:  # type: ignore[arg-type]
                first: list[int] = []
                walk = kling.walk(page_size=SIZE, prefetch=prefetch)
                async for batch in walk:
                    first.extend(w.work_id for w in batch.works if w.work_id is not None)
                    if batch.page_num >= stop_after:
                        break
                saved = walk.checkpoint().to_json()
            server.insert_tasks(70)
            server.reset_stats()
            checkpoint = WalkCheckpoint.from_json(saved)
            resumed = await walk_ids(server, prefetch, resume=checkpoint)
            assert_exactly_once(first + resumed, before)
            pages = [
                p for p, n in zip(server.stats.pages, server.stats.page_sizes, strict=True) if n > 1
            ]
            assert pages[0] == checkpoint.next_page == stop_after


@pytest.mark.parametrize("prefetch", [0, 2, 4])
async def test_checkpoint_never_runs_ahead_of_the_consumer(prefetch: int) -> None:
    """Read at any moment (a commit timer, a cancellation), the walk's checkpoint describes the
    batches its consumer has received, never one it is about to get: a resume from it then
    loses nothing."""
    import asyncio

    async with (
        FakeKlingServer(tasks=300, seed=8, latency=0.002) as server,
        KlingSession(server.token, base_url=server.base_url, **FAST) as kling,  # type: ignore[arg-type]
    ):
        walk = kling.walk(page_size=SIZE, prefetch=prefetch)
        received: list[WalkCheckpoint] = [walk.checkpoint()]
        samples: list[tuple[int, bytes]] = []
        done = False

        async def sample() -> None:
            while not done:
                samples.append((len(received), walk.checkpoint().to_json()))
                await asyncio.sleep(0)

        sampler = asyncio.create_task(sample())
        async for _ in walk:
            received.append(walk.checkpoint())
        done = True
        await sampler
    assert len(samples) > len(received)
    for count, seen in samples:
        assert seen == received[count - 1].to_json()


@pytest.mark.parametrize("prefetch", [0, 2, "auto"])
async def test_checkpoint_after_a_cancelled_consumer_counts_only_what_it_got(
    prefetch: int | str,
) -> None:
    """Cancel the consumer at any moment: the walk's checkpoint covers exactly the batches it
    received (none half-handed), so a resume from it loses and repeats nothing."""
    import asyncio
    import random

    rng = random.Random(3)
    async with FakeKlingServer(tasks=240, seed=8, latency=0.005) as server:
        before = all_ids(server)
        for _ in range(6):
            got: list[int] = []
            async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:  # type: ignore[arg-type]
                walk = kling.walk(page_size=SIZE, prefetch=prefetch)  # type: ignore[arg-type]

                async def consume(walk: object = walk, got: list[int] = got) -> None:
                    async for batch in walk:  # type: ignore[attr-defined]
                        got.extend(w.work_id for w in batch.works)

                task = asyncio.create_task(consume())
                await asyncio.sleep(rng.uniform(0.0, 0.08))
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                checkpoint = walk.checkpoint()
            resumed = await walk_ids(server, 0, resume=checkpoint)
            assert_exactly_once(got + resumed, before)
