"""sync's plain code: the path template, its sanitising, and where a walk may stop."""

from __future__ import annotations

import pytest

from kling_async._sync import StopRule, sidecar_text
from kling_async._template import (
    DEFAULT_TEMPLATE,
    MAX_COMPONENT_BYTES,
    PathTemplate,
    TemplateError,
    cut_utf8,
    sanitize,
)
from kling_async.models import Argument, TaskInfo, Work

CREATED = 1_714_557_600_123  # 2024-05-01 10:00:00.123 UTC


def work(prompt: str | None = "a cat", **kw: object) -> Work:
    info = TaskInfo(arguments=[Argument(name="prompt", value=prompt)]) if prompt else None
    fields: dict[str, object] = {
        "work_id": 123456789,
        "task_id": 987,
        "create_time": CREATED,
        "status": 99,
        "content_type": "video",
        "type": "m2v_txt2video_hq",
        "task_info": info,
    }
    fields.update(kw)
    return Work(**fields)  # type: ignore[arg-type]


def test_default_template_names_by_date_and_id() -> None:
    """Year and month folders, then the UTC time and the work id."""
    assert PathTemplate().render(work()) == "2024/2024-05/20240501-100000_123456789"
    assert PathTemplate().text == DEFAULT_TEMPLATE


def test_every_field_renders() -> None:
    t = PathTemplate(
        "{email}/{content_type}/{type}-{status}-{task_id}/{created:%H}_{work_id:012d}_{prompt}"
    )
    assert t.render(work(), "me@example.com") == (
        "me@example.com/video/m2v_txt2video_hq-99-987/10_000123456789_a cat"
    )


def test_absent_values_become_none() -> None:
    t = PathTemplate("{email}/{type}_{task_id}_{work_id}_{prompt}")
    assert t.render(work(prompt=None, type=None, task_id=None)) == "none/none_none_123456789_none"


@pytest.mark.parametrize(
    "prompt",
    [
        "../../etc/passwd",
        "/absolute/path",
        "..",
        ".hidden",
        "a\\b\x00c\x1fd\x7fe\u0085f",
        "line\nbreak\ttab",
        "\ud800 lone surrogate",
        "",
        " . ",
    ],
)
def test_hostile_prompts_stay_one_component(prompt: str) -> None:
    """No separator, no '..', no control character, no hidden file, never empty."""
    path = PathTemplate("{prompt}/{work_id}").render(work(prompt=prompt))
    first, second = path.split("/")
    assert second == "123456789"
    assert first and first not in (".", "..") and not first.startswith(".")
    assert ".." not in first and "\\" not in first
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) < 0xA0 for c in first)
    first.encode("utf-8")  # encodable: no lone surrogate


@pytest.mark.parametrize(
    "prompt",
    [
        "x" * 1000,
        "猫が走る、" * 200,  # 3 bytes a character
        "🐈‍⬛ cat/dog\\..//" * 100,  # 4-byte characters and separators
        "é" * 300,
    ],
)
@pytest.mark.parametrize(
    "template",
    [
        "{prompt}_{work_id}",
        "{prompt}/{prompt}-{work_id}",
        "{created:%Y}/{prompt}_{prompt}_{work_id}",
    ],
)
def test_long_prompts_are_cut_to_255_bytes_with_the_sidecar_suffix(
    prompt: str, template: str
) -> None:
    """Every component fits in 255 bytes, the last one with '.json' added; cut on a
    character boundary (valid UTF-8) and as long as fits."""
    path = PathTemplate(template).render(work(prompt=prompt))
    parts = path.split("/")
    for part in parts[:-1]:
        assert len(part.encode()) <= MAX_COMPONENT_BYTES
    assert len((parts[-1] + ".json").encode()) <= MAX_COMPONENT_BYTES
    assert len((parts[-1] + ".json").encode()) > MAX_COMPONENT_BYTES - 8  # not cut needlessly
    assert parts[-1].endswith("_123456789") or parts[-1].endswith("-123456789")


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("/abs/{work_id}", "absolute"),
        ("~/x/{work_id}", "absolute"),
        ("C:{work_id}", "absolute"),
        ("../{work_id}", "'..'"),
        ("a/../../{work_id}", "'..'"),
        ("{created:%Y/..}/{work_id}", "'..'"),
        ("{created:%Y}", "{work_id}"),
        ("{prompt}", "{work_id}"),
        ("a//{work_id}", "empty"),
        ("{work_id}/", "empty"),
        (".hidden/{work_id}", "hidden"),
        ("{nope}/{work_id}", "unknown field"),
        ("{work_id.real}", "unknown field"),
        ("{work_id!r}", "conversion"),
        ("{work_id", "bad path template"),
        ("a\\b/{work_id}", "backslash"),
        ("{work_id:%Y}", "bad path template"),
        ("x" * 300 + "{work_id}", "255 bytes"),
        ("", "empty"),
    ],
)
def test_bad_templates_are_refused_up_front(template: str, why: str) -> None:
    """Absolute, climbing out, colliding (no {work_id}), hidden or too long: one line."""
    with pytest.raises(TemplateError) as info:
        PathTemplate(template)
    assert why in str(info.value)
    assert "\n" not in str(info.value)


