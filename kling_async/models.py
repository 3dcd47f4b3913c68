"""Typed models of the ``GET /assets/`` response, decoded with msgspec.

Every field of the documented TypeScript model is here, as the snake_case of its wire name
(``workId`` is ``work_id``; msgspec's ``rename="camel"`` maps them). The API documents every
field as optional, so a missing scalar or object is ``None`` and a missing array is empty.
Unknown fields are ignored, because the API grows; open-ended values (``type``,
``content_type``, ``scene``, ``status``...) stay plain strings and ints, never closed enums.

Structs are ``kw_only`` and ``gc=False`` (they hold no reference cycles), and each response
type has one module-level, reused :class:`msgspec.json.Decoder`. Arrays are tuples (``()`` when
missing).

**Lazy parts.** A page holds hundreds of works and most callers read a few fields of each, so
the nested objects of a work (``resource``, ``cover``, ``task_info``, ``self_comment``,
``download_info``) and the ``task`` of a history entry are kept as sent (a
:class:`msgspec.Raw` slice of the body, no Python object built) and decoded on first read,
then kept. Reading one is as lenient as decoding the whole work: a field of an unexpected type
is converted or None (:mod:`kling_async._lenient`), and a part that is not an object at all
reads as None; each such drift is logged once per process as a WARNING on the ``kling_async``
logger. Construction by keyword is unchanged (``Work(task_info=TaskInfo(...))``); ``==`` and
``repr`` decode the lazy parts first. ``msgspec.json.encode`` writes a part not read yet as
it was sent; ``msgspec.to_builtins`` and ``msgspec.structs.asdict`` see such a part as a
``msgspec.Raw``: call :meth:`Work.load` (or :meth:`AssetsPage.load`) first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar, cast

import msgspec

from ._lenient import FieldPath, decode_lenient, format_path

__all__ = [
    "Account",
    "AccountSession",
    "Argument",
    "AssetsPage",
    "DownloadInfo",
    "DownloadLink",
    "FileType",
    "HistoryItem",
    "Limitation",
    "Point",
    "Resource",
    "SelfComment",
    "Task",
    "TaskInfo",
    "TaskInput",
    "Ticket",
    "UserPoints",
    "UserTickets",
    "Work",
]


log = logging.getLogger("kling_async")

T = TypeVar("T")
M = TypeVar("M", bound="_Model")


class _Model(msgspec.Struct, rename="camel", kw_only=True, gc=False, omit_defaults=True):
    """Base of every model: camelCase on the wire, snake_case in Python.

    ``kw_only`` is repeated on every subclass: msgspec applies it to the fields a class
    defines, not to those of its subclasses.
    """


_Raw: Final = msgspec.Raw
_WARNED: Final[set[str]] = set()
"""Drift found in lazy parts, by path: each is logged once per process."""
_MAX_WARNED: Final = 1000


class _Lazy(Generic[T]):
    """The attribute of a lazy part: the slot holds the part as sent (``msgspec.Raw``) until
    the first read, which decodes it leniently and stores the result in the slot.

    Installed over msgspec's own slot descriptor (see :func:`_lazy`), so decoding, encoding,
    construction by keyword and ``structs.replace`` all still use the same slot.
    """

    __slots__ = ("_decode", "_decoder", "_get", "_set", "_type", "_where")

    def __init__(self, slot: Any, type_: type[T], where: str) -> None:
        # Bound once: a read of a part already decoded is one call and a type test.
        self._get: Callable[[object], Any] = slot.__get__
        self._set: Callable[[object, object], None] = slot.__set__
        self._type = type_
        self._decoder: msgspec.json.Decoder[T | None] = msgspec.json.Decoder(type_ | None)
        self._decode = self._decoder.decode
        self._where = where

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self._get(obj)
        if type(value) is not _Raw:
            return value
        try:
            value = self._decode(value)  # the fast path: as documented
        except (msgspec.ValidationError, msgspec.DecodeError):
            value = self._decode_drifted(value)
        self._set(obj, value)
        return value

    def __set__(self, obj: object, value: object) -> None:
        self._set(obj, value)

    def _decode_drifted(self, raw: msgspec.Raw) -> T | None:
        def report(path: FieldPath, reason: str, kept: bool) -> None:
            _warn(format_path(path, self._where), reason, kept)

        try:
            return decode_lenient(
                raw, self._decoder, cast("type[T | None]", self._type | None), on_drift=report
            )
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            # Not an object at all (a string, a list...): the part reads as None.
            _warn(self._where, str(exc).split(" - at ")[0], False)
            return None


def _warn(where: str, reason: str, kept: bool) -> None:
    if where in _WARNED or len(_WARNED) >= _MAX_WARNED:
        return
    _WARNED.add(where)
    outcome = "converted" if kept else "read as None"
    log.warning("schema drift at %s: %s; %s (reported once per process)", where, reason, outcome)


def _lazy(cls: type[M], name: str, type_: type[Any]) -> None:
    """Make field ``name`` of ``cls`` a lazy part of type ``type_``."""
    wire = dict(zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True))[name]
    setattr(cls, name, _Lazy(cls.__dict__[name], type_, f"{cls.__name__}.{wire}"))


def _load(obj: msgspec.Struct, names: Iterable[str]) -> None:
    for name in names:
        getattr(obj, name)


class _LazyModel(_Model, kw_only=True):
    """A model with lazy parts (``_lazy_fields``): ``==`` and ``repr`` decode them first."""

    _lazy_fields: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        _load(self, self._lazy_fields)
        _load(cast("msgspec.Struct", other), self._lazy_fields)
        return msgspec.Struct.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __repr__(self) -> str:
        _load(self, self._lazy_fields)
        return msgspec.Struct.__repr__(self)


class Resource(_Model, kw_only=True):
    """A file on Kling's CDN (``resource`` and ``cover`` of a work).

    ``duration`` is in milliseconds (``5041`` for a 5 s clip). The URL may point at a
    watermarked copy; :meth:`KlingSession.get_download_link` gives the clean one.
    """

    resource: str | None = None
    height: int | None = None
    width: int | None = None
    duration: int | None = None
    resource_key: str | None = None


class TaskInput(_Model, kw_only=True):
    """An input of a generation task (an uploaded image, a source work...)."""

    name: str | None = None
    input_type: str | None = None
    token: str | None = None
    blob_storage: str | None = None
    url: str | None = None
    cover: str | None = None
    from_work_id: int | None = None
    from_upload_id: int | None = None


class Argument(_Model, kw_only=True):
    """A named task argument; values are strings on the wire (``duration`` is ``"5"``)."""

    name: str | None = None
    value: str | None = None


class TaskInfo(_Model, kw_only=True):
    """What was asked for: task type, inputs and arguments."""

    type: str | None = None
    inputs: tuple[TaskInput, ...] = ()
    arguments: tuple[Argument, ...] = ()
    extra_args: dict[str, Any] = msgspec.field(default_factory=dict)
    callback_payloads: tuple[Any, ...] = ()
    scene: str | None = None

    def argument(self, name: str) -> str | None:
        """Return the value of the argument called ``name``, or ``None``."""
        for arg in self.arguments:
            if arg.name == name:
                return arg.value
        return None


class SelfComment(_Model, kw_only=True):
    """The account owner's own rating and comment on a work."""

    rate: int | None = None
    tags: tuple[Any, ...] = ()
    content: str | None = None
    prompts: tuple[Any, ...] = ()


