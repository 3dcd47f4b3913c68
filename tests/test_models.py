"""The models decode the documented response, field by field, and tolerate what the API omits."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
import pytest

import kling_async
from kling_async import models
from kling_async.models import ASSETS_PAGE_DECODER, AssetsPage, Work


def test_sample_page_top_level(sample_bytes: bytes) -> None:
    """limitations, userPoints and userTickets decode to the documented values."""
    page = ASSETS_PAGE_DECODER.decode(sample_bytes)
    assert [(lim.type, lim.remaining, lim.limit) for lim in page.limitations] == [
        ("mmu_txt2img_aiweb", 10000, 10000),
        ("m2v_txt2video_hq", 10000, 10000),
        ("m2v_img2video_hq", 10000, 10000),
    ]
    assert page.user_points is not None
    assert page.user_points.total == 190500
    (point,) = page.user_points.points
    assert (point.order_id, point.type, point.amount, point.balance) == (
        "123456789",
        "plan",
        300000,
        190500,
    )
    assert (point.start_time, point.end_time) == (1744081611119, 1746760011119)
    assert page.user_tickets is not None
    assert [(t.type, t.package_type, t.amount, t.balance) for t in page.user_tickets.ticket] == [
        ("priority", "reward", 1, 1),
        ("extend", "reward", 2, 2),
        ("hq_5s", "reward", 3, 3),
    ]
    assert page.user_tickets.ticket[0].order_id == "123456789"
    assert page.user_tickets.ticket[0].start_time == 1744046060883
    assert page.user_tickets.ticket[0].end_time == 1746724460883


def test_sample_history_item_and_task(sample_bytes: bytes) -> None:
    """The history entry's task and eta fields decode to the documented values."""
    (item,) = ASSETS_PAGE_DECODER.decode(sample_bytes).history
    assert item.eta_time == 0
    assert item.eta_time_over_sla is False
    assert item.queuing_eta_time == 0
    assert item.origin_eta_time == 0
    assert item.origin_queuing_eta_time == 0
    assert item.current_timestamp == 1744955215247
    task = item.task
    assert task is not None
    assert (task.id, task.user_id, task.type, task.scene, task.status) == (
        123456789,
        12345,
        "m2v_img2video_hq",
        "NORMAL_CREATION",
        99,
    )
    assert (task.favored, task.deleted, task.viewed) == (False, False, True)
    assert (task.create_time, task.update_time, task.view_time) == (
        1744858514499,
        1744858823172,
        1744916388016,
    )
    assert task.task_info is not None
    assert task.task_info.scene == "NORMAL_CREATION"
    assert task.task_info.argument("kling_version") == "2.0"


def test_sample_work_every_field(sample_bytes: bytes) -> None:
    """Every field of the sample work decodes, snake_case, to its documented value."""
    (work,) = ASSETS_PAGE_DECODER.decode(sample_bytes).works()
    assert work.work_id == 123456789
    assert work.work_item_id == 0
    assert work.task_id == 123456789
    assert work.user_id == 12345
    assert work.type == "m2v_img2video_hq"
    assert work.status == 99
    assert work.content_type == "video"
    assert work.resource == models.Resource(
        resource="https://s21-kling.klingai.com/....mp4",
        height=1268,
        width=724,
        duration=5041,
        resource_key="",
    )
    assert work.cover is not None
    assert work.cover.resource == "https://s21-kling.klingai.com/....jpg"
    assert work.cover.duration == 0
    assert (work.star_num, work.clone_count, work.report_num) == (0, 0, 0)
    assert work.create_time == 1744858514515
    info = work.task_info
    assert info is not None
    assert info.type == "m2v_img2video_hq"
    (inp,) = info.inputs
    assert inp == models.TaskInput(
        name="input",
        input_type="URL",
        token=None,
        blob_storage=None,
        url="https://s21-kling.klingai.com/....jpg",
        cover=None,
        from_work_id=None,
        from_upload_id=None,
    )
    assert [(a.name, a.value) for a in info.arguments] == [
        ("prompt", "A person dancing"),
        ("negative_prompt", ""),
        ("duration", "5"),
        ("kling_version", "2.0"),
    ]
    assert info.extra_args == {}
    assert info.callback_payloads == ()
    assert info.scene == "NORMAL_CREATION"
    assert work.self_attitude == "unknown"
    assert work.self_comment == models.SelfComment(rate=0, tags=(), content="", prompts=())
    assert (work.favored, work.starred, work.deleted, work.allow_publish) == (
        False,
        False,
        False,
        True,
    )
    assert work.publish_status == "unpublished"
    assert work.publish_time == 0
    assert work.submit_time == 1744858514515
    assert work.lip_sync_status == 99
    assert work.download_info == models.DownloadInfo(
        file_types=(models.FileType(type="MP4", watermark=True),)
    )


