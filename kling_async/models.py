"""Typed models of the ``GET /assets/`` response, decoded with msgspec.

Every field of the documented TypeScript model is here, as the snake_case of its wire name
(``workId`` is ``work_id``; msgspec's ``rename="camel"`` maps them). The API documents every
field as optional, so a missing scalar or object is ``None`` and a missing array is empty.
Unknown fields are ignored, because the API grows; open-ended values (``type``,
``content_type``, ``scene``, ``status``...) stay plain strings and ints, never closed enums.

Structs are ``kw_only`` and ``gc=False`` (they hold no reference cycles), and each response
type has one module-level, reused :class:`msgspec.json.Decoder`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

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


class _Model(msgspec.Struct, rename="camel", kw_only=True, gc=False, omit_defaults=True):
    """Base of every model: camelCase on the wire, snake_case in Python.

    ``kw_only`` is repeated on every subclass: msgspec applies it to the fields a class
    defines, not to those of its subclasses.
    """


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
    inputs: list[TaskInput] = msgspec.field(default_factory=list)
    arguments: list[Argument] = msgspec.field(default_factory=list)
    extra_args: dict[str, Any] = msgspec.field(default_factory=dict)
    callback_payloads: list[Any] = msgspec.field(default_factory=list)
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
    tags: list[Any] = msgspec.field(default_factory=list)
    content: str | None = None
    prompts: list[Any] = msgspec.field(default_factory=list)


class FileType(_Model, kw_only=True):
    """A file type a work can be downloaded as (``MP4``, ``PNG``, ``MP3``, ``WAV``...)."""

    type: str | None = None
    watermark: bool | None = None


class DownloadInfo(_Model, kw_only=True):
    """The file types available for a work."""

    file_types: list[FileType] = msgspec.field(default_factory=list)


class Work(_Model, kw_only=True):
    """One generated work: a video, an image or an audio clip.

    ``status == 99`` means it succeeded; other values (queued, running, failed) are not
    documented and are kept as the raw number.
    """

    work_id: int | None = None
    work_item_id: int | None = None
    task_id: int | None = None
    user_id: int | None = None
    type: str | None = None
    status: int | None = None
    content_type: str | None = None
    resource: Resource | None = None
    cover: Resource | None = None
    star_num: int | None = None
    clone_count: int | None = None
    report_num: int | None = None
    create_time: int | None = None
    task_info: TaskInfo | None = None
    self_attitude: str | None = None
    self_comment: SelfComment | None = None
    favored: bool | None = None
    starred: bool | None = None
    publish_status: str | None = None
    deleted: bool | None = None
    publish_time: int | None = None
    submit_time: int | None = None
    lip_sync_status: int | None = None
    download_info: DownloadInfo | None = None
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


class Task(_Model, kw_only=True):
    """The generation task behind the works of a history entry."""

    id: int | None = None
    user_id: int | None = None
    type: str | None = None
    scene: str | None = None
    status: int | None = None
    task_info: TaskInfo | None = None
    favored: bool | None = None
    deleted: bool | None = None
    viewed: bool | None = None
    create_time: int | None = None
    update_time: int | None = None
    view_time: int | None = None


class HistoryItem(_Model, kw_only=True):
    """One entry of the history: a task and the works it produced (an image task has several)."""

    works: list[Work] = msgspec.field(default_factory=list)
    task: Task | None = None
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

    points: list[Point] = msgspec.field(default_factory=list)
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

    ticket: list[Ticket] = msgspec.field(default_factory=list)


class AssetsPage(_Model, kw_only=True):
    """One page of ``GET /assets/``: newest first; an empty ``history`` means past the end."""

    limitations: list[Limitation] = msgspec.field(default_factory=list)
    history: list[HistoryItem] = msgspec.field(default_factory=list)
    user_points: UserPoints | None = None
    user_tickets: UserTickets | None = None

    def works(self) -> list[Work]:
        """Every work of every history entry of this page, in order."""
        return [work for item in self.history for work in item.works]


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


ASSETS_PAGE_DECODER: msgspec.json.Decoder[AssetsPage] = msgspec.json.Decoder(AssetsPage)
DOWNLOAD_LINK_DECODER: msgspec.json.Decoder[DownloadLink] = msgspec.json.Decoder(DownloadLink)
ACCOUNTS_DECODER: msgspec.json.Decoder[dict[str, Account]] = msgspec.json.Decoder(
    dict[str, Account]
)
