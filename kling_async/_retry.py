"""Retry state shared by every request of one call or one walk."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from ._http import backoff_delay


class RetryState:
    """Backoff shared by the requests of one walk.

    A 429 or 5xx on any in-flight request pushes ``not_before`` forward, and every request
    waits for it before it is sent: a rate limit slows the whole walk instead of being
    multiplied by the number of pages in flight.
    """

    __slots__ = (
        "base",
        "cap",
        "max_retry_after",
        "not_before",
        "requests",
        "retries",
        "rng",
        "sleep",
    )

    def __init__(
        self,
        *,
        base: float,
        cap: float,
        max_retry_after: float = 300.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base = base
        self.cap = cap
        self.max_retry_after = max_retry_after
        self.rng = rng or random.Random()
        # The session passes a sleep that its close() interrupts.
        self.sleep = sleep
        self.not_before = 0.0
        self.requests = 0
        self.retries = 0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return backoff_delay(attempt, base=self.base, cap=self.cap, rng=self.rng)

    def push(self, delay: float) -> None:
        """Hold every request of this state back for at least ``delay`` seconds from now."""
        loop = asyncio.get_running_loop()
        self.not_before = max(self.not_before, loop.time() + delay)
        self.retries += 1

    async def wait(self) -> None:
        """Sleep until the shared backoff allows the next request."""
        loop = asyncio.get_running_loop()
        # A loop, not an Event: another request's 429 may push not_before on while we sleep.
        while (remaining := self.not_before - loop.time()) > 0:
            await self.sleep(remaining)
        self.requests += 1
