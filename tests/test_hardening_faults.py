"""Fault storm: a 20,000-task library walked through about 10% of requests failing in every
transient way arrives whole, each work exactly once, in bounded time; a complete 200 with broken
JSON is a DecodeError at its page after one request."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import pytest

from kling_async import DecodeError, KlingSession
from kling_async.testing import FAULT_KINDS, FakeKlingServer, Faults

TASKS = 20_000
PAGE_SIZE = 100
TRANSIENT = tuple(kind for kind in FAULT_KINDS if kind != "broken_json")
# Not a speed assertion: a walk stuck in a retry loop or a hung socket fails here, not in CI's
# global timeout. A healthy run takes a few seconds.
BOUND = 120


class _Work(msgspec.Struct):
    workId: int  # the wire name


class _Item(msgspec.Struct):
    works: list[_Work]


class _Page(msgspec.Struct):
    history: list[_Item]


def library_ids(server: FakeKlingServer, page_size: int) -> list[int]:
    """Every work id of the server's library, newest first, straight from the library."""
    decoder = msgspec.json.Decoder(_Page)
    ids: list[int] = []
    page_num = 1
    while history := decoder.decode(server.library.page_bytes(page_num, page_size)).history:
        ids.extend(w.workId for item in history for w in item.works)
        page_num += 1
    return ids


def storm() -> Faults:
    """About 10% faults drawn from every transient kind, each kind also forced once early."""
    return Faults(
        rate=0.1,
        kinds=TRANSIENT,
        at={2 + i: kind for i, kind in enumerate(TRANSIENT)},
        retry_after="0",
        slow_seconds=1.0,
        seed=11,
    )


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_fault_storm_every_work_exactly_once(prefetch: int) -> None:
    """Under ~10% transient faults of every kind, the walk yields the library exactly once."""
    async with FakeKlingServer(tasks=TASKS, seed=7, faults=storm()) as server:
        expected = library_ids(server, PAGE_SIZE)
        async with KlingSession(
            server.token,
            base_url=server.base_url,
            timeout=0.3,  # "slow" answers after 1 s: each one is a client-side timeout
            max_retries=10,
            backoff_base=0.001,
            backoff_cap=0.01,
        ) as kling:
            walk = kling.walk(page_size=PAGE_SIZE, prefetch=prefetch)

            async def collect() -> list[int]:
                return [w.work_id async for batch in walk for w in batch.works]  # type: ignore[misc]

            got = await asyncio.wait_for(collect(), BOUND)
        stats = server.stats
        print(
            f"\nstorm prefetch={prefetch}: {len(got):,} works over {stats.requests} requests, "
            f"faults {dict(sorted(stats.faults.items()))}, walk retries {walk.stats.retries}"
        )
    assert len(expected) > TASKS  # image tasks hold several works
    assert got == expected
    assert all(n == 1 for n in Counter(got).values())
    assert set(stats.faults) == set(TRANSIENT)
    assert all(stats.faults[kind] >= 1 for kind in TRANSIENT)
    assert sum(stats.faults.values()) >= 0.08 * stats.requests
    assert walk.finished and walk.stats.retries >= sum(stats.faults.values())
    assert walk.stats.works == len(expected)


@pytest.mark.parametrize("prefetch", [0, 4])
async def test_broken_json_is_decode_error_at_its_page_once(prefetch: int) -> None:
    """A complete 200 with truncated JSON raises DecodeError naming the page, after one request."""
    async with FakeKlingServer(
        tasks=2_000, seed=3, faults=Faults(at={3: "broken_json"}, seed=1)
    ) as server:
        async with KlingSession(
            server.token, base_url=server.base_url, backoff_base=0.001, backoff_cap=0.01
        ) as kling:
            with pytest.raises(DecodeError) as info:
                await asyncio.wait_for(
                    _drain(kling.walk(page_size=PAGE_SIZE, prefetch=prefetch)), BOUND
                )
        broken_page = server.stats.pages[2]  # the page the third request asked for
    assert f"pageNum={broken_page}&" in str(info.value)
    assert server.stats.faults == Counter({"broken_json": 1})
    assert server.stats.pages.count(broken_page) == 1
    assert info.value.__cause__ is not None


async def test_broken_json_get_assets_not_retried() -> None:
    """get_assets on a broken-JSON page: one request, DecodeError with pageNum in its message."""
    server = FakeKlingServer(tasks=200, faults=Faults(at={1: "broken_json"}))
    async with (
        server,
        KlingSession(server.token, base_url=server.base_url, max_retries=10) as kling,
    ):
        with pytest.raises(DecodeError, match="pageNum=5"):
            await kling.get_assets(page_num=5, page_size=10)
    assert server.stats.requests == 1 and server.stats.pages == [5]


async def _drain(walk: object) -> None:
    async for _ in walk:  # type: ignore[attr-defined]
        pass
