"""The cheaper default model (issue #14): tuples and lazy parts read back what the eager model
read, leniently, and a decoded work leaves few GC-tracked objects.

The reference is the model as it was before (``benchmarks/_model_before.py``, frozen): for the
same bytes, every field of the new model, lazy parts read, equals the old one's, arrays as
tuples where it had lists.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks._model_before import TODAY_DECODER, TodayAssetsPage, TodayWork
from kling_async._lenient import decode_lenient
from kling_async.models import (
    ASSETS_PAGE_DECODER,
    Argument,
    AssetsPage,
    DownloadInfo,
    FileType,
    HistoryItem,
    Resource,
    SelfComment,
    Task,
    TaskInfo,
    Work,
)
from kling_async.testing import FakeLibrary

from .conftest import FIXTURES

WORK_DECODER = msgspec.json.Decoder(Work)
TODAY_WORK_DECODER = msgspec.json.Decoder(TodayWork)
LAZY = ("resource", "cover", "task_info", "self_comment", "download_info")


def plain(obj: Any) -> Any:
    """A model as builtins, tuples as lists, lazy parts decoded."""
    if isinstance(obj, (Work, AssetsPage)):
        obj = obj.load()
    return msgspec.json.decode(msgspec.json.encode(obj))


def pages() -> list[bytes]:
    bodies = [(FIXTURES / "assets-sample-200.json").read_bytes()]
    for seed, non_ascii in ((0, 0.0), (3, 1.0)):
        library = FakeLibrary(300, seed=seed, non_ascii=non_ascii)
        bodies += [library.page_bytes(n, 40) for n in (1, 4)]
    return bodies


@pytest.mark.parametrize("body", pages(), ids=lambda b: f"{len(b)}B")
def test_every_field_reads_back_as_before(body: bytes) -> None:
    """Each field of each work, each task and the page equals the eager model's."""
    now, before = ASSETS_PAGE_DECODER.decode(body), TODAY_DECODER.decode(body)
    assert plain(now) == msgspec.to_builtins(before)
    for new, old in zip(now.works(), before.works(), strict=True):
        for field in msgspec.structs.fields(TodayWork):
            assert plain(getattr(new, field.name)) == msgspec.to_builtins(
                getattr(old, field.name)
            ), field.name
        assert (new.prompt, new.created_at, new.succeeded) == (
            old.prompt,
            old.created_at,
            old.succeeded,
        )
    for item_new, item_old in zip(now.history, before.history, strict=True):
        assert plain(item_new.task) == msgspec.to_builtins(item_old.task)


def test_arrays_are_tuples_and_empty_when_missing() -> None:
    page = ASSETS_PAGE_DECODER.decode(b'{"history":[{"works":[{"taskInfo":{},"selfComment":{}}]}]}')
    work = page.history[0].works[0]
    assert page.limitations == () and isinstance(page.history, tuple)
    assert work.task_info is not None and work.self_comment is not None
    assert work.task_info.inputs == () and work.task_info.arguments == ()
    assert work.task_info.callback_payloads == () and work.task_info.extra_args == {}
    assert work.self_comment.tags == () and work.self_comment.prompts == ()
    assert DownloadInfo().file_types == ()
    assert work.resource is None and work.cover is None and work.download_info is None


def test_lazy_parts_decode_once_and_can_be_set() -> None:
    work = WORK_DECODER.decode(b'{"workId":1,"resource":{"width":720},"cover":null}')
    first = work.resource
    assert first == Resource(width=720) and work.resource is first  # kept after the first read
    assert work.cover is None
    work.resource = None
    assert work.resource is None


