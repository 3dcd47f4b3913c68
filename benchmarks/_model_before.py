"""The page models as they were before issue #14 (lists, every part decoded eagerly): frozen.

``bench_model`` races them against :mod:`kling_async.models` in the same run, and the tests use
them as the reference every field of the new models must read back equal to. Do not edit
these classes to follow the real models: they are the "before" of the comparison.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

__all__ = ["TODAY_DECODER", "TodayAssetsPage", "TodayWork"]


class _TodayModel(msgspec.Struct, rename="camel", kw_only=True, gc=False, omit_defaults=True):
    pass


class TodayResource(_TodayModel, kw_only=True):
    resource: str | None = None
    height: int | None = None
    width: int | None = None
    duration: int | None = None
    resource_key: str | None = None


class TodayTaskInput(_TodayModel, kw_only=True):
    name: str | None = None
    input_type: str | None = None
    token: str | None = None
    blob_storage: str | None = None
    url: str | None = None
    cover: str | None = None
    from_work_id: int | None = None
    from_upload_id: int | None = None


class TodayArgument(_TodayModel, kw_only=True):
    name: str | None = None
    value: str | None = None


class TodayTaskInfo(_TodayModel, kw_only=True):
    type: str | None = None
    inputs: list[TodayTaskInput] = msgspec.field(default_factory=list)
    arguments: list[TodayArgument] = msgspec.field(default_factory=list)
    extra_args: dict[str, Any] = msgspec.field(default_factory=dict)
    callback_payloads: list[Any] = msgspec.field(default_factory=list)
    scene: str | None = None

    def argument(self, name: str) -> str | None:
        for arg in self.arguments:
            if arg.name == name:
                return arg.value
        return None


class TodaySelfComment(_TodayModel, kw_only=True):
    rate: int | None = None
    tags: list[Any] = msgspec.field(default_factory=list)
    content: str | None = None
    prompts: list[Any] = msgspec.field(default_factory=list)


class TodayFileType(_TodayModel, kw_only=True):
    type: str | None = None
    watermark: bool | None = None


class TodayDownloadInfo(_TodayModel, kw_only=True):
    file_types: list[TodayFileType] = msgspec.field(default_factory=list)


class TodayWork(_TodayModel, kw_only=True):
    work_id: int | None = None
    work_item_id: int | None = None
    task_id: int | None = None
    user_id: int | None = None
    type: str | None = None
    status: int | None = None
    content_type: str | None = None
    resource: TodayResource | None = None
    cover: TodayResource | None = None
    star_num: int | None = None
    clone_count: int | None = None
    report_num: int | None = None
    create_time: int | None = None
    task_info: TodayTaskInfo | None = None
    self_attitude: str | None = None
    self_comment: TodaySelfComment | None = None
    favored: bool | None = None
    starred: bool | None = None
    publish_status: str | None = None
    deleted: bool | None = None
    publish_time: int | None = None
    submit_time: int | None = None
    lip_sync_status: int | None = None
    download_info: TodayDownloadInfo | None = None
    allow_publish: bool | None = None

    @property
    def created_at(self) -> datetime | None:
        if self.create_time is None:
            return None
        return datetime.fromtimestamp(self.create_time / 1000, tz=timezone.utc)

    @property
    def prompt(self) -> str | None:
        if self.task_info is None:
            return None
        return self.task_info.argument("prompt")

    @property
    def succeeded(self) -> bool:
        return self.status == 99


class TodayTask(_TodayModel, kw_only=True):
    id: int | None = None
    user_id: int | None = None
    type: str | None = None
    scene: str | None = None
    status: int | None = None
    task_info: TodayTaskInfo | None = None
    favored: bool | None = None
    deleted: bool | None = None
    viewed: bool | None = None
    create_time: int | None = None
    update_time: int | None = None
    view_time: int | None = None


class TodayHistoryItem(_TodayModel, kw_only=True):
    works: list[TodayWork] = msgspec.field(default_factory=list)
    task: TodayTask | None = None
    eta_time: int | None = None
    eta_time_over_sla: bool | None = None
    queuing_eta_time: int | None = None
    origin_eta_time: int | None = None
    origin_queuing_eta_time: int | None = None
    current_timestamp: int | None = None


class TodayLimitation(_TodayModel, kw_only=True):
    type: str | None = None
    remaining: int | None = None
    limit: int | None = None


class TodayPoint(_TodayModel, kw_only=True):
    order_id: str | None = None
    type: str | None = None
    amount: int | None = None
    balance: int | None = None
    start_time: int | None = None
    end_time: int | None = None


class TodayUserPoints(_TodayModel, kw_only=True):
    points: list[TodayPoint] = msgspec.field(default_factory=list)
    total: int | None = None


class TodayTicket(_TodayModel, kw_only=True):
    order_id: str | None = None
    type: str | None = None
    package_type: str | None = None
    amount: int | None = None
    balance: int | None = None
    start_time: int | None = None
    end_time: int | None = None


class TodayUserTickets(_TodayModel, kw_only=True):
    ticket: list[TodayTicket] = msgspec.field(default_factory=list)


class TodayAssetsPage(_TodayModel, kw_only=True):
    limitations: list[TodayLimitation] = msgspec.field(default_factory=list)
    history: list[TodayHistoryItem] = msgspec.field(default_factory=list)
    user_points: TodayUserPoints | None = None
    user_tickets: TodayUserTickets | None = None

    def works(self) -> list[TodayWork]:
        return [work for item in self.history for work in item.works]


TODAY_DECODER: msgspec.json.Decoder[TodayAssetsPage] = msgspec.json.Decoder(TodayAssetsPage)
