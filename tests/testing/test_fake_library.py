"""FakeLibrary: the generated pages, without a server."""

from __future__ import annotations

import itertools
import json
import pathlib
import tracemalloc
from typing import Any

import msgspec
import pytest

from kling_async.testing import FakeLibrary

SAMPLE = pathlib.Path(__file__).parent.parent / "fixtures" / "assets-sample-200.json"

# The documented TypeScript model (docs: assets-model.ts), as JSON types. A tuple allows
# several types; a one-element list is "a list of"; a dict is an object with exactly these keys.
MEDIA = {"resource": str, "height": int, "width": int, "duration": int, "resourceKey": str}
INPUT = {
    "name": str,
    "inputType": str,
    "token": (str, None),
    "blobStorage": (str, None),
    "url": str,
    "cover": (str, None),
    "fromWorkId": (int, None),
    "fromUploadId": (int, None),
}
TASK_INFO = {
    "type": str,
    "inputs": [INPUT],
    "arguments": [{"name": str, "value": str}],
    "extraArgs": "object",
    "callbackPayloads": list,
    "scene": str,
}
WORK = {
    "workId": int,
    "workItemId": int,
    "taskId": int,
    "userId": int,
    "type": str,
    "status": int,
    "contentType": str,
    "resource": MEDIA,
    "cover": MEDIA,
    "starNum": int,
    "cloneCount": int,
    "reportNum": int,
    "createTime": int,
    "taskInfo": TASK_INFO,
    "selfAttitude": str,
    "selfComment": {"rate": int, "tags": list, "content": str, "prompts": list},
    "favored": bool,
    "starred": bool,
    "publishStatus": str,
    "deleted": bool,
    "publishTime": int,
    "submitTime": int,
    "lipSyncStatus": int,
    "downloadInfo": {"fileTypes": [{"type": str, "watermark": bool}]},
    "allowPublish": bool,
}
MODEL = {
    "limitations": [{"type": str, "remaining": int, "limit": int}],
    "history": [
        {
            "works": [WORK],
            "task": {
                "id": int,
                "userId": int,
                "type": str,
                "scene": str,
                "status": int,
                "taskInfo": TASK_INFO,
                "favored": bool,
                "deleted": bool,
                "viewed": bool,
                "createTime": int,
                "updateTime": int,
                "viewTime": int,
            },
            "etaTime": int,
            "etaTimeOverSla": bool,
            "queuingEtaTime": int,
            "originEtaTime": int,
            "originQueuingEtaTime": int,
            "currentTimestamp": int,
        }
    ],
    "userPoints": {
        "points": [
            {
                "orderId": str,
                "type": str,
                "amount": int,
                "balance": int,
                "startTime": int,
                "endTime": int,
            }
        ],
        "total": int,
    },
    "userTickets": {
        "ticket": [
            {
                "orderId": str,
                "type": str,
                "packageType": str,
                "amount": int,
                "balance": int,
                "startTime": int,
                "endTime": int,
            }
        ]
    },
}


def check(value: Any, schema: Any, path: str, seen: set[tuple[str, str]]) -> None:
    """Assert ``value`` matches ``schema``; record (path, type name) of every leaf seen."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), path
        assert set(value) == set(schema), (path, set(value) ^ set(schema))
        for key, sub in schema.items():
            check(value[key], sub, f"{path}.{key}", seen)
    elif isinstance(schema, list):
        assert isinstance(value, list), path
        for item in value:
            check(item, schema[0], f"{path}[]", seen)
        seen.add((path, "nonempty" if value else "empty"))
    elif schema == "object":
        assert isinstance(value, dict), path
        seen.add((path, "nonempty" if value else "empty"))
    else:
        options = schema if isinstance(schema, tuple) else (schema,)
        kind = type(value)
        allowed = [t for t in options if (value is None if t is None else kind is t)]
        assert allowed, (path, value, options)
        seen.add((path, "null" if value is None else kind.__name__))


def test_every_model_field_present_with_documented_types() -> None:
    """Every field of the TS model is on every generated page, with its JSON type."""
    library = FakeLibrary(300, seed=3)
    seen: set[tuple[str, str]] = set()
    for page_num in (1, 2, 3):
        check(library.page(page_num, 100), MODEL, "$", seen)
    inp = "$.history[].works[].taskInfo.inputs[]"
    for field in ("token", "blobStorage", "cover", "fromWorkId", "fromUploadId"):
        assert (f"{inp}.{field}", "null") in seen, field
        assert {(f"{inp}.{field}", "str"), (f"{inp}.{field}", "int")} & seen, field
    assert ("$.history[].works[].taskInfo.extraArgs", "nonempty") in seen
    assert ("$.history[].works[].taskInfo.extraArgs", "empty") in seen


def test_keys_match_the_documentation_sample() -> None:
    """The generated JSON has the same nested key sets as the documentation's sample page."""

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k != "extraArgs"}
        if isinstance(value, list):
            return [shape(value[0])] if value else []
        return None

    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    page = FakeLibrary(40, seed=0).page(1)
    video = next(e for e in page["history"] if e["task"]["type"] == "m2v_img2video_hq")
    assert shape(video) == shape(sample["history"][0])
    assert shape({k: v for k, v in page.items() if k != "history"}) == shape(
        {k: v for k, v in sample.items() if k != "history"}
    )