class FileType(_Model, kw_only=True):
    """A file type a work can be downloaded as (``MP4``, ``PNG``, ``MP3``, ``WAV``...)."""

    type: str | None = None
    watermark: bool | None = None


class DownloadInfo(_Model, kw_only=True):
    """The file types available for a work."""

    file_types: tuple[FileType, ...] = ()


class Work(_LazyModel, kw_only=True):
    """One generated work: a video, an image or an audio clip.

    ``status == 99`` means it succeeded; other values (queued, running, failed) are not
    documented and are kept as the raw number. ``resource``, ``cover``, ``task_info``,
    ``self_comment`` and ``download_info`` are decoded on first read (see the module's
    docstring).
    """

    _lazy_fields: ClassVar[tuple[str, ...]] = (
        "resource",
        "cover",
        "task_info",
        "self_comment",
        "download_info",
    )

    work_id: int | None = None
    work_item_id: int | None = None
    task_id: int | None = None
    user_id: int | None = None
    type: str | None = None
    status: int | None = None
    content_type: str | None = None
    # msgspec sees the lazy parts as `msgspec.Raw` (decoded with no object built), type
    # checkers as what they read back as; `_lazy` below installs the attribute that decodes.
    if TYPE_CHECKING:
        resource: Resource | None = None
        cover: Resource | None = None
    else:
        resource: msgspec.Raw = None
        cover: msgspec.Raw = None
    star_num: int | None = None
    clone_count: int | None = None
    report_num: int | None = None
    create_time: int | None = None
    if TYPE_CHECKING:
        task_info: TaskInfo | None = None
    else:
        task_info: msgspec.Raw = None
    self_attitude: str | None = None
    if TYPE_CHECKING:
        self_comment: SelfComment | None = None
    else:
        self_comment: msgspec.Raw = None
    favored: bool | None = None
    starred: bool | None = None
    publish_status: str | None = None
    deleted: bool | None = None
    publish_time: int | None = None
    submit_time: int | None = None
    lip_sync_status: int | None = None
    if TYPE_CHECKING:
        download_info: DownloadInfo | None = None
    else:
        download_info: msgspec.Raw = None
    allow_publish: bool | None = None

    @property
    def created_at(self) -> datetime | None:
        """``create_time`` (ms since the epoch) as an aware UTC datetime, or ``None``."""
        if self.create_time is None:
            return None
        return datetime.fromtimestamp(self.create_time / 1000, tz=timezone.utc)

    @property
    def prompt(self) -> str | None:
        """The value of the task's ``prompt`` argument, or ``None``."""
        if self.task_info is None:
            return None
        return self.task_info.argument("prompt")

    @property
    def succeeded(self) -> bool:
        """Whether the work finished successfully (``status == 99``)."""
        return self.status == 99

    def load(self) -> Work:
        """Decode every lazy part now (for ``msgspec.to_builtins``); returns the work."""
        _load(self, self._lazy_fields)
        return self


