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
import functools
import itertools
import logging
import math
import operator
import re
import time
from collections.abc import AsyncGenerator, Hashable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import msgspec
from yarl import URL

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

__all__ = ["M", "Walk", "WalkCheckpoint", "WalkStats", "WorkPage", "check_model", "to_epoch_ms"]

log = logging.getLogger("kling_async")

M = TypeVar("M", bound=msgspec.Struct)
"""The Struct a walk decodes each work into: :class:`Work`, or the caller's ``model``."""
T = TypeVar("T")


class _RawItem(msgspec.Struct, gc=False):
    """A history entry as the walk reads it: each work kept as sent; the task untouched."""

    works: list[msgspec.Raw] = msgspec.field(default_factory=list)
    task: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty: absent


class _RawPage(msgspec.Struct, gc=False):
    history: list[_RawItem] = msgspec.field(default_factory=list)


class _WorksItem(msgspec.Struct, Generic[M], gc=False):
    """A history entry with its works decoded in the same pass (walks without ``raw``)."""

    works: list[M] = msgspec.field(default_factory=list)
    task: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _WorksPage(msgspec.Struct, Generic[M], gc=False):
    history: list[_WorksItem[M]] = msgspec.field(default_factory=list)


class _PlainItem(msgspec.Struct, Generic[M], gc=False):
    """A history entry as :class:`_WorksItem`, without its task (pages other than 1: the task
    only serves the head of the list)."""

    works: list[M] = msgspec.field(default_factory=list)


class _PlainPage(msgspec.Struct, Generic[M], gc=False):
    history: list[_PlainItem[M]] = msgspec.field(default_factory=list)


class _HeadsItem(msgspec.Struct, gc=False):
    works: list[_WorkHead] = msgspec.field(default_factory=list)


class _HeadsPage(msgspec.Struct, gc=False):
    """What a walk reads of a page when the caller's model lacks a field it needs."""

    history: list[_HeadsItem] = msgspec.field(default_factory=list)


class _TaskId(msgspec.Struct, gc=False):
    id: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # empty: absent


class _WorkHead(msgspec.Struct, rename="camel", gc=False):
    """What the export needs of a work besides its bytes: the walk's id and time, and the
    downloader's fields."""

    work_id: int | None = None
    create_time: int | None = None
    status: int | None = None
    download_info: DownloadInfo | None = None


_RAW_PAGE_DECODER: Final = msgspec.json.Decoder(_RawPage)
_TASK_ID_DECODER: Final = msgspec.json.Decoder(_TaskId)
_WORK_HEAD_DECODER: Final = msgspec.json.Decoder(_WorkHead)
_HEADS_PAGE_DECODER: Final = msgspec.json.Decoder(_HeadsPage)
#: The one field the walk cannot do without: it finds its place by work ids.
_REQUIRED: Final = (("workId",),)
_WORK_ID: Final = operator.attrgetter("work_id")
_WORKS: Final = operator.attrgetter("works")
_chain: Final = itertools.chain.from_iterable
_CREATE_TIME: Final = operator.attrgetter("create_time")


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

    def for_work(self, i: int, j: int, *, count: bool = True) -> DriftReport:
        prefix = f"history[{i}].works[{j}]"
        return lambda path, reason, kept: self.report(prefix, path, reason, kept, count=count)


_INDEX: Final = re.compile(r"\[\d+\]")


def decode_page(body: bytes, url: str | URL, drift: Drift | None = None) -> AssetsPage:
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
        raise DecodeError(str(url), str(exc)) from exc
    except RecursionError as exc:  # the untyped re-decode of a deeply nested body
        raise DecodeError(str(url), "JSON nested too deeply") from exc


