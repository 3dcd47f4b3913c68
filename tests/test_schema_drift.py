"""Schema drift: a field of an unexpected type never stops a walk or an export.

The export writes every work byte-exact; ``iter_works`` yields every work with the field
converted where msgspec's lax mode does it losslessly, else None; one WARNING per field path
per walk and a count in ``WalkStats.drift_fields``. Only ``history`` and each work's integer
``workId`` may fail a page, with a ``DecodeError`` naming the path.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kling_async import DecodeError, KlingSession
from kling_async._export import ExportConfig, run_export
from kling_async._lenient import decode_lenient, parse_path
from kling_async.models import Work
from kling_async.testing import FakeLibrary

from .conftest import TOKEN, Scripted

LOOPBACK = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
PAGE_SIZE = 10


def library_pages(tasks: int = 25, seed: int = 7) -> list[dict[str, Any]]:
    """The fake library's pages as plain data, the empty page after the last included."""
    library = FakeLibrary(tasks, seed=seed)
    pages = []
    n = 1
    while True:
        page = library.page(n, PAGE_SIZE)
        pages.append(page)
        if not page["history"]:
            return pages
        n += 1


def serve(scripted: Scripted, pages: list[dict[str, Any]]) -> list[bytes]:
    """Serve ``pages`` (compact JSON); returns each work's bytes as sent, in order."""
    bodies = [msgspec.json.encode(p) for p in pages]

    async def handler(request: web.Request) -> web.Response:
        n = int(request.query["pageNum"])
        body = bodies[n - 1] if n <= len(bodies) else b'{"history":[]}'
        return web.Response(body=body, content_type="application/json")

    scripted.handle(handler)
    return [msgspec.json.encode(w) for p in pages for item in p["history"] for w in item["works"]]


# -- the examples of the issue -------------------------------------------------------------

# Drift in a lazy part of a work (resource, cover, taskInfo, selfComment, downloadInfo) is
# found when the part is first read, not by the walk: one WARNING per process names it as
# `Work.<part>...`, and the walk's drift_fields does not count it.
DRIFTS: list[
    tuple[str, Callable[[dict[str, Any]], None], Callable[[Work], object], object, str]
] = [
    (
        "resource.duration float",
        lambda w: w["resource"].__setitem__("duration", 5041.0),
        lambda w: w.resource and w.resource.duration,
        5041,
        "Work.resource.duration:",
    ),
    (
        "status as a string",
        lambda w: w.__setitem__("status", "99"),
        lambda w: w.status,
        99,
        "history[].works[].status:",
    ),
    (
        "favored as 0",
        lambda w: w.__setitem__("favored", 0),
        lambda w: w.favored,
        False,
        "history[].works[].favored:",
    ),
    (
        "createTime float",
        lambda w: w.__setitem__("createTime", 1.7e12),
        lambda w: w.create_time,
        1_700_000_000_000,
        "history[].works[].createTime:",
    ),
    (
        "selfComment a string",
        lambda w: w.__setitem__("selfComment", "nice"),
        lambda w: w.self_comment,
        None,
        "Work.selfComment:",
    ),
    (
        "argument value a number",
        lambda w: w["taskInfo"]["arguments"][0].__setitem__("value", 5),
        lambda w: w.task_info and w.task_info.arguments[0].value,
        None,
        "Work.taskInfo.arguments[0].value:",
    ),
    (
        "resource a new nested shape",
        lambda w: w.__setitem__("resource", [{"url": "x"}]),
        lambda w: w.resource,
        None,
        "Work.resource:",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "read", "expected", "where"),
    [d[1:] for d in DRIFTS],
    ids=[d[0] for d in DRIFTS],
)
async def test_each_drift_of_the_issue(
    scripted: Scripted,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mutate: Callable[[dict[str, Any]], None],
    read: Callable[[Work], object],
    expected: object,
    where: str,
) -> None:
    """Every work of every page drifts the same way: the export is byte-exact and complete,
    iter_works yields each work converted (or None), and one WARNING names the field (found
    by the walk, or for a lazy part when it is first read)."""
    pages = library_pages()
    for page in pages:
        for item in page["history"]:
            for work in item["works"]:
                mutate(work)
    sent = serve(scripted, pages)
    out = tmp_path / "w.jsonl"
    result = await run_export(
        ExportConfig(out=str(out), token=TOKEN, base_url=scripted.base_url, page_size=PAGE_SIZE)
    )
    assert result.works == len(sent)
    assert out.read_bytes() == b"".join(line + b"\n" for line in sent)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kling_async"):
        async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
            walk = kling.walk(page_size=PAGE_SIZE)
            works = [w async for batch in walk for w in batch.works]
    assert [w.work_id for w in works] == [msgspec.json.decode(s)["workId"] for s in sent]
    assert all(read(w) == expected for w in works)
    drift = [r for r in caplog.records if "schema drift" in r.getMessage()]
    assert len(drift) == 1, [r.getMessage() for r in drift]  # once, not per work
    assert f"schema drift at {where}" in drift[0].getMessage()
    lazy = where.startswith("Work.")
    assert walk.stats.drift_fields == (0 if lazy else len(sent))


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "is missing"), ("123", "got `str`"), (1.5, "got `float`"), (True, "got `bool`")],
)
async def test_a_bad_work_id_is_the_one_decode_error(
    scripted: Scripted, tmp_path: Path, value: object, reason: str
) -> None:
    """The walk finds its place by work ids: a missing or non-int workId fails the page,
    naming the path; the export keeps the pages before it."""
    pages = library_pages()
    work = pages[1]["history"][3]["works"][0]
    if value is None:
        del work["workId"]
    else:
        work["workId"] = value
    serve(scripted, pages)
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
        with pytest.raises(DecodeError, match=r"history\[3\]\.works\[0\]\.workId") as info:
            _ = [w async for w in kling.iter_works(page_size=PAGE_SIZE)]
    assert reason in str(info.value)
    assert "pageNum=2" in str(info.value)
    out = tmp_path / "w.jsonl"
    with pytest.raises(DecodeError, match=r"history\[3\]\.works\[0\]\.workId"):
        await run_export(
            ExportConfig(out=str(out), token=TOKEN, base_url=scripted.base_url, page_size=PAGE_SIZE)
        )


