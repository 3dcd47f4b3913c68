"""Decode one assets page: the client's msgspec decoder against the usual alternatives.

    python -m benchmarks.bench_decode [--quick]

Contenders, all given the same ``bytes`` the fake server sends:

* **ours**: ``kling_async.models.ASSETS_PAGE_DECODER.decode`` (what the client runs per page),
  typed ``AssetsPage`` Structs; the nested objects of each work are decoded when first read;
* **ours, every part read**: the same, then ``AssetsPage.load()``: every lazy part decoded, so
  it builds as much as the others do (shown, not judged);
* ``json.loads``: plain dicts and lists, no validation;
* ``orjson.loads``: plain dicts and lists, no validation;
* pydantic v2 ``model_validate_json`` on :class:`PydAssetsPage`, the same model as ours (every
  field of the documented TypeScript model, all optional, camelCase aliases, same nesting).

Pages of about 40 and 500 works (cut from a :class:`~kling_async.testing.FakeLibrary` page at a
whole history entry, so the exact count is reported), with ASCII-only and non-ASCII prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from kling_async.models import ASSETS_PAGE_DECODER
from kling_async.testing import FakeLibrary

from ._common import fmt_ratio, machine_line, markdown_table, measure_round_robin, verdict

try:
    import orjson
except ImportError:  # the `bench` extra is not installed
    orjson = None  # type: ignore[assignment]

try:
    import pydantic
except ImportError:
    pydantic = None  # type: ignore[assignment]

HAVE_ORJSON = orjson is not None
HAVE_PYDANTIC = pydantic is not None

OURS = "ours (msgspec AssetsPage)"
OURS_LOADED = "ours, every part read"
JSON = "json.loads"
ORJSON = "orjson.loads"
PYDANTIC = "pydantic v2 model_validate_json"

TARGETS = ((JSON, 3.0), (PYDANTIC, 5.0))
"""Ours must be at least this many times faster than each, on the ASCII ~40-work page."""


# --------------------------------------------------------------------------- pydantic model

if HAVE_PYDANTIC:
    from pydantic import BaseModel, ConfigDict, Field
    from pydantic.alias_generators import to_camel

    class _Pyd(BaseModel):
        """camelCase on the wire, snake_case in Python; unknown fields ignored, like ours."""

        model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    class PydResource(_Pyd):
        resource: str | None = None
        height: int | None = None
        width: int | None = None
        duration: int | None = None
        resource_key: str | None = None

    class PydTaskInput(_Pyd):
        name: str | None = None
        input_type: str | None = None
        token: str | None = None
        blob_storage: str | None = None
        url: str | None = None
        cover: str | None = None
        from_work_id: int | None = None
        from_upload_id: int | None = None

    class PydArgument(_Pyd):
        name: str | None = None
        value: str | None = None

    class PydTaskInfo(_Pyd):
        type: str | None = None
        inputs: list[PydTaskInput] = Field(default_factory=list)
        arguments: list[PydArgument] = Field(default_factory=list)
        extra_args: dict[str, Any] = Field(default_factory=dict)
        callback_payloads: list[Any] = Field(default_factory=list)
        scene: str | None = None

    class PydSelfComment(_Pyd):
        rate: int | None = None
        tags: list[Any] = Field(default_factory=list)
        content: str | None = None
        prompts: list[Any] = Field(default_factory=list)

    class PydFileType(_Pyd):
        type: str | None = None
        watermark: bool | None = None

    class PydDownloadInfo(_Pyd):
        file_types: list[PydFileType] = Field(default_factory=list)

    class PydWork(_Pyd):
        work_id: int | None = None
        work_item_id: int | None = None
        task_id: int | None = None
        user_id: int | None = None
        type: str | None = None
        status: int | None = None
        content_type: str | None = None
        resource: PydResource | None = None
        cover: PydResource | None = None
        star_num: int | None = None
        clone_count: int | None = None
        report_num: int | None = None
        create_time: int | None = None
        task_info: PydTaskInfo | None = None
        self_attitude: str | None = None
        self_comment: PydSelfComment | None = None
        favored: bool | None = None
        starred: bool | None = None
        publish_status: str | None = None
        deleted: bool | None = None
        publish_time: int | None = None
        submit_time: int | None = None
        lip_sync_status: int | None = None
        download_info: PydDownloadInfo | None = None
        allow_publish: bool | None = None

    class PydTask(_Pyd):
        id: int | None = None
        user_id: int | None = None
        type: str | None = None
        scene: str | None = None
        status: int | None = None
        task_info: PydTaskInfo | None = None
        favored: bool | None = None
        deleted: bool | None = None
        viewed: bool | None = None
        create_time: int | None = None
        update_time: int | None = None
        view_time: int | None = None

    class PydHistoryItem(_Pyd):
        works: list[PydWork] = Field(default_factory=list)
        task: PydTask | None = None
        eta_time: int | None = None
        eta_time_over_sla: bool | None = None
        queuing_eta_time: int | None = None
        origin_eta_time: int | None = None
        origin_queuing_eta_time: int | None = None
        current_timestamp: int | None = None

    class PydLimitation(_Pyd):
        type: str | None = None
        remaining: int | None = None
        limit: int | None = None

    class PydPoint(_Pyd):
        order_id: str | None = None
        type: str | None = None
        amount: int | None = None
        balance: int | None = None
        start_time: int | None = None
        end_time: int | None = None

    class PydUserPoints(_Pyd):
        points: list[PydPoint] = Field(default_factory=list)
        total: int | None = None

    class PydTicket(_Pyd):
        order_id: str | None = None
        type: str | None = None
        package_type: str | None = None
        amount: int | None = None
        balance: int | None = None
        start_time: int | None = None
        end_time: int | None = None

    class PydUserTickets(_Pyd):
        ticket: list[PydTicket] = Field(default_factory=list)

    class PydAssetsPage(_Pyd):
        limitations: list[PydLimitation] = Field(default_factory=list)
        history: list[PydHistoryItem] = Field(default_factory=list)
        user_points: PydUserPoints | None = None
        user_tickets: PydUserTickets | None = None


# --------------------------------------------------------------------------- pages


@dataclass
class Page:
    """A page body and what it holds."""

    label: str
    body: bytes
    works: int
    tasks: int

    @property
    def ascii(self) -> bool:
        return self.body.isascii()


def make_page(target_works: int, *, non_ascii: bool, seed: int = 0) -> Page:
    """The first page holding at least ``target_works`` works, as the fake server sends it.

    ``pageSize`` counts history entries and image tasks hold 4 works, so the page size is the
    smallest that reaches the target; the actual work count is reported.
    """
    library = FakeLibrary(100_000, seed=seed, non_ascii=1.0 if non_ascii else 0.0)
    history = library.page(1, target_works)["history"]
    total = 0
    page_size = 0
    while total < target_works:
        total += len(history[page_size]["works"])
        page_size += 1
    body = library.page_bytes(1, page_size)
    text = "non-ASCII" if non_ascii else "ASCII"
    return Page(f"{total} works, {text}", body, total, page_size)


def decoders() -> dict[str, Callable[[bytes], object]]:
    """The contenders available here (orjson and pydantic are the ``bench`` extra)."""
    found: dict[str, Callable[[bytes], object]] = {
        OURS: ASSETS_PAGE_DECODER.decode,
        OURS_LOADED: lambda body: ASSETS_PAGE_DECODER.decode(body).load(),
        JSON: json.loads,
    }
    if HAVE_ORJSON:
        found[ORJSON] = orjson.loads
    if HAVE_PYDANTIC:
        found[PYDANTIC] = PydAssetsPage.model_validate_json
    return found


def check_equivalent(page: Page) -> None:
    """Every contender must see the same works, or the race is not fair."""
    ours = ASSETS_PAGE_DECODER.decode(page.body)
    assert len(ours.works()) == page.works
    plain = json.loads(page.body)
    assert sum(len(item["works"]) for item in plain["history"]) == page.works
    if HAVE_PYDANTIC:
        pyd = PydAssetsPage.model_validate_json(page.body)
        # Same data, field for field: both dumped with wire names, defaults left out (ours
        # through JSON, so that its tuples compare as the lists pydantic dumps).
        theirs = pyd.model_dump(by_alias=True, exclude_defaults=True)
        mine = msgspec.json.decode(msgspec.json.encode(ours.load()))
        assert theirs == mine, "the pydantic model is not equivalent"


# --------------------------------------------------------------------------- run


def run(
    pages: Sequence[Page], *, repeats: int, min_time: float
) -> tuple[str, list[tuple[str, bool, str]]]:
    """Time every contender on every page; the table and the target checks."""
    rows: list[list[str]] = []
    checks: list[tuple[str, bool, str]] = []
    contenders = decoders()
    for page in pages:
        check_equivalent(page)
        fns = {name: (lambda fn=fn, body=page.body: fn(body)) for name, fn in contenders.items()}
        timings = measure_round_robin(fns, repeats=repeats, min_time=min_time)
        ours = timings[OURS].best
        for name, timing in timings.items():
            t = timing.best
            speedup = t / ours  # how many times faster ours is than this one
            rows.append(
                [
                    page.label,
                    f"{len(page.body) / 1024:.0f}",
                    name,
                    f"{t * 1e6:,.0f}",
                    f"{len(page.body) / t / 1e6:,.0f}",
                    f"{page.works / t:,.0f}",
                    fmt_ratio(ours / t),
                    "1.00x (ours)" if name == OURS else f"ours is {fmt_ratio(speedup)} faster",
                ]
            )
        if page is pages[0]:
            for name, goal in TARGETS:
                if name in timings:
                    got = timings[name].best / ours
                    checks.append(
                        (
                            f"ours ≥ {goal:g}x {name} ({page.label})",
                            got >= goal,
                            f"ours is {fmt_ratio(got)}",
                        )
                    )
    table = markdown_table(
        [
            "page",
            "KiB",
            "decoder",
            "µs/page",
            "MB/s",
            "works/s",
            "speed vs ours",
            "ours vs it",
        ],
        rows,
        "lrlrrrrl",
    )
    return table, checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_decode", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per contender")
    args = parser.parse_args(argv)
    sizes: tuple[int, ...]
    if args.quick:
        sizes, repeats, min_time = (40,), args.repeats or 1, 0.001
    else:
        sizes, repeats, min_time = (40, 500), args.repeats or 7, 0.2
    pages = [make_page(n, non_ascii=na) for n in sizes for na in (False, True)]
    print(machine_line())
    print(
        "Decode one GET /assets/ page from bytes; best of "
        f"{repeats} repeats, GC on. 'speed vs ours' = its throughput / ours (ours = 1.00x).\n"
    )
    table, checks = run(pages, repeats=repeats, min_time=min_time)
    print(table)
    print()
    if args.quick:
        print("- (--quick: sizes too small for the verdicts below to mean anything)")
    for text, ok, detail in checks:
        print(f"- {verdict(ok)}: {text}: {detail}")
    missing = [n for n in (ORJSON, PYDANTIC) if n not in decoders()]
    if missing:
        print(f"- skipped (install the `bench` extra): {', '.join(missing)}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
