"""watch_works: poll for new works, each yielded exactly once, across restarts.

A poll walks from page 1 (newest first) down to the works already known, keeps the new ones in
a bounded buffer, then yields them **oldest first**, so a bot posts works in the order they
were made. At most ``max_buffer`` works are held: in a bigger burst the oldest ones are
yielded and the newest wait for the next poll (nothing is lost, the order still holds).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic

import msgspec

from ._walk import M, Walk, to_epoch_ms
from .errors import DecodeError, RateLimitError, ServerError, TransportError, WalkStalledError

if TYPE_CHECKING:
    from ._session import KlingSession

__all__ = ["DEFAULT_MAX_BUFFER", "WatchState", "Watcher"]

log = logging.getLogger("kling_async")

#: Errors a watch rides out (with backoff) instead of ending. A stalled poll (a burst of a
#: page or more of new works per request) is worth another try later, too.
TRANSIENT = (RateLimitError, ServerError, TransportError, DecodeError, WalkStalledError)

#: Most new works one poll holds (and yields, oldest first); newer ones wait for the next poll.
DEFAULT_MAX_BUFFER = 1000


class WatchState(msgspec.Struct, kw_only=True):
    """What a watcher has delivered, small enough to save after every work.

    Save it (``state.to_json()``) after handling each work and hand it back
    (``WatchState.from_json(data)``) to ``watch_works(state=...)`` after a restart: the new
    watcher neither repeats nor misses a work.

    Attributes:
        watermark: ``create_time`` (epoch ms) up to which, inclusive, every work has been
            handled (yielded, held as pending, or there before the watch began).
        delivered: Ids of newer works already handled: by a poll still under way (what a
            restart in the middle of a poll must not repeat), or by a poll whose buffer left
            newer works for the next one.
        pending: Works seen while still rendering, held back until they succeed:
            ``work_id -> create_time``.
    """

    watermark: int | None = None
    delivered: list[int] = msgspec.field(default_factory=list)
    pending: dict[int, int] = msgspec.field(default_factory=dict)

    def to_json(self) -> bytes:
        """This state as JSON bytes."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> WatchState:
        """A state saved with :meth:`to_json`.

        Raises:
            msgspec.ValidationError: The data is not a saved state.
        """
        return msgspec.json.decode(data, type=cls)


class _Item(msgspec.Struct, gc=False):
    """A work a poll will yield."""

    created: int
    seq: int  # position in the walk: later means older in list order
    work_id: int
    work: Any  # the watcher's model
    raw: msgspec.Raw | None
    from_pending: bool