def test_construction_by_keyword_equality_and_repr() -> None:
    """A work built by keyword equals the same work decoded; repr shows decoded parts."""
    body = (
        b'{"workId":7,"resource":{"resource":"u"},"taskInfo":{"arguments":'
        b'[{"name":"prompt","value":"p"}]},"downloadInfo":{"fileTypes":[{"type":"MP4"}]}}'
    )
    built = Work(
        work_id=7,
        resource=Resource(resource="u"),
        task_info=TaskInfo(arguments=(Argument(name="prompt", value="p"),)),
        download_info=DownloadInfo(file_types=(FileType(type="MP4"),)),
    )
    assert WORK_DECODER.decode(body) == built
    assert (WORK_DECODER.decode(body) != built) is False
    assert WORK_DECODER.decode(body) != Work(work_id=7)
    assert built.prompt == "p" and WORK_DECODER.decode(body).prompt == "p"
    assert "Raw" not in repr(WORK_DECODER.decode(body))
    assert repr(WORK_DECODER.decode(body)) == repr(built)
    assert HistoryItem(task=Task(id=1)) == msgspec.json.decode(
        b'{"task":{"id":1}}', type=HistoryItem
    )


@pytest.mark.parametrize("body", pages()[:3], ids=lambda b: f"{len(b)}B")
def test_encode_round_trips(body: bytes) -> None:
    """Encoding a page (lazy parts read or not) and decoding it again gives an equal page."""
    page = ASSETS_PAGE_DECODER.decode(body)
    assert ASSETS_PAGE_DECODER.decode(msgspec.json.encode(page)) == page
    again = ASSETS_PAGE_DECODER.decode(body)
    assert ASSETS_PAGE_DECODER.decode(msgspec.json.encode(again.load())) == page
    assert msgspec.to_builtins(again)  # every part decoded by load(): no Raw left


def test_to_builtins_needs_load_for_unread_parts() -> None:
    """The documented caveat: a part not read yet is a msgspec.Raw to to_builtins."""
    work = WORK_DECODER.decode(b'{"workId":1,"selfComment":{"rate":5}}')
    with pytest.raises(TypeError):
        msgspec.to_builtins(work)
    assert msgspec.to_builtins(work.load()) == {"workId": 1, "selfComment": {"rate": 5}}


# -- lenient lazy parts ------------------------------------------------------------------------

DRIFTED_WORKS = [
    b'{"workId":1,"resource":{"duration":5041.0,"width":"720"}}',
    b'{"workId":1,"resource":[{"url":"x"}],"cover":"none"}',
    b'{"workId":1,"selfComment":"nice","downloadInfo":{"fileTypes":[{"type":1},"MP4"]}}',
    b'{"workId":1,"taskInfo":{"arguments":[{"name":"a","value":5},"x",{"name":"b"}]}}',
    b'{"workId":1,"taskInfo":{"inputs":{"not":"a list"},"extraArgs":[1],"scene":7}}',
    b'{"workId":1,"status":"99","taskInfo":{"arguments":[{"name":"prompt","value":"p"}]}}',
    b'{"workId":1,"downloadInfo":null,"taskInfo":[],"selfComment":{"tags":"x","rate":1.0}}',
]


