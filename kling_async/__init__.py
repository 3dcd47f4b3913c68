"""kling_async: an asyncio client for useapi.net's Kling AI assets API.

    async with KlingSession() as kling:          # token from USEAPI_TOKEN
        async for work in kling.iter_works():
            print(work.work_id, work.created_at, work.prompt)

The public surface is re-exported here; see ``__all__``.
"""

from ._session import IterOptions, KlingSession, WalkOptions, WatchOptions
from ._version import __version__
from ._walk import Walk, WalkCheckpoint, WalkStats, WorkPage
from ._watch import Watcher, WatchState
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    DecodeError,
    KlingError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    RedirectError,
    ResumeError,
    ServerError,
    SessionClosedError,
    TransportError,
    WalkError,
    WalkStalledError,
)
from .models import (
    Account,
    AccountSession,
    Argument,
    AssetsPage,
    DownloadInfo,
    DownloadLink,
    FileType,
    HistoryItem,
    Limitation,
    Point,
    Resource,
    SelfComment,
    Task,
    TaskInfo,
    TaskInput,
    Ticket,
    UserPoints,
    UserTickets,
    Work,
)

__all__ = [
    "APIError",
    "Account",
    "AccountSession",
    "Argument",
    "AssetsPage",
    "AuthenticationError",
    "BadRequestError",
    "DecodeError",
    "DownloadInfo",
    "DownloadLink",
    "FileType",
    "HistoryItem",
    "IterOptions",
    "KlingError",
    "KlingSession",
    "Limitation",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "Point",
    "RateLimitError",
    "RedirectError",
    "Resource",
    "ResumeError",
    "SelfComment",
    "ServerError",
    "SessionClosedError",
    "Task",
    "TaskInfo",
    "TaskInput",
    "Ticket",
    "TransportError",
    "UserPoints",
    "UserTickets",
    "Walk",
    "WalkCheckpoint",
    "WalkError",
    "WalkOptions",
    "WalkStalledError",
    "WalkStats",
    "WatchOptions",
    "WatchState",
    "Watcher",
    "Work",
    "WorkPage",
    "__version__",
]