class Watcher(Generic[M]):
    """An async iterator of new works; create it with :meth:`KlingSession.watch_works`.

    Each poll's works come oldest first, decoded as its ``model`` (:class:`Work` by default).
    ``state`` is always up to date with what has been yielded; with ``raw=True``,
    ``last_raw`` is the last work exactly as the API sent it.
    """

    def __init__(
        self,
        kling: KlingSession,
        *,
        interval: float,
        since: datetime | int | None,
        only_succeeded: bool,
        state: WatchState | None,
        page_size: int,
        content_type: str | None,
        email: str | None,
        max_backoff: float,
        max_pending: int,
        max_pending_age: float = 6 * 3600.0,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_polls: int | None = None,
        raw: bool = False,
        model: type[M],
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        if max_polls is not None and max_polls < 1:
            raise ValueError(f"max_polls must be >= 1 or None, got {max_polls}")
        # Validate the walk's arguments now rather than at the first poll.
        kling.walk(page_size=page_size, content_type=content_type, email=email, model=model)
        self._kling = kling
        self.model = model
        self.interval = interval
        self.only_succeeded = only_succeeded
        self.page_size = page_size
        self.content_type = content_type
        self.email = email
        self.max_backoff = max(max_backoff, interval)
        self.max_pending = max_pending
        self.max_pending_age = max_pending_age
        self.max_buffer = max_buffer
        self.max_polls = max_polls
        self.raw = raw
        if state is None:
            state = WatchState(watermark=to_epoch_ms(since))
        elif since is not None:
            raise ValueError("pass either since or state, not both")
        self.state = state
        self.polls = 0
        self.last_raw: msgspec.Raw | None = None
        """With ``raw=True``: the work last yielded, exactly as the API sent it."""
        self._last: _Item | None = None
        self._given_back = False
        self._gen = self._run()

    def __aiter__(self) -> Watcher[M]:
        return self

    async def __anext__(self) -> M:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop the watch."""
        await self._gen.aclose()

    def poll(self) -> AsyncGenerator[M, None]:
        """One poll, now: the new works, oldest first. Errors are raised, not ridden out.

        The first poll of a watcher with neither ``since`` nor ``state`` yields nothing: it
        only notes where "now" is. ``async for work in watcher`` runs polls in a loop with
        backoff; this is for callers that schedule polls themselves (cron, ``--once``).
        """
        return self._poll()

    def give_back(self, work: M) -> None:
        """Say the work just yielded was not handled (its handler failed).

        It is taken out of ``state`` and the current poll ends there: the next poll yields
        it again first, then the works after it. Nothing after it is skipped or marked done.

        Raises:
            ValueError: ``work`` is not the work yielded last.
        """
        last = self._last
        # That very object, or (as before model=) any work with its id.
        if last is None or (
            last.work is not work and getattr(work, "work_id", None) != last.work_id
        ):
            raise ValueError("give_back() takes the work yielded last")
        work_id, state = last.work_id, self.state
        if last.from_pending:
            state.pending[work_id] = last.created  # held back again, as before the poll
        elif work_id in state.delivered:
            state.delivered.remove(work_id)
        self._last = None
        self._given_back = True

    def backoff(self, failures: int) -> float:
        """The wait after ``failures`` failed polls in a row (from ``interval`` upwards)."""
        return float(min(self.max_backoff, self.interval * 2**failures))

    async def _first_watermark(self) -> None:
        """With neither since nor state: start from the newest work, by the server's clock."""
        page = await self._kling.get_assets(
            page_size=self.page_size, content_type=self.content_type, email=self.email
        )
        times = [w.create_time for w in page.works() if w.create_time is not None]
        newest = max(times, default=0)
        self.state.watermark = newest

    async def _poll(self) -> AsyncGenerator[M, None]:
        """Walk from page 1 down to the watermark (or the oldest pending work), then yield
        the new works oldest first."""
        state = self.state
        self._given_back = False  # a consumer may have left the last poll at a give_back
        if state.watermark is None:
            await self._first_watermark()
            self.polls += 1
            return
        watermark = state.watermark
        # A work that never succeeds (failed, deleted) must not keep every poll walking deep.
        too_old = watermark - int(self.max_pending_age * 1000)
        for stale_id in [w for w, created in state.pending.items() if created < too_old]:
            del state.pending[stale_id]
            log.debug("watch: gave up on pending work %d (older than max_pending_age)", stale_id)
        floor = min([watermark, *state.pending.values()])
        handled = set(state.delivered)  # handled by an earlier, interrupted poll
        seen: dict[int, int] = {}  # new works of this poll (handled before or not): id -> time
        # A max-heap on (create_time, list order): the newest is dropped when it is full.
        heap: list[tuple[int, int, _Item]] = []
        dropped_min: int | None = None  # oldest create_time left for the next poll
        seq = 0
        walk = Walk(
            self._kling,
            page_size=self.page_size,
            content_type=self.content_type,
            email=self.email,
            start_page=1,
            max_items=None,
            max_pages=None,
            since=max(0, floor - 1),  # pending works may sit exactly on the floor
            prefetch=0,
            max_stale_pages=3,
            raw=self.raw,
            resume=None,
            model=self.model,
            _reads=("create_time", "status"),
        )
        async with aclosing(walk.__aiter__()) as batches:
            async for batch in batches:
                raws = batch.raw_works if self.raw else None
                heads = batch._heads  # id, time and status, whatever the model holds
                for i, work in enumerate(batch.works):
                    head = heads[i]
                    wid, created = head.work_id, head.create_time
                    if wid is None or created is None:
                        continue
                    succeeded = head.status == 99
                    from_pending = wid in state.pending
                    if from_pending:
                        if not (succeeded or not self.only_succeeded):
                            continue
                    elif created <= watermark:
                        continue
                    else:
                        seen[wid] = created
                        if wid in handled:
                            continue
                        if self.only_succeeded and not succeeded:
                            self._hold(wid, created)
                            continue
                    seq += 1
                    raw = raws[i] if raws is not None else None
                    item = _Item(created, seq, wid, work, raw, from_pending)
                    heapq.heappush(heap, (-created, seq, item))
                    if len(heap) > self.max_buffer:
                        _, _, newest = heapq.heappop(heap)
                        if not newest.from_pending:
                            dropped_min = min(newest.created, dropped_min or newest.created)
        # Oldest first; among equal times, the reverse of list order.
        items = sorted((entry[2] for entry in heap), key=lambda it: (it.created, -it.seq))
        del heap
        for item in items:
            wid = item.work_id
            # Recorded before the work is handed out: save the state after handling it.
            if item.from_pending:
                state.pending.pop(wid, None)
            else:
                state.delivered.append(wid)
                handled.add(wid)
            self._last = item
            self.last_raw = item.raw
            yield item.work
            if self._given_back:
                # The watermark stays: the next poll starts again from the given-back work.
                self._given_back = False
                self.polls += 1
                return
        self._last = None
        # Everything up to the new watermark is handled; works newer than it that were
        # handled already stay listed in delivered (only when the buffer left some behind).
        new_mark = max(seen.values(), default=watermark)
        if dropped_min is not None:
            new_mark = dropped_min - 1
        state.watermark = max(watermark, new_mark)
        state.delivered = [w for w in handled if seen.get(w, 0) > state.watermark]
        self.polls += 1

    def _hold(self, work_id: int, created: int) -> None:
        pending = self.state.pending
        pending[work_id] = created
        while len(pending) > self.max_pending:
            oldest = min(pending, key=pending.__getitem__)
            del pending[oldest]
            log.debug(
                "watch: dropped pending work %d (more than %d pending)", oldest, self.max_pending
            )

    async def _run(self) -> AsyncGenerator[M, None]:
        failures = 0
        while True:
            try:
                async with aclosing(self._poll()) as works:
                    async for work in works:
                        yield work
                failures = 0
                if self.max_polls is not None and self.polls >= self.max_polls:
                    return
                delay = self.interval
            except TRANSIENT as exc:
                delay = self.backoff(failures)
                failures += 1
                log.warning("watch: %s; polling again in %.1f s", exc, delay)
            await self._kling._sleep(delay)  # close() ends it
