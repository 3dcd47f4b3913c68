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
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, Hashable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from . import _http
from ._lenient import DriftReport, FieldPath, decode_lenient, format_path, parse_path
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
from .models import ASSETS_PAGE_DECODER, AssetsPage, DownloadInfo, Work

if TYPE_CHECKING:
    from ._retry import RetryState
    from ._session import KlingSession

__all__ = ["Walk", "WalkCheckpoint", "WalkStats", "WorkPage", "to_epoch_ms"]

log = logging.getLogger("kling_async")


class _RawItem(msgspec.Struct, gc=False):
    """A history entry as the walk reads it: each work kept as sent; the task untouched."""

    works: list[msgspec.Raw] = msgspec.field(default_factory=list)
    task: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty: absent


class _RawPage(msgspec.Struct, gc=False):
    history: list[_RawItem] = msgspec.field(default_factory=list)


class _WorksItem(msgspec.Struct, gc=False):
    """A history entry with its works decoded in the same pass (walks without ``raw``)."""

    works: list[Work] = msgspec.field(default_factory=list)
    task: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _WorksPage(msgspec.Struct, gc=False):
    history: list[_WorksItem] = msgspec.field(default_factory=list)


class _TaskId(msgspec.Struct, gc=False):
    id: msgspec.Raw | None = None


class _WorkHead(msgspec.Struct, rename="camel", gc=False):
    """What the export needs of a work besides its bytes: the walk's id and time, and the
    downloader's fields."""

    work_id: int | None = None
    create_time: int | None = None
    status: int | None = None
    download_info: DownloadInfo | None = None


_RAW_PAGE_DECODER: Final = msgspec.json.Decoder(_RawPage)
_WORKS_PAGE_DECODER: Final = msgspec.json.Decoder(_WorksPage)
_TASK_ID_DECODER: Final = msgspec.json.Decoder(_TaskId)
_WORK_DECODER: Final = msgspec.json.Decoder(Work)
_WORK_HEAD_DECODER: Final = msgspec.json.Decoder(_WorkHead)
#: The one field the walk cannot do without: it finds its place by work ids.
_REQUIRED: Final = (("workId",),)


class Drift:
    """Reports schema drift of one walk: a WARNING per field path, a count in its stats."""

    def __init__(self, stats: WalkStats | None = None) -> None:
        self.stats = stats
        self._warned: set[str] = set()

    def report(
        self, prefix: str, path: FieldPath, reason: str, kept: bool, *, count: bool = True
    ) -> None:
        if count and self.stats is not None:
            self.stats.drift_fields += 1
        # One line per field, whichever work or page it was found in.
        key = _INDEX.sub("[]", format_path(path, prefix))
        if key in self._warned:
            return
        self._warned.add(key)
        outcome = "converted" if kept else "read as None"
        log.warning("schema drift at %s: %s; %s (reported once per walk)", key, reason, outcome)

    def for_work(self, i: int, j: int) -> DriftReport:
        prefix = f"history[{i}].works[{j}]"
        return lambda path, reason, kept: self.report(prefix, path, reason, kept)


_INDEX: Final = re.compile(r"\[\d+\]")


def decode_page(body: bytes, url: str, drift: Drift | None = None) -> AssetsPage:
    """A whole page, every field of an unexpected type converted or None (see _lenient).

    Raises:
        DecodeError: Not JSON, not an object, or ``history`` not a list (read as empty, it
            would pass for the end of the list).
    """
    report: DriftReport | None = None
    if drift is not None:
        # Warned, not counted: the walk counted these fields in its works already.
        report = lambda path, reason, kept: drift.report(  # noqa: E731
            "", path, reason, kept, count=False
        )
    try:
        return decode_lenient(
            body, ASSETS_PAGE_DECODER, AssetsPage, on_drift=report, required=(("history",),)
        )
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(url, str(exc)) from exc
    except RecursionError as exc:  # the untyped re-decode of a deeply nested body
        raise DecodeError(url, "JSON nested too deeply") from exc


class WorkPage:
    """One page of a walk, as handed to the consumer.

    Attributes:
        page_num: The ``pageNum`` it was fetched with.
        works: The works of this page the walk yields: new ones (not handed out earlier in
            the walk), inside ``since`` and ``max_items``, in page order. A field that arrived
            with an unexpected type is converted where lossless, else None.
        raw_works: With ``raw=True``, each of ``works`` exactly as the API sent it (every
            field, camelCase keys, unknown fields included); else empty.
    """

    __slots__ = ("_body", "_drift", "_page", "_url", "page_num", "raw_works", "works")

    def __init__(
        self,
        *,
        page_num: int,
        works: list[Work],
        raw_works: list[msgspec.Raw],
        body: bytes,
        url: str = "",
        drift: Drift | None = None,
    ) -> None:
        self.page_num = page_num
        self.works = works
        self.raw_works = raw_works
        self._body = body
        self._url = url
        self._drift = drift
        self._page: AssetsPage | None = None

    @property
    def page(self) -> AssetsPage:
        """The whole page, as the API sent it (duplicates included); decoded on first use."""
        if self._page is None:
            self._page = decode_page(self._body, self._url, self._drift)
        return self._page

    def __repr__(self) -> str:
        return f"WorkPage(page_num={self.page_num}, works={len(self.works)})"


class _Fetched:
    """One answer: its body, each work as sent, and what was decoded of each work."""

    __slots__ = ("body", "raws", "url", "works")

    def __init__(self, body: bytes, url: str, raws: list[msgspec.Raw], works: list[Work]) -> None:
        self.body = body
        self.url = url
        self.raws = raws
        self.works = works


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


