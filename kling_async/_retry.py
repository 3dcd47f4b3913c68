"""When an API request may be sent: the pace and the backoff, shared by a whole session.

Two objects:

* :class:`RequestGate`, one per :class:`~kling_async.KlingSession`. Every API request of the
  session (walk pages, prefetched pages, download links, accounts, watches; never a CDN file)
  passes :meth:`RequestGate.acquire` before it is sent. The gate keeps two clocks:

  - ``not_before``, the **shared backoff**: a 429 or 5xx on any request pushes it forward,
    and every request of the session waits for it, not only the one that failed (a rate limit
    is a property of the account, not of one caller);
  - the **pace**: with ``min_interval`` > 0, requests leave at least that many seconds apart,
    whichever task sends them. A FIFO lock hands out the send slots one at a time, so
    concurrent callers queue fairly instead of racing for the same slot.

* :class:`RetryState`, one per call or walk: its own ``requests``/``retries`` counters (a
  walk's stats) in front of the session's gate. Without a gate (CDN downloads) it keeps a
  backoff of its own, so a slow CDN never pauses the API and is never paced.

Every sleep goes through :meth:`RequestGate._sleep` (one place to make interruptible, e.g. by
``KlingSession.close()``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from ._http import backoff_delay

__all__ = ["ANNOUNCE_AFTER", "DEFAULT_MAX_RETRY_AFTER", "RequestGate", "RetryState"]

log = logging.getLogger("kling_async")

#: Waits longer than this (seconds) are announced: logged at INFO and shown by the CLI.
ANNOUNCE_AFTER = 2.0
#: The longest server-requested wait (Retry-After) honoured as such, by default.
DEFAULT_MAX_RETRY_AFTER = 300.0

#: ``announce(message, seconds)``: a wait of ``seconds`` is about to start.
Announcer = Callable[[str, float], None]


class RequestGate:
    """The pace and the shared backoff of every API request of one session."""

    __slots__ = (
        "_last_sent",
        "_lock",
        "_queued",
        "announcers",
        "base",
        "cap",
        "max_retry_after",
        "min_interval",
        "not_before",
        "rng",
        "sleep",
    )

    def __init__(
        self,
        *,
        base: float,
        cap: float,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        min_interval: float = 0.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base = base
        self.cap = cap
        self.max_retry_after = max_retry_after
        self.min_interval = min_interval
        self.rng = rng or random.Random()
        # The session passes a sleep that its close() interrupts.
        self.sleep = sleep
        self.not_before = 0.0  # loop time before which no request is sent (shared backoff)
        self.announcers: list[Announcer] = []
        self._last_sent = float("-inf")
        self._lock: asyncio.Lock | None = None  # created in the running loop, on first use
        self._queued = 0  # acquire() calls holding or waiting for the lock

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait before retry number ``attempt`` (0-based).

        A server's ``Retry-After`` is honoured up to ``max_retry_after`` (then the request is
        retried anyway); otherwise exponential backoff with full jitter.
        """
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return backoff_delay(attempt, base=self.base, cap=self.cap, rng=self.rng)

    def push(self, delay: float) -> None:
        """Hold every request of the session back for at least ``delay`` seconds from now."""
        loop = asyncio.get_running_loop()
        self.not_before = max(self.not_before, loop.time() + delay)

    def announce(self, message: str, seconds: float) -> None:
        """Tell the listeners (the CLI's progress line) that a wait starts; log it at INFO
        when it is long enough to be noticed."""
        if seconds > ANNOUNCE_AFTER:
            log.info("%s", message)
            for announcer in self.announcers:
                announcer(message, seconds)
        else:
            log.debug("%s", message)

    def take(self) -> bool:
        """Take the send slot now if nobody is queued ahead and nothing is to be waited for
        (the usual request); else take nothing and say so (then :meth:`acquire`)."""
        if not self._queued and max(self.not_before, self._last_sent + self.min_interval) <= (
            now := asyncio.get_running_loop().time()
        ):
            self._last_sent = now
            return True
        return False

    async def acquire(self) -> None:
        """Wait until the shared backoff and the pace allow one more request, and take it."""
        if self.take():
            # Nothing is awaited between the test and the take, so no one can come first.
            return
        loop = asyncio.get_running_loop()
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._queued += 1
        try:
            async with self._lock:  # FIFO: one send slot at a time, in arrival order
                # A loop: another request's 429 may push not_before on while this one sleeps.
                while True:
                    now = loop.time()
                    paced = self._last_sent + self.min_interval
                    target = max(self.not_before, paced)
                    if target <= now:
                        break
                    if paced > self.not_before:  # the pace, not a backoff (announced already)
                        self.announce(
                            f"pacing requests: waiting {target - now:.0f} s "
                            f"(one request every {self.min_interval:g} s)",
                            target - now,
                        )
                    await self._sleep(target - now)
                self._last_sent = loop.time()
        finally:
            self._queued -= 1

    async def _sleep(self, seconds: float) -> None:
        await self.sleep(seconds)


class RetryState:
    """Counters of one call or walk in front of a :class:`RequestGate`.

    With ``gate=None`` (CDN downloads) it holds a backoff of its own instead: nothing paces it
    and its backoff pauses no API request.

    Attributes:
        requests: Requests this call or walk sent, retries included.
        retries: Retries it made after transient failures.
    """

    __slots__ = ("gate", "requests", "retries")

    def __init__(
        self,
        gate: RequestGate | None = None,
        *,
        base: float = 1.0,
        cap: float = 30.0,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if gate is None:
            gate = RequestGate(
                base=base, cap=cap, max_retry_after=max_retry_after, rng=rng, sleep=sleep
            )
        self.gate = gate
        self.requests = 0
        self.retries = 0

    @property
    def not_before(self) -> float:
        """Loop time before which the next request waits (the gate's shared backoff)."""
        return self.gate.not_before

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait before retry number ``attempt`` (0-based)."""
        return self.gate.delay(attempt, retry_after)

    def push(self, delay: float) -> None:
        """Count a retry and hold the gate's requests back for ``delay`` seconds."""
        self.gate.push(delay)
        self.retries += 1

    def take(self) -> bool:
        """Take the gate's send slot and count the request, if that needs no wait (see
        :meth:`RequestGate.take`); else take nothing (then :meth:`wait`)."""
        if self.gate.take():
            self.requests += 1
            return True
        return False

    async def wait(self) -> None:
        """Sleep until the gate lets the next request go, and count it."""
        await self.gate.acquire()
        self.requests += 1