class Task(_LazyModel, kw_only=True):
    """The generation task behind the works of a history entry (``task_info`` is decoded on
    first read)."""

    _lazy_fields: ClassVar[tuple[str, ...]] = ("task_info",)

    id: int | None = None
    user_id: int | None = None
    type: str | None = None
    scene: str | None = None
    status: int | None = None
    if TYPE_CHECKING:
        task_info: TaskInfo | None = None
    else:
        task_info: msgspec.Raw = None
    favored: bool | None = None
    deleted: bool | None = None
    viewed: bool | None = None
    create_time: int | None = None
    update_time: int | None = None
    view_time: int | None = None


class HistoryItem(_LazyModel, kw_only=True):
    """One entry of the history: a task and the works it produced (an image task has several).

    ``task`` is decoded on first read.
    """

    _lazy_fields: ClassVar[tuple[str, ...]] = ("task",)

    works: tuple[Work, ...] = ()
    if TYPE_CHECKING:
        task: Task | None = None
    else:
        task: msgspec.Raw = None
    eta_time: int | None = None
    eta_time_over_sla: bool | None = None
    queuing_eta_time: int | None = None
    origin_eta_time: int | None = None
    origin_queuing_eta_time: int | None = None
    current_timestamp: int | None = None


class Limitation(_Model, kw_only=True):
    """A per-task-type quota."""

    type: str | None = None
    remaining: int | None = None
    limit: int | None = None


class Point(_Model, kw_only=True):
    """A credit purchase or plan grant."""

    order_id: str | None = None
    type: str | None = None
    amount: int | None = None
    balance: int | None = None
    start_time: int | None = None
    end_time: int | None = None


class UserPoints(_Model, kw_only=True):
    """The account's credits."""

    points: tuple[Point, ...] = ()
    total: int | None = None


class Ticket(_Model, kw_only=True):
    """A ticket (priority, extend, hq_5s...) held by the account."""

    order_id: str | None = None
    type: str | None = None
    package_type: str | None = None
    amount: int | None = None
    balance: int | None = None
    start_time: int | None = None
    end_time: int | None = None


class UserTickets(_Model, kw_only=True):
    """The account's tickets."""

    ticket: tuple[Ticket, ...] = ()


class AssetsPage(_Model, kw_only=True):
    """One page of ``GET /assets/``: newest first; an empty ``history`` means past the end."""

    limitations: tuple[Limitation, ...] = ()
    history: tuple[HistoryItem, ...] = ()
    user_points: UserPoints | None = None
    user_tickets: UserTickets | None = None

    def works(self) -> list[Work]:
        """Every work of every history entry of this page, in order."""
        return [work for item in self.history for work in item.works]

    def load(self) -> AssetsPage:
        """Decode every lazy part of the page now (for ``msgspec.to_builtins``); returns the
        page."""
        for item in self.history:
            task = item.task
            if task is not None:
                _load(task, task._lazy_fields)
            for work in item.works:
                work.load()
        return self


class DownloadLink(_Model, kw_only=True):
    """The answer of ``GET /assets/download``: where to fetch the watermark-free file(s).

    ``cdn_url`` is on Kling's CDN (another origin): never send the useapi token there.
    """

    cdn_url: str | None = None
    status: str | None = None


class AccountSession(_Model, kw_only=True):
    """The Kling web session useapi holds for an account (``session`` of an :class:`Account`).

    The wire names are mixed case (``userId``, ``ExpireTime``, ``ExpireTimeUTC``).
    """

    user_id: int | None = None
    expire_time: int | None = msgspec.field(default=None, name="ExpireTime")
    """Epoch milliseconds when the session expires."""
    expire_time_utc: str | None = msgspec.field(default=None, name="ExpireTimeUTC")


class Account(_Model, kw_only=True):
    """One Kling account configured in useapi (a value of ``GET /accounts``).

    Fields the API adds are ignored, and so is the ``password`` it sends: this model has no
    field for it, so it is never kept in memory past decoding, logged or written anywhere.
    """

    email: str | None = None
    max_jobs: int | None = None
    session: AccountSession | None = None


for _cls, _name, _type in (
    (Work, "resource", Resource),
    (Work, "cover", Resource),
    (Work, "task_info", TaskInfo),
    (Work, "self_comment", SelfComment),
    (Work, "download_info", DownloadInfo),
    (Task, "task_info", TaskInfo),
    (HistoryItem, "task", Task),
):
    _lazy(_cls, _name, _type)

ASSETS_PAGE_DECODER: msgspec.json.Decoder[AssetsPage] = msgspec.json.Decoder(AssetsPage)
DOWNLOAD_LINK_DECODER: msgspec.json.Decoder[DownloadLink] = msgspec.json.Decoder(DownloadLink)
ACCOUNTS_DECODER: msgspec.json.Decoder[dict[str, Account]] = msgspec.json.Decoder(
    dict[str, Account]
)
