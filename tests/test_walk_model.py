"""``model=``: each work decoded into the caller's own Struct, over loopback servers.

The walk reads the ids (and times, and a watcher the status) it needs itself, so a model may
leave them out; a model that cannot decode works is refused when the call is made, before any
request; drift in the model's fields is read leniently, as for :class:`Work`.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest

from kling_async import DecodeError, KlingSession, Work
from kling_async.testing import FakeKlingServer, Faults

from .conftest import TOKEN, Scripted
from .test_schema_drift import library_pages, serve

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


class Small(msgspec.Struct, rename="camel", gc=False):
    """Five fields a typical user reads, declared like Work."""

    work_id: int | None = None
    create_time: int | None = None
    status: int | None = None
    type: str | None = None
    content_type: str | None = None


class NoIds(msgspec.Struct, rename="camel"):
    """No id, no time, no status: the walk must read them itself."""

    type: str | None = None
    resource: dict[str, Any] | None = None


def small_of(work: Work) -> Small:
    return Small(
        work_id=work.work_id,
        create_time=work.create_time,
        status=work.status,
        type=work.type,
        content_type=work.content_type,
    )


async def full_and_model(
    server: FakeKlingServer, model: type[Any], **walk: Any
) -> tuple[list[Work], list[Any]]:
    async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:
        full = [w async for w in kling.iter_works(page_size=20, **walk)]
        mine = [w async for w in kling.iter_works(page_size=20, model=model, **walk)]
    return full, mine


@pytest.mark.parametrize("prefetch", [0, 2])
async def test_own_model_yields_the_same_works_decoded_as_it(prefetch: int) -> None:
    """Every work once, in order, each the user's Struct holding what Work holds."""
    async with FakeKlingServer(tasks=150, seed=3) as server:
        full, mine = await full_and_model(server, Small, prefetch=prefetch)
    assert mine and all(type(w) is Small for w in mine)
    assert mine == [small_of(w) for w in full]


async def test_a_model_without_ids_walks_exactly_once_with_arrivals() -> None:
    """The walk decodes ids apart when the model lacks them: works arriving during the walk
    are still deduplicated, and nothing is lost."""
    async with FakeKlingServer(tasks=200, seed=5) as server:
        before = len(server.library.page(1, 10_000)["history"])
        server.faults = Faults(inserts_per_request=2, rate=0.0, kinds=(), seed=1)
        async with KlingSession(server.token, base_url=server.base_url, **FAST) as kling:
            walk = kling.walk(page_size=20, model=NoIds, raw=True)
            got: list[tuple[NoIds, int]] = []
            async for batch in walk:
                ids = [msgspec.json.decode(raw)["workId"] for raw in batch.raw_works]
                got.extend(zip(batch.works, ids, strict=True))
    ids = [wid for _, wid in got]
    assert len(ids) == len(set(ids)), "a work yielded twice"
    assert len(ids) >= before  # every work there at the start, plus some that arrived
    assert all(type(w) is NoIds for w, _ in got)
    assert walk.stats.duplicates > 0  # the arrivals did push works across pages


async def test_since_holds_for_a_model_without_times() -> None:
    async with FakeKlingServer(tasks=120, seed=2) as server:
        times = [
            w["createTime"]
            for item in server.library.page(1, 10_000)["history"]
            for w in item["works"]
        ]
        since = sorted(times)[len(times) // 2]
        full, mine = await full_and_model(server, NoIds, since=since)
    assert full and all(w.create_time is not None and w.create_time > since for w in full)
    assert len(mine) == len(full)
    assert [w.type for w in mine] == [w.type for w in full]


async def test_batches_carry_the_model_and_the_page_on_demand() -> None:
    async with (
        FakeKlingServer(tasks=45, seed=1) as server,
        KlingSession(server.token, base_url=server.base_url) as kling,
    ):
        batches = [b async for b in kling.walk(page_size=20, model=Small)]
    assert all(type(w) is Small for b in batches for w in b.works)
    first = batches[0]
    # The whole page as sent is still there, decoded from the bytes when asked for.
    assert [small_of(w) for w in first.page.works()] == first.works


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        (dict, TypeError, "msgspec.Struct"),
        (Work(), TypeError, "msgspec.Struct"),
        (
            msgspec.defstruct("Snake", [("work_id", int | None, None)]),
            ValueError,
            r"work_id \(read as 'work_id'\).*rename=\"camel\"",
        ),
        (
            msgspec.defstruct("Typo", [("wrok_id", int | None, None)], rename="camel"),
            ValueError,
            "wrokId",
        ),
        (
            msgspec.defstruct("Rows", [("status", int | None, None)], array_like=True),
            ValueError,
            "array_like",
        ),
        (
            msgspec.defstruct("Strict", [("status", int | None, None)], forbid_unknown_fields=True),
            ValueError,
            "unknown fields",
        ),
        (msgspec.defstruct("Tagged", [("status", int | None, None)], tag=True), ValueError, "tag"),
        # The walk reads ids, times and status off the model when it has them: ints only.
        (
            msgspec.defstruct("StatusText", [("status", str | None, None)], rename="camel"),
            ValueError,
            r"status must be int \| None",
        ),
        (
            msgspec.defstruct("TimeText", [("create_time", str | None, None)], rename="camel"),
            ValueError,
            r"create_time must be int \| None",
        ),
        (
            msgspec.defstruct("FloatId", [("work_id", float | None, None)], rename="camel"),
            ValueError,
            r"work_id must be int \| None",
        ),
        (
            msgspec.defstruct("Mistyped", [("favored", int | None, None)], rename="camel"),
            ValueError,
            "favored is int, Work's is bool",
        ),
        (
            msgspec.defstruct("Required", [("type", str)], rename="camel"),
            ValueError,
            "type has no default",
        ),
        (
            msgspec.defstruct("FlatPart", [("resource", str | None, None)], rename="camel"),
            ValueError,
            "resource must be an object",
        ),
    ],
)
async def test_a_model_that_cannot_decode_works_is_refused_before_any_request(
    scripted: Scripted, model: Any, error: type[Exception], match: str
) -> None:
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
        with pytest.raises(error, match=match):
            kling.iter_works(model=model)
        with pytest.raises(error, match=match):
            kling.walk(model=model)
        with pytest.raises(error, match=match):
            kling.watch_works(model=model)
    assert scripted.requests == []