def _decode_works(
    raw_page: _RawPage, url: str, drift: Drift, *, full: bool
) -> tuple[list[msgspec.Raw], list[Work]]:
    """Each work as sent, and decoded: in full, or (``full=False``, the export) only the
    fields the walk and the downloader read."""
    raws = [raw for item in raw_page.history for raw in item.works]
    try:
        # The fast path, a page as documented: one strict decode per work, nothing else.
        if full:
            works = [_WORK_DECODER.decode(raw) for raw in raws]
        else:
            works = [_lite(_WORK_HEAD_DECODER.decode(raw)) for raw in raws]
    except (msgspec.ValidationError, RecursionError):
        works = _decode_drifted(raw_page, url, drift, full=full)
    _check_ids(raw_page.history, works, url)
    return raws, works


def _check_ids(history: Sequence[_RawItem | _WorksItem], works: list[Work], url: str) -> None:
    """Every work has a workId: the walk finds its place by them."""
    if any(work.work_id is None for work in works):
        _, i, j = next(where for where in _places(history) if works[where[0]].work_id is None)
        raise DecodeError(url, f"history[{i}].works[{j}].workId is missing")


def _lite(head: _WorkHead) -> Work:
    return Work(
        work_id=head.work_id,
        create_time=head.create_time,
        status=head.status,
        download_info=head.download_info,
    )


def _places(history: Sequence[_RawItem | _WorksItem]) -> Iterator[tuple[int, int, int]]:
    """(index among the page's works, history index, index in its entry) of each work."""
    k = 0
    for i, item in enumerate(history):
        for j in range(len(item.works)):
            yield k, i, j
            k += 1


def _decode_drifted(raw_page: _RawPage, url: str, drift: Drift, *, full: bool) -> list[Work]:
    """The slow path: each work through :func:`decode_lenient`, drift reported by path."""
    works: list[Work] = []
    for _, i, j in _places(raw_page.history):
        raw = raw_page.history[i].works[j]
        try:
            if full:
                work = decode_lenient(
                    raw, _WORK_DECODER, Work, on_drift=drift.for_work(i, j), required=_REQUIRED
                )
            else:
                work = _lite(
                    decode_lenient(
                        raw,
                        _WORK_HEAD_DECODER,
                        _WorkHead,
                        on_drift=drift.for_work(i, j),
                        required=_REQUIRED,
                    )
                )
        except msgspec.ValidationError as exc:
            parsed = parse_path(str(exc))
            where = format_path(parsed[1], f"history[{i}].works[{j}]") if parsed else ""
            reason = parsed[0] if parsed else str(exc)
            raise DecodeError(url, f"{where or f'history[{i}].works[{j}]'}: {reason}") from exc
        except RecursionError as exc:
            raise DecodeError(url, f"history[{i}].works[{j}]: JSON nested too deeply") from exc
        works.append(work)
    return works


def _page_answer(
    history: Sequence[_RawItem | _WorksItem], fetched: _Fetched, *, times: bool
) -> Answer[_Fetched]:
    """What the planner reads of a page: entries, work ids, the head, create times."""
    works = fetched.works
    ids = [w.work_id for w in works if w.work_id is not None]  # all (_check_ids)
    head: Hashable = None
    if history:
        first = history[0]
        task_id: bytes | None = None
        if first.task and bytes(first.task) != b"null":
            try:
                tid = _TASK_ID_DECODER.decode(first.task).id
                task_id = bytes(tid) if tid is not None else None
            except msgspec.ValidationError:  # not an object: the task as a whole is the key
                task_id = bytes(first.task)
        head = (task_id, tuple(ids[: len(first.works)]))
    return Answer(
        n_entries=len(history),
        ids=ids,
        head=head,
        payload=fetched,
        times=[w.create_time for w in works] if times else None,
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
        _full: bool = True,
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
        self._drift = Drift(self.stats)
        # False (the export): works are decoded only as far as the walk and downloads need.
        self._full = _full

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
        times = self.since is not None
        if self._full and not self.raw:
            # A page as documented, in one pass; any drift takes the path below.
            try:
                page = _WORKS_PAGE_DECODER.decode(body)
            except _http._BAD_JSON:
                pass
            else:
                works = [work for item in page.history for work in item.works]
                _check_ids(page.history, works, url)
                return _page_answer(page.history, _Fetched(body, url, [], works), times=times)
        # One decode of the page: each work stays the bytes it was sent as; only what the walk
        # (and the consumer) reads of a work is decoded from them.
        raw_page = _http.decode(_RAW_PAGE_DECODER, body, url=url)
        raws, works = _decode_works(raw_page, url, self._drift, full=self._full)
        return _page_answer(raw_page.history, _Fetched(body, url, raws, works), times=times)

    def _batch(self, batch: Batch[_Fetched]) -> WorkPage:
        fetched = batch.payload
        works, raws = fetched.works, fetched.raws
        return WorkPage(
            page_num=batch.page_num,
            works=[works[i] for i in batch.keep],
            raw_works=[raws[i] for i in batch.keep] if self.raw else [],
            body=fetched.body,
            url=fetched.url,
            drift=self._drift,
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
                # No await from here to the yield: checkpoint() already counts this batch, and
                # a commit (or a cancellation) in between would see it before its consumer.
                if self.prefetch:
                    flush()  # pages ahead go out (when the consumer next awaits)
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