async def test_iter_pages_and_get_assets_survive_drift(scripted: Scripted) -> None:
    """The whole page (WorkPage.page, get_assets) is read leniently too."""
    pages = library_pages()
    pages[0]["history"][0]["works"][0]["status"] = "99"
    pages[0]["history"][1]["task"]["status"] = {"new": "shape"}
    pages[0]["userPoints"] = "lots"
    serve(scripted, pages)
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
        got = [p async for p in kling.iter_pages(page_size=PAGE_SIZE)]
        first = await kling.get_assets(page_size=PAGE_SIZE)
    assert len(got) == len(pages) - 1  # the empty page past the end is not yielded
    for page in (got[0], first):
        assert page.history[0].works[0].status == 99
        assert page.history[1].task is not None and page.history[1].task.status is None
        assert page.user_points is None


# -- the repair loop, sans I/O ---------------------------------------------------------------


def test_parse_path() -> None:
    """msgspec's error message gives the reason and the path, as steps."""
    assert parse_path("Expected `int | null`, got `float` - at `$.a[3].b_c`") == (
        "Expected `int | null`, got `float`",
        ("a", 3, "b_c"),
    )
    assert parse_path("Expected `object`, got `str`") is None


def test_a_list_element_that_cannot_be_none_is_dropped() -> None:
    """arguments[1] is a string: None is refused in a list of objects, so it goes."""
    decoder = msgspec.json.Decoder(Work)
    data = b'{"workId":1,"taskInfo":{"arguments":[{"name":"a","value":"1"},"x",{"name":"b"}]}}'
    work = decode_lenient(data, decoder, Work)
    assert work.task_info is not None
    assert [a.name for a in work.task_info.arguments] == ["a", "b"]


def test_a_document_of_the_wrong_type_still_fails() -> None:
    """Only fields are repaired: a work that is not an object is refused."""
    with pytest.raises(msgspec.ValidationError):
        decode_lenient(b"[1,2]", msgspec.json.Decoder(Work), Work)


# -- any drift, generated ------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
# Paths of every field of a fake work but workId (the one that may fail the page).
WORK_FIELDS = [
    k for k in library_pages(tasks=1)[0]["history"][0]["works"][0] if k not in ("workId",)
]


@st.composite
def drifted_pages(draw: st.DrawFn) -> list[dict[str, Any]]:
    pages = library_pages(tasks=draw(st.integers(1, 25)), seed=draw(st.integers(0, 3)))
    works = [w for p in pages for item in p["history"] for w in item["works"]]
    for _ in range(draw(st.integers(1, 12))):
        work = works[draw(st.integers(0, len(works) - 1))]
        target = work
        key = draw(st.sampled_from(WORK_FIELDS))
        # Sometimes one level down (resource.duration, taskInfo.type...).
        if isinstance(work.get(key), dict) and work[key] and draw(st.booleans()):
            target = work[key]
            key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(json_values)
    return pages


@LOOPBACK
@given(pages=drifted_pages())
async def test_any_field_drift_is_exported_byte_exact_and_walked(
    scripted: Scripted, pages: list[dict[str, Any]]
) -> None:
    """Random types in any field but workId: the export's lines are the works as sent, all of
    them; iter_works yields every work."""
    sent = serve(scripted, pages)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "w.jsonl"
        config = ExportConfig(
            out=str(out), token=TOKEN, base_url=scripted.base_url, page_size=PAGE_SIZE
        )
        await run_export(config)
        assert out.read_bytes() == b"".join(line + b"\n" for line in sent)
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
        ids = [w.work_id async for w in kling.iter_works(page_size=PAGE_SIZE)]
    assert ids == [msgspec.json.decode(s)["workId"] for s in sent]


async def test_get_assets_refuses_a_history_that_is_not_a_list(scripted: Scripted) -> None:
    """Read as empty, it would pass for the end of the list: a DecodeError instead."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b'{"history": "soon"}', content_type="application/json")

    scripted.handle(handler)
    async with KlingSession(TOKEN, base_url=scripted.base_url, max_retries=0) as kling:
        with pytest.raises(DecodeError, match=r"\$\.history"):
            await kling.get_assets()