@pytest.mark.parametrize("body", DRIFTED_WORKS)
def test_lazy_parts_are_as_lenient_as_eager_decoding(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A drifted part reads back what decode_lenient gave for the whole work before; reading
    never raises; drift is logged (once per process and path)."""
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        now = decode_lenient(body, WORK_DECODER, Work)
        before = decode_lenient(body, TODAY_WORK_DECODER, TodayWork)
        assert plain(now) == msgspec.to_builtins(before)
    if body != DRIFTED_WORKS[5]:  # that one drifts outside the lazy parts only
        assert any("schema drift at Work." in r.getMessage() for r in caplog.records)


def test_drift_in_a_lazy_part_is_logged_once_per_path(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        for _ in range(3):
            assert WORK_DECODER.decode(b'{"selfComment":"x"}').self_comment is None
    assert len([r for r in caplog.records if "Work.selfComment" in r.getMessage()]) == 1


def test_a_drifted_page_keeps_its_lazy_parts() -> None:
    """The lax path (a drifted field elsewhere) hands lazy parts over as sent, not dropped."""
    body = (
        b'{"history":[{"works":[{"workId":1,"status":"99","taskInfo":{"type":"t"}}],'
        b'"task":{"id":2}}]}'
    )
    page = decode_lenient(body, ASSETS_PAGE_DECODER, AssetsPage)
    work = page.history[0].works[0]
    assert work.status == 99 and work.task_info == TaskInfo(type="t")
    assert page.history[0].task == Task(id=2)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
PART_KEYS = {
    "resource": ["resource", "height", "width", "duration", "resourceKey"],
    "taskInfo": ["type", "inputs", "arguments", "extraArgs", "callbackPayloads", "scene"],
    "selfComment": ["rate", "tags", "content", "prompts"],
    "downloadInfo": ["fileTypes"],
}


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    part=st.sampled_from(sorted(PART_KEYS)),
    data=st.data(),
)
def test_any_drift_in_a_part_reads_as_eager_decoding_gave(part: str, data: st.DataObject) -> None:
    """Random values in any field of a part (or the part itself): the lazy read never raises
    and equals the eager model's lenient decode."""
    library = FakeLibrary(3, seed=data.draw(st.integers(0, 3)))
    work = library.page(1, 1)["history"][0]["works"][0]
    if data.draw(st.booleans()):
        work[part] = data.draw(json_values)
    else:
        if not isinstance(work.get(part), dict):
            work[part] = {}
        work[part][data.draw(st.sampled_from(PART_KEYS[part]))] = data.draw(json_values)
    body = msgspec.json.encode(work)
    lazy = WORK_DECODER.decode(body)  # never fails: the part is kept as sent
    before = decode_lenient(body, TODAY_WORK_DECODER, TodayWork)
    assert plain(lazy) == msgspec.to_builtins(before)
    assert plain(decode_lenient(body, WORK_DECODER, Work)) == msgspec.to_builtins(before)


# -- GC-tracked objects --------------------------------------------------------------------------


def tracked_per_work(decoder: msgspec.json.Decoder[Any], body: bytes, works: int) -> float:
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        page = decoder.decode(body)
        count = len(gc.get_objects()) - before
        del page
    finally:
        gc.enable()
    return count / works


@pytest.mark.parametrize("page_size", [20, 250])
def test_a_decoded_work_leaves_a_quarter_of_the_tracked_objects(page_size: int) -> None:
    """At most a quarter of before's GC-tracked objects per decoded work (a count, not a
    timing): before, every nested list was one (about 8 per work)."""
    body = FakeLibrary(1000, seed=1).page_bytes(1, page_size)
    works = len(TODAY_DECODER.decode(body).works())
    before = tracked_per_work(TODAY_DECODER, body, works)
    now = tracked_per_work(ASSETS_PAGE_DECODER, body, works)
    assert before >= 7
    assert now <= before / 4
    assert now <= 10 / 4


def test_frozen_reference_is_the_old_shape() -> None:
    """The reference model keeps lists: it is the "before" of the comparison."""
    page = TODAY_DECODER.decode(b'{"history":[{"works":[{"taskInfo":{}}]}]}')
    assert isinstance(page, TodayAssetsPage) and page.history[0].works[0].task_info is not None
    assert page.history[0].works[0].task_info.inputs == []
    assert SelfComment().tags == ()


def test_load_lets_the_page_bytes_go() -> None:
    """An unread part is a slice of its page: a work kept holds the page's bytes until
    load() (as the README says), then no longer."""
    body = FakeLibrary(30, seed=2).page_bytes(1, 30)
    page = ASSETS_PAGE_DECODER.decode(body)
    work = page.history[0].works[0]
    del page
    gc.collect()
    held = sys.getrefcount(body)
    assert held > 2  # this name, the call's argument, and the work's unread parts
    work.load()
    gc.collect()
    assert sys.getrefcount(body) == 2
