"""The page walk's driver: the aiohttp side of :mod:`kling_async._planner`.

Everything that walks pages (``iter_pages``, ``iter_works``, ``watch_works``, the export)
goes through :class:`Walk`. The planner decides which pages to ask, which answers to trust
and what to yield; this module only sends its requests (each a task: usually up to
``prefetch + 1`` pages and a head probe in flight, two pages when a repeated page is
checked), decodes each answer, feeds it back in the order it arrives, and hands the
planner's batches to the consumer. The server's ``currentTimestamp`` is never read.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Hashable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from . import _http
from ._planner import (
    Answer,
    AutoPrefetch,
    Batch,
    Planner,
    PlanRequest,
    WalkCheckpoint,
    WalkStats,
)
from .errors import DecodeError, TransportError
from .models import ASSETS_PAGE_DECODER, AssetsPage, Work

if TYPE_CHECKING:
    from ._retry import RetryState
    from ._session import KlingSession

__all__ = ["Walk", "WalkCheckpoint", "WalkStats", "WorkPage", "to_epoch_ms"]


class _RawHistoryItem(msgspec.Struct, gc=False):
    works: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _RawPage(msgspec.Struct, gc=False):
    history: list[_RawHistoryItem] = msgspec.field(default_factory=list)


_RAW_PAGE_DECODER = msgspec.json.Decoder(_RawPage)


class WorkPage(msgspec.Struct, kw_only=True, gc=False):
    """One page of a walk, as handed to the consumer.

    Attributes:
        page_num: The ``pageNum`` it was fetched with.
        page: The whole decoded page, as the API sent it (duplicates included).
        works: The works of this page the walk yields: new ones (not handed out earlier in
            the walk), inside ``since`` and ``max_items``, in page order.
        raw_works: With ``raw=True``, each of ``works`` exactly as the API sent it (every
            field, camelCase keys, unknown fields included); else empty.
    """

    page_num: int
    page: AssetsPage
    works: list[Work]
    raw_works: list[msgspec.Raw]


class _Fetched(msgspec.Struct, gc=False):
    """A decoded page and, with ``raw``, each of its works as sent."""

    page: AssetsPage
    works: list[Work]
    raw_works: list[msgspec.Raw] | None


def to_epoch_ms(value: datetime | int | None, name: str = "since") -> int | None:
    """An aware datetime or epoch milliseconds, as epoch milliseconds.

    Raises:
        ValueError: A naive datetime, a negative number, or one that looks like epoch
            seconds (see :func:`kling_async._http.check_epoch_ms`).
        TypeError: Anything else.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime (give it a tzinfo)")
        return math.floor(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an aware datetime or epoch milliseconds (int)")
    return _http.check_epoch_ms(value, name)


def _page_answer(fetched: _Fetched, url: str, *, times: bool) -> Answer[_Fetched]:
    """What the planner reads of a page: entries, work ids, the head, create times."""
    ids: list[int] = []
    for i, item in enumerate(fetched.page.history):
        for j, work in enumerate(item.works):
            wid = work.work_id
            if wid is None:
                raise DecodeError(url, f"history[{i}].works[{j}].workId is missing")
            ids.append(wid)
    history = fetched.page.history
    head: Hashable = None
    if history:
        first = history[0]
        head = (first.task.id if first.task else None, tuple(w.work_id for w in first.works))
    return Answer(
        n_entries=len(history),
        ids=ids,
        head=head,
        payload=fetched,
        times=[w.create_time for w in fetched.works] if times else None,
    )


class Walk:
    """A walk through the assets pages; create it with :meth:`KlingSession.walk`.

    Iterate it once (``async for batch in walk``) for :class:`WorkPage` batches. ``stats``
    and :meth:`checkpoint` may be read at any time, typically after each batch.
    """

    def __init__(
        self,
        kling: KlingSession,
        *,
        page_size: int,
        content_type: str | None,
        email: str | None,
        start_page: int,
        max_items: int | None,
        max_pages: int | None,
        since: datetime | int | None,
        prefetch: int | Literal["auto"],
        max_stale_pages: int,
        raw: bool,
        resume: WalkCheckpoint | None,
        max_prefetch: int = 8,
    ) -> None:
        if resume is not None:
            if not isinstance(resume, WalkCheckpoint):
                raise TypeError("resume must be a WalkCheckpoint (WalkCheckpoint.from_json)")
            resume.validate()
            page_size = resume.page_size
            content_type = resume.content_type
            email = resume.email
            start_page = resume.next_page
        # Validates page number and size, content type and email before any request.
        _http.assets_params(
            page_num=start_page, page_size=page_size, content_type=content_type, email=email
        )
        for name, value in (("max_items", max_items), ("max_pages", max_pages)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int or None")
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if isinstance(max_prefetch, bool) or not isinstance(max_prefetch, int):
            raise TypeError(f"max_prefetch must be an int, got {max_prefetch!r}")
        if max_prefetch < 0:
            raise ValueError(f"max_prefetch must be >= 0, got {max_prefetch}")
        self._auto: AutoPrefetch | None = None
        if prefetch == "auto":
            self._auto = AutoPrefetch(max_prefetch)
            prefetch = 0
        elif isinstance(prefetch, bool) or not isinstance(prefetch, int):
            raise TypeError(f'prefetch must be an int or "auto", got {prefetch!r}')
        elif prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if isinstance(max_stale_pages, bool) or not isinstance(max_stale_pages, int):
            raise TypeError("max_stale_pages must be an int")
        if max_stale_pages < 1:
            raise ValueError(f"max_stale_pages must be >= 1, got {max_stale_pages}")
        self._kling = kling
        self.page_size = page_size
        self.content_type = content_type
        self.email = email
        self.max_items = max_items
        self.max_pages = max_pages
        self.since = resume.since if resume is not None else to_epoch_ms(since)
        self.raw = raw
        self._planner: Planner[_Fetched] = Planner(
            page_size=page_size,
            start_page=start_page,
            prefetch=prefetch,
            max_items=max_items,
            max_pages=max_pages,
            since=self.since,
            max_stale_pages=max_stale_pages,
            resume=resume,
        )
        self._started = False
        self._retry: RetryState = kling.new_retry_state()
        self.stats = self._planner.stats

    def checkpoint(self) -> WalkCheckpoint:
        """Where the walk stands after the last batch handed out (verified state only)."""
        return self._planner.checkpoint(content_type=self.content_type, email=self.email)

    @property
    def finished(self) -> bool:
        """Whether the walk reached its end (an empty page, ``since``, or ``max_items``)."""
        return self._planner.finished

    def stop(self) -> None:
        """End the walk after the batch being handled (a stop condition of the caller's):
        nothing more is asked, and the walk counts as finished."""
        self._planner.finish()

    def __aiter__(self) -> AsyncGenerator[WorkPage, None]:
        if self._started:
            raise RuntimeError("a Walk can be iterated only once; start a new one")
        self._started = True
        return self._run()

    @property
    def prefetch(self) -> int:
        """The prefetch depth in use (with ``prefetch="auto"``, the one picked so far)."""
        return self._planner.prefetch

    async def _fetch(self, req: PlanRequest) -> Answer[_Fetched]:
        kling = self._kling
        params = kling._params(req.page_num, req.page_size, self.content_type, self.email)
        started, retries = time.monotonic(), self._retry.retries
        body, url = await kling._get_bytes(kling._assets_url, params, self._retry)
        auto = self._auto
        if auto is not None and not req.probe:
            depth = auto.observe(time.monotonic() - started, self._retry.retries > retries)
            if depth != self._planner.prefetch:
                self._planner.set_prefetch(depth)
        page = _http.decode(ASSETS_PAGE_DECODER, body, url=url)
        works = page.works()
        raws: list[msgspec.Raw] | None = None
        if self.raw and not req.probe:
            raw_page = _http.decode(_RAW_PAGE_DECODER, body, url=url)
            raws = [w for item in raw_page.history for w in item.works]
        fetched = _Fetched(page, works, raws)
        return _page_answer(fetched, url, times=self.since is not None)

    def _batch(self, batch: Batch[_Fetched]) -> WorkPage:
        fetched = batch.payload
        works, raws = fetched.works, fetched.raw_works
        return WorkPage(
            page_num=batch.page_num,
            page=fetched.page,
            works=[works[i] for i in batch.keep],
            raw_works=[raws[i] for i in batch.keep] if raws is not None else [],
        )

    async def _run(self) -> AsyncGenerator[WorkPage, None]:
        planner = self._planner
        tasks: dict[int, asyncio.Task[Answer[_Fetched]]] = {}
        cancelled: set[asyncio.Task[Answer[_Fetched]]] = set()
        errors: dict[int, BaseException] = {}
        stats = self.stats

        def flush() -> bool:
            sent = False
            for req in planner.take_requests():
                tasks[req.id] = asyncio.create_task(self._fetch(req))
                sent = True
            for rid in planner.take_cancels():
                task = tasks.pop(rid, None)
                if task is not None:
                    task.cancel()
                    cancelled.add(task)  # awaited at the end: no request outlives the walk
            cancelled.difference_update([t for t in cancelled if t.done()])
            return sent

        try:
            while True:
                if flush():
                    await asyncio.sleep(0)  # let the new requests go out before handing out
                batch = planner.next_batch()
                if self.prefetch and flush():
                    await asyncio.sleep(0)  # pages ahead go out before the consumer gets this
                stats.requests, stats.retries = self._retry.requests, self._retry.retries
                if batch is not None:
                    yield self._batch(batch)
                    continue
                flush()
                failed = planner.failed_request
                if failed is not None:
                    raise errors[failed]
                if planner.done:
                    return
                if not tasks:
                    if errors:  # a failure the planner had no use for: say what it was
                        raise next(iter(errors.values()))
                    raise RuntimeError("kling_async walk planner waits for no request (a bug)")
                await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
                for rid, task in list(tasks.items()):
                    if not task.done():
                        continue
                    del tasks[rid]
                    if task.cancelled():  # not by this walk (it pops what it cancels)
                        errors[rid] = TransportError(
                            "a page request was cancelled from outside the walk"
                        )
                        planner.receive_failure(rid)
                        continue
                    exc = task.exception()
                    if exc is None:
                        planner.receive(rid, task.result())
                    else:
                        errors[rid] = exc
                        planner.receive_failure(rid)
        finally:
            pending = [*tasks.values(), *cancelled]
            for task in pending:
                task.cancel()
            if pending:
                # return_exceptions: a discarded page's error is retrieved, never reported.
                await asyncio.gather(*pending, return_exceptions=True)
            stats.requests, stats.retries = self._retry.requests, self._retry.retries