class WorkPage(Generic[M]):
    """One page of a walk, as handed to the consumer.

    Attributes:
        page_num: The ``pageNum`` it was fetched with.
        works: The works of this page the walk yields: new ones (not handed out earlier in
            the walk), inside ``since`` and ``max_items``, in page order, decoded as the
            walk's ``model`` (:class:`Work` by default). A field that arrived with an
            unexpected type is converted where lossless, else None.
        raw_works: With ``raw=True``, each of ``works`` exactly as the API sent it (every
            field, camelCase keys, unknown fields included); else empty.
    """

    __slots__ = ("_body", "_drift", "_heads", "_page", "_url", "page_num", "raw_works", "works")

    def __init__(
        self,
        *,
        page_num: int,
        works: list[M],
        raw_works: list[msgspec.Raw],
        body: bytes,
        url: str | URL = "",
        drift: Drift | None = None,
        heads: Sequence[Any] | None = None,
    ) -> None:
        self.page_num = page_num
        self.works = works
        self.raw_works = raw_works
        self._body = body
        self._url = url
        self._drift = drift
        self._page: AssetsPage | None = None
        # What the walk read of each work (work_id, create_time, status): the works
        # themselves unless the model lacks one of those fields.
        self._heads: Sequence[Any] = works if heads is None else heads

    @property
    def page(self) -> AssetsPage:
        """The whole page, as the API sent it (duplicates included); decoded on first use
        (from the bytes kept, whatever the walk's ``model``)."""
        if self._page is None:
            self._page = decode_page(self._body, self._url, self._drift)
        return self._page

    def __repr__(self) -> str:
        return f"WorkPage(page_num={self.page_num}, works={len(self.works)})"


class _Fetched(Generic[M]):
    """One answer: its body, each work as sent, each work decoded, and what the walk read of
    each (``heads``: the works themselves when the model has the fields)."""

    __slots__ = ("body", "heads", "raws", "url", "works")

    def __init__(
        self,
        body: bytes,
        url: str | URL,
        raws: list[msgspec.Raw],
        works: list[M],
        heads: Sequence[Any],
    ) -> None:
        self.body = body
        self.url = url
        self.raws = raws
        self.works = works
        self.heads = heads


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


_WORK_FIELDS: Final = {
    f.encode_name: f.type
    for f in msgspec.inspect.type_info(Work).fields  # type: ignore[attr-defined]
}
#: The fields a walk reads of every work, by attribute and wire name: the id always, the
#: creation time with ``since`` (and for a watcher), the status for a watcher.
_HEAD_FIELDS: Final = (("work_id", "workId"), ("create_time", "createTime"), ("status", "status"))
_HEAD_WIRE: Final = frozenset(wire for _, wire in _HEAD_FIELDS)