class MyResource(msgspec.Struct, rename="camel"):
    resource: str | None = None
    duration: int | None = None


class Nested(msgspec.Struct, rename="camel"):
    """A part as the user's own smaller Struct, another as dict, another as sent."""

    work_id: int | None = None
    resource: MyResource | None = None
    task_info: dict[str, Any] | None = None
    cover: msgspec.Raw | None = None


async def test_a_model_may_declare_parts_its_own_way() -> None:
    async with FakeKlingServer(tasks=30, seed=4) as server:
        full, mine = await full_and_model(server, Nested)
    assert len(mine) == len(full)
    for work, nested in zip(full, mine, strict=True):
        assert nested.work_id == work.work_id
        if work.resource is not None:
            assert nested.resource == MyResource(
                resource=work.resource.resource, duration=work.resource.duration
            )
        if work.task_info is not None:
            assert nested.task_info is not None
            assert nested.task_info.get("type") == work.task_info.type


async def test_drift_in_a_model_field_is_read_leniently(
    scripted: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    pages = library_pages()
    pages[0]["history"][0]["works"][0]["status"] = "99"
    pages[0]["history"][1]["works"][0]["type"] = {"new": "shape"}
    serve(scripted, pages)
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
        with caplog.at_level(logging.WARNING, logger="kling_async"):
            got = [w async for w in kling.iter_works(page_size=10, model=Small)]
    sent = [w for p in pages for item in p["history"] for w in item["works"]]
    assert len(got) == len(sent)
    assert got[0].status == 99
    second_entry = len(pages[0]["history"][0]["works"])  # history[1].works[0]
    assert got[second_entry].type is None
    assert got[second_entry].work_id == pages[0]["history"][1]["works"][0]["workId"]
    assert any("schema drift" in r.getMessage() for r in caplog.records)


async def test_a_missing_work_id_fails_the_page_whatever_the_model(scripted: Scripted) -> None:
    pages = library_pages()
    del pages[1]["history"][3]["works"][0]["workId"]
    serve(scripted, pages)
    async with KlingSession(TOKEN, base_url=scripted.base_url) as kling:
        for model in (Small, NoIds):
            with pytest.raises(DecodeError, match=r"history\[3\]\.works\[0\]\.workId"):
                _ = [w async for w in kling.iter_works(page_size=10, model=model)]


async def test_watch_works_with_a_model_without_ids() -> None:
    """A watcher reads ids, times and status itself: new works come oldest first, each once,
    and give_back() works with the model's instances."""
    async with (
        FakeKlingServer(tasks=30, seed=8) as server,
        KlingSession(server.token, base_url=server.base_url, **FAST) as kling,
    ):
        watcher = kling.watch_works(
            interval=0.01, since=0, only_succeeded=False, model=NoIds, max_polls=1
        )
        got = [w async for w in watcher]
        full = [w async for w in kling.iter_works()]
        again = kling.watch_works(
            interval=0.01, since=0, only_succeeded=False, model=NoIds, max_polls=1
        )
        first = await again.__anext__()
        again.give_back(first)
        with pytest.raises(ValueError, match="yielded last"):
            again.give_back(first)
        await again.aclose()
        # With an id in the model, a copy of the work is taken back too (as with Work).
        small = kling.watch_works(
            interval=0.01, since=0, only_succeeded=False, model=Small, max_polls=1
        )
        mine = await small.__anext__()
        small.give_back(msgspec.structs.replace(mine))
        await small.aclose()
    assert all(type(w) is NoIds for w in got)
    assert [w.type for w in got] == [w.type for w in reversed(full)]
    assert first == got[0]