def test_work_helpers(sample_bytes: bytes) -> None:
    """created_at is aware UTC from create_time ms; prompt and succeeded read the work."""
    (work,) = ASSETS_PAGE_DECODER.decode(sample_bytes).works()
    assert work.created_at == datetime(2025, 4, 17, 2, 55, 14, 515000, tzinfo=timezone.utc)
    assert work.created_at is not None and work.created_at.tzinfo is timezone.utc
    assert work.prompt == "A person dancing"
    assert work.succeeded is True


def test_everything_optional() -> None:
    """A missing object or scalar is None, a missing array is empty, and helpers cope."""
    page = ASSETS_PAGE_DECODER.decode(b'{"history": [{"works": [{}]}, {}]}')
    assert page.limitations == ()
    assert page.user_points is None and page.user_tickets is None
    assert page.history[1].works == () and page.history[1].task is None
    work = page.history[0].works[0]
    assert work.work_id is None and work.resource is None
    assert work.created_at is None and work.prompt is None and work.succeeded is False
    assert ASSETS_PAGE_DECODER.decode(b"{}") == AssetsPage()


def test_unknown_fields_and_open_strings() -> None:
    """Unknown fields are ignored and new type/contentType/scene values pass through."""
    body = (
        b'{"newTopLevel": 1, "history": [{"works": [{"workId": 1, "type": "m2v_future_v9",'
        b' "contentType": "hologram", "brandNew": {"x": [1]}, "status": 12345}],'
        b' "task": {"scene": "SOMETHING_NEW"}}]}'
    )
    page = ASSETS_PAGE_DECODER.decode(body)
    work = page.history[0].works[0]
    assert (work.type, work.content_type, work.status) == ("m2v_future_v9", "hologram", 12345)
    assert page.history[0].task is not None and page.history[0].task.scene == "SOMETHING_NEW"


def test_nullable_inputs_accept_null_and_values() -> None:
    """Inputs' token/blobStorage/cover/fromWorkId/fromUploadId accept null and values."""
    body = (
        b'{"inputs": [{"token": "t", "blobStorage": "b", "cover": "c", "fromWorkId": 5,'
        b' "fromUploadId": 6}, {"token": null, "fromWorkId": null}]}'
    )
    info = msgspec.json.decode(body, type=models.TaskInfo)
    assert info.inputs[0].from_work_id == 5 and info.inputs[0].from_upload_id == 6
    assert info.inputs[0].blob_storage == "b"
    assert info.inputs[1].token is None and info.inputs[1].from_work_id is None


def test_no_prompt_argument() -> None:
    """A work without a prompt argument has prompt None; a failed work is not succeeded."""
    work = msgspec.json.decode(
        b'{"status": 50, "taskInfo": {"arguments": [{"name": "duration", "value": "5"}]}}',
        type=Work,
    )
    assert work.prompt is None and work.succeeded is False


def test_wrong_types_are_validation_errors() -> None:
    """A field of the wrong type is refused by the decoder (the session maps it to DecodeError)."""
    with pytest.raises(msgspec.ValidationError, match=r"workId"):
        ASSETS_PAGE_DECODER.decode(b'{"history": [{"works": [{"workId": "x"}]}]}')


def test_structs_are_tuned() -> None:
    """Structs are kw_only, gc=False and camelCase on the wire; decoders are module-level."""
    for cls in (AssetsPage, Work, models.HistoryItem, models.TaskInput, models.Ticket):
        config = cls.__struct_config__
        assert config.gc is False
        assert config.forbid_unknown_fields is False
        assert all(f.required is False for f in msgspec.structs.fields(cls))
        with pytest.raises(TypeError):
            cls(None)  # positional arguments are refused: kw_only
    assert msgspec.structs.fields(Work)[0].encode_name == "workId"
    assert isinstance(models.ASSETS_PAGE_DECODER, msgspec.json.Decoder)
    assert models.ASSETS_PAGE_DECODER.type is AssetsPage


def test_models_reexported() -> None:
    """Every model is importable from the package root."""
    for name in models.__all__:
        assert getattr(kling_async, name) is getattr(models, name)