def test_content_kinds_works_and_arguments() -> None:
    """Video/audio tasks have one work, image tasks four; types, arguments, file types fit."""
    page = FakeLibrary(400, seed=1).page(1, 400)
    kinds: dict[str, set[str]] = {"video": set(), "image": set(), "audio": set()}
    statuses = set()
    for entry in page["history"]:
        works, task = entry["works"], entry["task"]
        content = works[0]["contentType"]
        kinds[content].add(task["type"])
        args = {a["name"]: a["value"] for a in task["taskInfo"]["arguments"]}
        assert {"prompt", "negative_prompt", "kling_version"} <= set(args)
        assert task["taskInfo"] == works[0]["taskInfo"]
        if content == "image":
            assert args["imageCount"] == "4"
            assert [w["workItemId"] for w in works] == [0, 1, 2, 3]
            assert len({w["workId"] for w in works}) == 4
        else:
            assert args["duration"] in ("5", "10")
            assert [w["workItemId"] for w in works] == [0]
        for work in works:
            assert work["taskId"] == task["id"]
            assert work["type"] == task["type"]
            assert work["contentType"] == content
            statuses.add(work["status"])
            types = [ft["type"] for ft in work["downloadInfo"]["fileTypes"]]
            if work["status"] == 99:
                expected = {"video": ["MP4"], "image": ["PNG"], "audio": ["MP3", "WAV"]}
                assert types == expected[content]
                if content == "video":
                    assert work["resource"]["duration"] == int(args["duration"]) * 1000 + 41
    assert kinds["video"] >= {"m2v_txt2video_hq", "m2v_img2video_hq"}
    assert kinds["image"] == {"mmu_txt2img_aiweb", "mmu_img2img_aiweb"}
    assert kinds["audio"] == {"m2v_audio_gen", "mmu_txt2audio"}
    assert 99 in statuses and 50 in statuses and statuses & {5, 10}


def test_ids_unique_and_times_strictly_decreasing() -> None:
    """workIds are unique 9+ digit ints over the library; createTime strictly decreases."""
    library = FakeLibrary(3000, seed=5)
    work_ids: list[int] = []
    times: list[int] = []
    for page_num in range(1, 4):
        for entry in library.page(page_num, 1000)["history"]:
            times.append(entry["task"]["createTime"])
            work_ids.extend(w["workId"] for w in entry["works"])
    assert len(times) == 3000
    assert len(set(work_ids)) == len(work_ids)
    assert min(work_ids) >= 100_000_000
    assert all(a > b for a, b in itertools.pairwise(times))


def test_prompts_non_ascii_ratio() -> None:
    """Some prompts are non-ASCII by default; non_ascii=0 makes them all ASCII."""

    def prompts(library: FakeLibrary) -> list[str]:
        return [
            a["value"]
            for e in library.page(1, 200)["history"]
            for a in e["task"]["taskInfo"]["arguments"]
            if a["name"] == "prompt"
        ]

    mixed = prompts(FakeLibrary(200))
    assert any(not p.isascii() for p in mixed) and any(p.isascii() for p in mixed)
    assert all(p.isascii() for p in prompts(FakeLibrary(200, non_ascii=False)))
    assert not any(p.isascii() for p in prompts(FakeLibrary(200, non_ascii=1.0)))


def test_determinism() -> None:
    """The same seed gives identical bytes; another seed gives other content and ids."""
    assert FakeLibrary(500, seed=7).page_bytes(3, 50) == FakeLibrary(500, seed=7).page_bytes(3, 50)
    assert FakeLibrary(500, seed=7).page_bytes(3, 50) != FakeLibrary(500, seed=8).page_bytes(3, 50)
    page = FakeLibrary(500, seed=7).page(2, 10)
    assert page == msgspec.json.decode(FakeLibrary(500, seed=7).page_bytes(2, 10))