def _base(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The type without its ``None`` (``int | None`` -> ``int``) and metadata."""
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        rest = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(rest) == 1:
            return _base(rest[0])
    return info


_OBJECT: Final = (msgspec.inspect.StructType, msgspec.inspect.DictType, msgspec.inspect.AnyType)


def _type_error(field: msgspec.inspect.Field, expected: msgspec.inspect.Type) -> str | None:
    """Why a model's field cannot read what Work reads at that wire name, or None."""
    mine, theirs = _base(field.type), _base(expected)
    if field.encode_name in _HEAD_WIRE:
        # The walk reads these itself: an int, or nothing it can trust.
        ok = isinstance(mine, msgspec.inspect.IntType)
        return None if ok else "must be int | None (the walk reads it)"
    if isinstance(mine, (msgspec.inspect.AnyType, msgspec.inspect.RawType)):
        return None  # anything, or the part as sent
    if isinstance(theirs, msgspec.inspect.RawType):  # a part Work decodes on first read
        return None if isinstance(mine, _OBJECT) else "must be an object (a Struct, a dict)"
    if type(mine) is type(theirs):
        return None
    return f"is {type(mine).__name__.removesuffix('Type').lower()}, Work's is " + (
        type(theirs).__name__.removesuffix("Type").lower()
    )


def check_model(model: object) -> None:
    """Refuse a ``model=`` the walk cannot decode works into, before any request.

    Raises:
        TypeError: Not a ``msgspec.Struct`` class.
        ValueError: A field that is not one of :class:`Work`'s on the wire (a typo, or a
            Struct without ``rename="camel"``: it would read None for every work), of another
            type than Work's (``workId``, ``createTime`` and ``status`` must be ints: the walk
            reads them), without a default (the API promises no field), or a Struct option
            that cannot decode a work (``array_like``, a tag, ``forbid_unknown_fields``).
    """
    if not (isinstance(model, type) and issubclass(model, msgspec.Struct)):
        raise TypeError(f"model must be a msgspec.Struct class declared like Work, got {model!r}")
    config = model.__struct_config__
    name = model.__name__
    if config.array_like:
        raise ValueError(f"model {name} is array_like: a work arrives as a JSON object")
    if config.tag is not None:
        raise ValueError(f"model {name} is a tagged Struct: a work carries no tag")
    if config.forbid_unknown_fields:
        raise ValueError(
            f"model {name} forbids unknown fields: every work has more fields than it declares"
        )
    fields = msgspec.inspect.type_info(model).fields  # type: ignore[attr-defined]
    unknown = [
        f"{field.name} (read as {field.encode_name!r})"
        for field in fields
        if field.encode_name not in _WORK_FIELDS
    ]
    if unknown:
        raise ValueError(
            f"model {name}: {', '.join(unknown)} is not a field of Work on the wire; declare it"
            ' like Work (rename="camel", the names of Work\'s fields)'
        )
    for field in fields:
        if field.required:
            raise ValueError(
                f"model {name}: {field.name} has no default; give every field one (the API"
                " may leave any field out, and a work without workId fails its page anyway)"
            )
        why = _type_error(field, _WORK_FIELDS[field.encode_name])
        if why is not None:
            raise ValueError(f"model {name}: {field.name} {why}")


class _Codec(Generic[M]):
    """How a walk decodes works into ``model``: its decoders, and which of the fields the
    walk reads (:data:`_HEAD_FIELDS`) the model has under the same names."""

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.work_decoder: msgspec.json.Decoder[M] = msgspec.json.Decoder(model)
        self.page_decoder: msgspec.json.Decoder[_WorksPage[M]] = msgspec.json.Decoder(
            _WorksPage[model]  # type: ignore[valid-type]
        )
        self.plain_decoder: msgspec.json.Decoder[_PlainPage[M]] = msgspec.json.Decoder(
            _PlainPage[model]  # type: ignore[valid-type]
        )
        fields = {f.name: f.encode_name for f in msgspec.structs.fields(model)}
        # The walk reads these off the model's works when it has them under Work's names (and
        # as ints: check_model); else it decodes them apart.
        self.has = frozenset(attr for attr, wire in _HEAD_FIELDS if fields.get(attr) == wire)
        self.required: tuple[FieldPath, ...] = _REQUIRED if "work_id" in self.has else ()


@functools.lru_cache(maxsize=64)
def _codec(model: type[M]) -> _Codec[M]:
    return _Codec(model)


_WORK_CODEC: Final[_Codec[Work]] = _codec(Work)


def _decode_works(
    raw_page: _RawPage, url: str | URL, drift: Drift, codec: _Codec[M] | None, *, heads: bool
) -> tuple[list[msgspec.Raw], list[Any], Sequence[Any]]:
    """Each work as sent, decoded as the model (``codec``; None for the export: only the
    fields the walk and the downloader read, as a :class:`Work`), and what the walk reads of
    each (decoded apart with ``heads``: the model lacks a field)."""
    raws = [raw for item in raw_page.history for raw in item.works]
    works: list[Any]
    try:
        # The fast path, a page as documented: one strict decode per work, nothing else.
        if codec is None:
            works = [_lite(_WORK_HEAD_DECODER.decode(raw)) for raw in raws]
        else:
            works = [codec.work_decoder.decode(raw) for raw in raws]
        found: Sequence[Any] = [_WORK_HEAD_DECODER.decode(raw) for raw in raws] if heads else works
    except (msgspec.ValidationError, RecursionError):
        works, found = _decode_drifted(raw_page, url, drift, codec, heads=heads)
    return raws, works, found


def _check_ids(history: Sequence[Any], heads: Sequence[Any], url: str | URL) -> None:
    """Every work has a workId: the walk finds its place by them."""
    if any(head.work_id is None for head in heads):
        _, i, j = next(where for where in _places(history) if heads[where[0]].work_id is None)
        raise DecodeError(str(url), f"history[{i}].works[{j}].workId is missing")


def _lite(head: _WorkHead) -> Work:
    return Work(
        work_id=head.work_id,
        create_time=head.create_time,
        status=head.status,
        download_info=head.download_info,
    )


def _places(history: Sequence[Any]) -> Iterator[tuple[int, int, int]]:
    """(index among the page's works, history index, index in its entry) of each work."""
    k = 0
    for i, item in enumerate(history):
        for j in range(len(item.works)):
            yield k, i, j
            k += 1


def _lenient(
    raw: msgspec.Raw,
    decoder: msgspec.json.Decoder[T],
    type_: type[T],
    on_drift: DriftReport,
    required: tuple[FieldPath, ...],
    where: str,
    url: str | URL,
) -> T:
    """One work through :func:`decode_lenient`; what cannot be read is a DecodeError."""
    try:
        return decode_lenient(raw, decoder, type_, on_drift=on_drift, required=required)
    except msgspec.ValidationError as exc:
        parsed = parse_path(str(exc))
        path = format_path(parsed[1], where) if parsed else ""
        reason = parsed[0] if parsed else str(exc)
        raise DecodeError(str(url), f"{path or where}: {reason}") from exc
    except RecursionError as exc:
        raise DecodeError(str(url), f"{where}: JSON nested too deeply") from exc


def _decode_drifted(
    raw_page: _RawPage, url: str | URL, drift: Drift, codec: _Codec[M] | None, *, heads: bool
) -> tuple[list[Any], Sequence[Any]]:
    """The slow path: each work through :func:`decode_lenient`, drift reported by path."""
    works: list[Any] = []
    found: list[Any] = []
    for _, i, j in _places(raw_page.history):
        raw = raw_page.history[i].works[j]
        where = f"history[{i}].works[{j}]"
        report = drift.for_work(i, j)
        if codec is None:
            work: Any = _lite(
                _lenient(raw, _WORK_HEAD_DECODER, _WorkHead, report, _REQUIRED, where, url)
            )
        else:
            work = _lenient(
                raw, codec.work_decoder, codec.model, report, codec.required, where, url
            )
        works.append(work)
        if heads:
            # Warned about, not counted again: the fields the model has were counted above.
            quiet = drift.for_work(i, j, count=False)
            found.append(_lenient(raw, _WORK_HEAD_DECODER, _WorkHead, quiet, _REQUIRED, where, url))
    return works, (found if heads else works)


def _page_answer(
    history: Sequence[Any], fetched: _Fetched[Any], *, times: bool, head: bool = True
) -> Answer[_Fetched[Any]]:
    """What the planner reads of a page: entries, work ids, create times (with ``times``),
    and the head (with ``head``: the planner reads it of page 1 only)."""
    heads = fetched.heads
    ids: list[int] = list(map(_WORK_ID, heads))
    answer = Answer(
        n_entries=len(history),
        ids=ids,
        head=_head_key(history, ids) if head else None,
        payload=fetched,
        times=list(map(_CREATE_TIME, heads)) if times else None,
    )
    if None in answer.id_set:
        _check_ids(history, heads, fetched.url)  # says which
    return answer


def _head_key(history: Sequence[Any], ids: Sequence[int]) -> Hashable:
    """What tells one head of the list from another: the first entry's task id and works."""
    head: Hashable = None
    if history:
        first = history[0]
        task_id: bytes | None = None
        if first.task and bytes(first.task) != b"null":
            try:
                tid = _TASK_ID_DECODER.decode(first.task).id
                task_id = bytes(tid) if tid and bytes(tid) != b"null" else None
            except msgspec.ValidationError:  # not an object: the task as a whole is the key
                task_id = bytes(first.task)
        head = (task_id, tuple(ids[: len(first.works)]))
    return head


class Walk(Generic[M]):
    """A walk through the assets pages; create it with :meth:`KlingSession.walk`.

    Iterate it once (``async for batch in walk``) for :class:`WorkPage` batches, whose works
    are of the walk's ``model`` (:class:`Work` by default). ``stats`` and :meth:`checkpoint`
    may be read at any time, typically after each batch.
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
        model: type[M],
        max_prefetch: int = 8,
        _full: bool = True,
        _reads: Sequence[str] = (),
    ) -> None:
        check_model(model)
        if resume is not None:
            if not isinstance(resume, WalkCheckpoint):
                raise TypeError("resume must be a WalkCheckpoint (WalkCheckpoint.from_json)")
            resume.validate()
            page_size = resume.page_size
            content_type = resume.content_type
            email = resume.email
            start_page = resume.next_page
        # Validates page number and size, content type and email before any request.
        params = _http.assets_params(
            page_num=start_page,
            page_size=page_size,
            content_type=content_type,
            email=email if email is not None else kling._email,
        )
        # Each page's URL is built from these, the rest of its query encoded once (by yarl,
        # as with_query would: see _page_url).
        rest = {k: v for k, v in params.items() if k not in ("pageNum", "pageSize")}
        base = kling._assets_url
        tail = base.with_query(rest).raw_query_string
        self._url_parts = (base.scheme, base.raw_authority, base.raw_path, tail and f"&{tail}")
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
        self._planner: Planner[_Fetched[M]] = Planner(
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
        # None (the export): works are decoded only as far as the walk and downloads need.
        self._codec: _Codec[M] | None = _codec(model) if _full else None
        # What the walk (and a watcher: `_reads`) reads of each work, if the model lacks it,
        # is decoded apart.
        reads = {"work_id", *_reads, *(("create_time",) if self.since is not None else ())}
        self._heads = self._codec is not None and not reads <= self._codec.has

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

    def __aiter__(self) -> AsyncGenerator[WorkPage[M], None]:
        if self._started:
            raise RuntimeError("a Walk can be iterated only once; start a new one")
        self._started = True
        return self._run()

    @property
    def prefetch(self) -> int:
        """The prefetch depth in use (with ``prefetch="auto"``, the one picked so far)."""
        return self._planner.prefetch

    def _page_url(self, page_num: int, page_size: int) -> URL:
        """The URL of a page: the assets URL with ``pageNum``, ``pageSize`` and the walk's
        other parameters (checked and encoded once, in __init__), as
        ``with_query({"pageNum": ..., "pageSize": ..., **others})`` gives it, for less."""
        scheme, authority, path, tail = self._url_parts
        return URL.build(
            scheme=scheme,
            authority=authority,
            path=path,
            query_string=f"pageNum={page_num}&pageSize={page_size}{tail}",
            encoded=True,
        )

    async def _fetch(self, req: PlanRequest) -> Answer[_Fetched[M]]:
        auto = self._auto
        started = time.monotonic() if auto is not None else 0.0  # no clock without "auto"
        retries = self._retry.retries
        url = self._page_url(req.page_num, req.page_size)
        body, url = await self._kling._get(url, self._retry)
        if auto is not None and not req.probe:
            depth = auto.observe(time.monotonic() - started, self._retry.retries > retries)
            if depth != self._planner.prefetch:
                self._planner.set_prefetch(depth)
        return self._decode(body, url, head=req.page_num == 1)

    def _decode(self, body: bytes, url: str | URL, *, head: bool = True) -> Answer[_Fetched[M]]:
        """An answer's bytes as the planner reads them, its works decoded as the model
        (``head``: with the head of the list, for answers to page 1)."""
        codec, times = self._codec, self.since is not None
        if codec is not None and not self.raw:
            # A page as documented, in one pass; any drift takes the path below.
            try:
                page: _WorksPage[M] | _PlainPage[M] = (
                    codec.page_decoder.decode(body) if head else codec.plain_decoder.decode(body)
                )
                heads = _HEADS_PAGE_DECODER.decode(body).history if self._heads else None
            except _http._BAD_JSON:
                pass
            else:
                return self._answer(page, body, url, heads, head=head)
        # One decode of the page: each work stays the bytes it was sent as; only what the walk
        # (and the consumer) reads of a work is decoded from them.
        raw_page = _http.decode(_RAW_PAGE_DECODER, body, url=url)
        raws, works, found = _decode_works(raw_page, url, self._drift, codec, heads=self._heads)
        fetched: _Fetched[M] = _Fetched(body, url, raws, works, found)
        return _page_answer(raw_page.history, fetched, times=times, head=head)

    def _answer(
        self,
        page: _WorksPage[M] | _PlainPage[M],
        body: bytes,
        url: str | URL,
        heads: list[_HeadsItem] | None = None,
        *,
        head: bool = True,
    ) -> Answer[_Fetched[M]]:
        """The planner's answer from a page decoded as the model (``heads``: what the walk
        reads, decoded apart; ``head``: see :meth:`_decode`)."""
        works = list(_chain(map(_WORKS, page.history)))
        found: Sequence[Any] = works
        if heads is not None:
            found = [one for item in heads for one in item.works]
            if len(found) != len(works):  # cannot be, from the same bytes
                raise DecodeError(str(url), "the page's works could not be counted")
        fetched = _Fetched(body, url, [], works, found)
        return _page_answer(page.history, fetched, times=self.since is not None, head=head)

    def _batch(self, batch: Batch[_Fetched[M]]) -> WorkPage[M]:
        fetched = batch.payload
        works, raws, keep = fetched.works, fetched.raws, batch.keep
        heads = fetched.heads
        if len(keep) == len(works):  # every work (keep is in order, without repeats)
            return WorkPage(
                page_num=batch.page_num,
                works=works,
                raw_works=raws if self.raw else [],
                body=fetched.body,
                url=fetched.url,
                drift=self._drift,
                heads=None if heads is works else heads,
            )
        return WorkPage(
            page_num=batch.page_num,
            works=[works[i] for i in keep],
            raw_works=[raws[i] for i in keep] if self.raw else [],
            body=fetched.body,
            url=fetched.url,
            drift=self._drift,
            heads=None if heads is works else [heads[i] for i in keep],
        )

    async def _run(self) -> AsyncGenerator[WorkPage[M], None]:
        planner = self._planner
        tasks: dict[int, asyncio.Task[Answer[_Fetched[M]]]] = {}
        cancelled: set[asyncio.Task[Answer[_Fetched[M]]]] = set()
        errors: dict[int, BaseException] = {}
        stats = self.stats
        # The one request the walk waits for when it has nothing else in flight and pages are
        # asked one at a time (prefetch 0): awaited in place, no task and no asyncio.wait().
        alone: PlanRequest | None = None
        sole: PlanRequest | None = None  # the same, taken with Planner.sole_request()

        def flush() -> bool:
            nonlocal alone
            if not planner.pending:
                return False
            sent = False
            requests = planner.take_requests()
            if len(requests) == 1 and not tasks and alone is None and not planner.prefetch:
                alone = requests[0]
                requests = []
            elif requests and alone is not None:
                requests.insert(0, alone)  # more to send: it goes with them
                alone = None
            for req in requests:
                tasks[req.id] = asyncio.create_task(self._fetch(req))
                sent = True
            for rid in planner.take_cancels():
                if alone is not None and alone.id == rid:
                    alone = None
                    continue
                task = tasks.pop(rid, None)
                if task is not None:
                    task.cancel()
                    cancelled.add(task)  # awaited at the end: no request outlives the walk
            if cancelled:
                cancelled.difference_update([t for t in cancelled if t.done()])
            return sent

        try:
            while True:
                req, sole = sole, None
                if req is None:
                    if flush():
                        await asyncio.sleep(0)  # let the new requests go out before handing out
                    batch = planner.next_batch()
                    if batch is None:
                        flush()
                        failed = planner.failed_request
                        if failed is not None:
                            raise errors[failed]
                        if planner.done:
                            return
                        req, alone = alone, None
                    elif planner.prefetch:
                        flush()  # pages ahead go out (when the consumer next awaits)
                if req is not None:
                    try:
                        answer = await self._fetch(req)
                    except Exception as error:  # the planner decides what it means
                        errors[req.id] = error
                        planner.receive_failure(req.id)
                        continue
                    # The usual page, one page at a time: received and handed out in one step
                    # (the steps above, between the two, would find nothing to do).
                    batch = planner.receive_in_sequence(req.id, answer)
                    if batch is None:
                        planner.receive(req.id, answer)
                        continue
                if batch is not None:
                    # No await from next_batch() or receive_in_sequence() to the yield:
                    # checkpoint() already counts this batch, and a commit (or a cancellation)
                    # in between would see it before its consumer.
                    stats.requests, stats.retries = self._retry.requests, self._retry.retries
                    yield self._batch(batch)
                    if not tasks and alone is None:
                        # One page at a time, the next page's request may be all there is to
                        # do until its answer: then it is awaited at once (the steps above
                        # would find nothing else to do first).
                        sole = planner.sole_request()
                    continue
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
