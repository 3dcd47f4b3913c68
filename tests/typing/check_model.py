"""Static checks of ``model=`` typing, run by CI as ``mypy --strict`` (never executed).

``mypy --strict kling_async tests/typing`` fails if the overloads stop inferring the model.
"""

from __future__ import annotations

import msgspec
from typing_extensions import assert_type

from kling_async import KlingSession, Walk, Watcher, Work, WorkPage


class MyWork(msgspec.Struct, rename="camel"):
    work_id: int | None = None
    status: int | None = None


async def check(kling: KlingSession) -> None:
    async for work in kling.iter_works():
        assert_type(work, Work)
    async for mine in kling.iter_works(model=MyWork, prefetch="auto"):
        assert_type(mine, MyWork)
    assert_type(kling.walk(), Walk[Work])
    walk = kling.walk(model=MyWork, raw=True)
    assert_type(walk, Walk[MyWork])
    async for batch in walk:
        assert_type(batch, WorkPage[MyWork])
        assert_type(batch.works, list[MyWork])
    assert_type(kling.watch_works(), Watcher[Work])
    watcher = kling.watch_works(model=MyWork, interval=5.0)
    assert_type(watcher, Watcher[MyWork])
    async for new in watcher:
        assert_type(new, MyWork)
        watcher.give_back(new)
