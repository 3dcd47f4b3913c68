"""prefetch="auto": the depth a walk picks from what it observes (plain code, milliseconds),
and a walk using it over loopback."""

from __future__ import annotations

from collections import Counter

import pytest

from kling_async import KlingSession
from kling_async._planner import AutoPrefetch
from kling_async.testing import FakeKlingServer, Faults


def test_no_latency_to_hide_means_no_prefetch() -> None:
    """Answers faster than min_latency: depth 0 (deeper only adds work)."""
    auto = AutoPrefetch(max_prefetch=8, min_latency=0.01)
    assert [auto.observe(0.001, retried=False) for _ in range(20)] == [0] * 20


def test_latency_goes_straight_to_the_maximum() -> None:
    """With latency to hide and no retry yet, the depth is max_prefetch at once."""
    auto = AutoPrefetch(max_prefetch=8)
    assert auto.observe(0.1, retried=False) == 8
    assert all(auto.observe(0.1, retried=False) == 8 for _ in range(30))


def test_a_retry_halves_and_growth_is_slow_after() -> None:
    """AIMD: a 429 halves the depth; it doubles back to the threshold, then +1 per round."""
    auto = AutoPrefetch(max_prefetch=8)
    auto.observe(0.1, retried=False)
    assert auto.observe(0.1, retried=True) == 4
    assert auto.observe(0.1, retried=True) == 2
    depths = [auto.observe(0.1, retried=False) for _ in range(40)]
    # At the threshold (2) already: one more per round of depth + 1 answers.
    assert depths[:10] == [2, 2, 3, 3, 3, 3, 4, 4, 4, 4]
    assert depths == sorted(depths) and max(depths) <= 8


@pytest.mark.parametrize("max_prefetch", [0, 1, 3, 8])
def test_never_above_max_prefetch(max_prefetch: int) -> None:
    """Whatever it observes, the depth stays within 0..max_prefetch."""
    auto = AutoPrefetch(max_prefetch=max_prefetch)
    for i in range(200):
        depth = auto.observe(0.05 * (i % 3), retried=i % 17 == 0)
        assert 0 <= depth <= max_prefetch


async def test_auto_walk_over_loopback_is_exact_and_backs_off() -> None:
    """A walk with prefetch="auto" against a slow server with works arriving and 429s: every
    pre-existing work once, and the 429s brought the depth down from the maximum."""
    async with FakeKlingServer(tasks=400, seed=9, latency=0.02) as server:
        before = [
            w["workId"]
            for p in range(1, 12)
            for item in server.library.page(p, 40)["history"]
            for w in item["works"]
        ]
        server.faults = Faults(inserts_per_request=1, at={8: "429", 12: "429"}, retry_after="0")
        async with KlingSession(server.token, base_url=server.base_url) as kling:
            walk = kling.walk(page_size=40, prefetch="auto", max_prefetch=6)
            got = [w.work_id async for b in walk for w in b.works]
        counts = Counter(got)
        assert max(counts.values()) == 1
        assert set(before) <= set(counts)
        # Each 429 is retried, unless the planner had cancelled that request (a page it no
        # longer wanted, as works arrived) before the 429 came back: about 1 walk in 200 here.
        assert 1 <= walk.stats.retries <= 2
        assert walk.prefetch < 6  # brought down from the maximum, and grown back slowly
        assert server.stats.max_in_flight <= 6 + 1 + 1  # depth + 1 pages, and a probe


def test_auto_is_checked_like_any_argument() -> None:
    """A bad prefetch or max_prefetch is refused before any request."""
    kling = KlingSession("t", base_url="http://127.0.0.1:9/v1/kling")
    with pytest.raises(TypeError, match="auto"):
        kling.walk(prefetch="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_prefetch"):
        kling.walk(prefetch="auto", max_prefetch=-1)