def test_sanitize_and_cut() -> None:
    assert sanitize(None) == "none"
    assert sanitize("a/b") == "a_b"
    assert sanitize("a...b") == "a.b"
    assert sanitize("x" * 100) == "x" * 64
    assert cut_utf8("é" * 10, 5) == "éé"  # never half a character
    assert cut_utf8("abc", 10) == "abc"


def test_sidecar_text_has_one_line_per_field() -> None:
    w = work(prompt="a cat\nrunning")
    assert w.task_info is not None
    w.task_info.arguments += [
        Argument(name="negative_prompt", value="blur"),
        Argument(name="kling_version", value="2.1"),
    ]
    assert sidecar_text(w).splitlines() == [
        "prompt: a cat running",
        "negative prompt: blur",
        "model version: 2.1",
        "type: m2v_txt2video_hq",
        "created: 2024-05-01T10:00:00.123000Z",
        "work id: 123456789",
    ]


# -- where a walk stops -------------------------------------------------------------------


def test_no_complete_walk_reads_to_the_end() -> None:
    rule = StopRule(boundary=None)
    assert not rule.after_page([1, 2], [20, 10])
    assert not rule.after_page([3], [5])


def test_stops_at_the_page_reaching_the_boundary() -> None:
    """New works above, then a page holding a work at the top of the last complete walk."""
    rule = StopRule(boundary=[7, 8], boundary_time=70)
    assert not rule.after_page([10, 9], [100, 90])
    assert rule.after_page([8, 7, 6], [80, 70, 60])


def test_boundary_works_deleted_stop_below_their_time() -> None:
    rule = StopRule(boundary=[7, 8], boundary_time=70)
    assert not rule.after_page([10, 9], [100, 90])
    assert not rule.after_page([5], [70])  # the same time: not provably below
    assert rule.after_page([4], [69])


def test_waits_for_pending_works_then_stops() -> None:
    """A work unfinished at the last run is read again, however deep, before stopping."""
    rule = StopRule(boundary=[9], boundary_time=90, pending={3: 30}, newest=100)
    assert not rule.after_page([10, 9], [100, 90])  # boundary reached, pending left
    assert not rule.after_page([8, 7], [80, 70])
    assert rule.after_page([4, 3], [40, 30])


def test_pending_deleted_is_passed_by_time() -> None:
    rule = StopRule(boundary=[9], boundary_time=90, pending={3: 30}, newest=100)
    assert rule.after_page([9, 2], [90, 20])  # below 30 and 3 not met: it is gone


def test_pending_older_than_max_age_is_not_waited_for() -> None:
    rule = StopRule(boundary=[9], boundary_time=90, pending={3: 30}, newest=100, max_age_ms=50)
    assert rule.after_page([9], [90])
    # The newest work met on the way moves the horizon, too.
    rule = StopRule(boundary=[9], boundary_time=90, pending={3: 30}, max_age_ms=100)
    assert not rule.after_page([11, 9], [120, 90])
    rule = StopRule(boundary=[9], boundary_time=90, pending={3: 30}, max_age_ms=100)
    assert rule.after_page([12, 9], [200, 90])


def test_pending_without_create_time_is_not_waited_for() -> None:
    rule = StopRule(boundary=[9], pending={3: None})
    assert rule.after_page([9], [None])