def test_paging_counts_tasks_and_ends_empty() -> None:
    """pageSize counts history entries; a page past the end has an empty history."""
    library = FakeLibrary(95)
    sizes = [len(library.page(n, 40)["history"]) for n in (1, 2, 3, 4)]
    assert sizes == [40, 40, 15, 0]
    empty = library.page(4, 40)
    assert set(empty) == {"limitations", "history", "userPoints", "userTickets"}
    with pytest.raises(ValueError):
        library.page(0)
    with pytest.raises(ValueError):
        library.page(1, 0)
    with pytest.raises(ValueError):
        library.page(1, 40, "gif")


def listing(library: FakeLibrary, content_type: str | None = None) -> list[int]:
    """Every task id of the listing, through pages of 7."""
    ids: list[int] = []
    page_num = 1
    while history := library.page(page_num, 7, content_type)["history"]:
        ids.extend(e["task"]["id"] for e in history)
        page_num += 1
    return ids


def test_content_type_filter_matches_unfiltered_listing() -> None:
    """A filtered listing is the unfiltered one restricted to that type, also after edits."""
    library = FakeLibrary(120, seed=2)
    library.insert_tasks(3, content_type="audio")
    library.insert_tasks(4)
    first_page = library.page(1, 120)["history"]
    library.delete_tasks([0, 9, 10, 50])
    single = next(e for e in first_page[60:] if len(e["works"]) == 1)
    library.delete_works([single["works"][0]["workId"]])
    everything = library.page(1, 1000)["history"]
    assert library.count() == len(everything) == 120 + 7 - 5
    for content_type in ("video", "image", "audio"):
        expected = [
            e["task"]["id"] for e in everything if e["works"][0]["contentType"] == content_type
        ]
        assert listing(library, content_type) == expected
        assert library.count(content_type) == len(expected)
    assert listing(library) == [e["task"]["id"] for e in everything]


def test_lazy_generation_of_a_huge_library() -> None:
    """Page 25,000 of a 1,000,000-task library costs O(page) memory, not O(library)."""
    tracemalloc.start()
    try:
        library = FakeLibrary(1_000_000, seed=0)
        body = library.page(25_000, 40)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    history = body["history"]
    assert len(history) == 40
    assert history[-1]["task"]["id"] == library.id_base  # the oldest task has serial 0
    assert library.page(25_001, 40)["history"] == []


def test_inserts_are_newest_and_can_be_pending() -> None:
    """Inserted tasks come first, newer than all; pending works finish on demand."""
    library = FakeLibrary(50, seed=4)
    before = library.page(1, 1)["history"][0]
    ids = library.insert_tasks(2, content_type="image", pending=True)
    assert len(ids) == 8
    head = library.page(1, 3)["history"]
    assert [w["workId"] for w in head[1]["works"] + head[0]["works"]] == ids
    assert head[2] == {**before, "currentTimestamp": head[2]["currentTimestamp"]}
    assert (
        head[0]["task"]["createTime"] > head[1]["task"]["createTime"] > before["task"]["createTime"]
    )
    assert {w["status"] for w in head[0]["works"]} == {5}
    assert head[0]["works"][0]["downloadInfo"]["fileTypes"] == []
    library.set_status(ids[0], 99)
    assert library.work_status(ids[0]) == 99
    assert sorted(library.complete_pending()) == ids[1:]
    assert {w["status"] for e in library.page(1, 2)["history"] for w in e["works"]} == {99}
    with pytest.raises(KeyError):
        library.set_status(12345, 99)


def test_deleting_single_works_of_an_image_task() -> None:
    """Deleting some works of a task hides them; deleting all removes the task."""
    library = FakeLibrary(30, seed=0)
    entry = next(e for e in library.page(1, 30)["history"] if len(e["works"]) == 4)
    ids = [w["workId"] for w in entry["works"]]
    library.delete_works(ids[:2])
    again = next(
        e for e in library.page(1, 30)["history"] if e["task"]["id"] == entry["task"]["id"]
    )
    assert [w["workId"] for w in again["works"]] == ids[2:]
    library.delete_works(ids[2:])
    assert library.count() == 29
    assert not any(e["task"]["id"] == entry["task"]["id"] for e in library.page(1, 30)["history"])
    with pytest.raises(KeyError):
        library.delete_works([ids[0]])
    with pytest.raises(IndexError):
        library.delete_tasks([29])


def test_file_bytes_are_deterministic_and_sized() -> None:
    """CDN file content is derived from the work id and has the requested size."""
    data = FakeLibrary.file_bytes(123456789, "MP4", 10_000)
    assert len(data) == 10_000
    assert data.startswith(b"KLINGFAKE 123456789.mp4\n")
    assert data == FakeLibrary.file_bytes(123456789, "mp4", 10_000)
    assert data != FakeLibrary.file_bytes(123456780, "MP4", 10_000)
