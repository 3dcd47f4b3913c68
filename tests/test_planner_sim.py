"""The walk planner against generated schedules: answers in any order, works arriving and
deleted, capped page sizes, past-the-end pages that repeat, resumes from every checkpoint.

Pure code (no sockets): thousands of schedules in seconds. The contract checked:

* arrivals below half a page per request: the walk completes and yields every work that
  existed when it began exactly once;
* up to a page per request: that, or WalkStalledError; never a work twice;
* deletions (the documented limit): never a work twice;
* a resume from the checkpoint after any batch, with any number of arrivals in between,
  loses nothing and repeats nothing.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kling_async import ResumeError, WalkStalledError
from kling_async._planner import (
    Answer,
    Batch,
    Planner,
    PlanRequest,
    WalkCheckpoint,
    _Check,
    _Mark,
    _Slot,
    _Window,
)

from .walksim import Run, Schedule, Server, drive, drive_rounds, step

SETTINGS = settings(
    max_examples=int(os.environ.get("KLING_SIM_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)


@st.composite
def worlds(draw: st.DrawFn, *, heavy: bool = False, deletions: bool = False) -> dict[str, object]:
    size = draw(st.integers(1, 6))
    cap = draw(st.one_of(st.none(), st.integers(1, 6)))
    tasks = draw(st.integers(0, 40))
    # "A page" is the page the server serves; a library smaller than one is read again at
    # that size (one more request), so arrivals are measured against it too.
    page = min(size, cap) if cap else size
    if tasks < page:
        page = max(tasks, 1)
    limit = page if heavy else (page - 1) // 2
    return {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "tasks": tasks,
        "size": size,
        "prefetch": draw(st.sampled_from([0, 0, 1, 2, 3, 4, 8, 16])),
        "max_arrivals": draw(st.integers(0, limit)),
        "arrival_chance": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        "delete_chance": draw(st.sampled_from([0.05, 0.2])) if deletions else 0.0,
        "deliver_bias": draw(st.sampled_from([0.1, 0.5, 0.9])),
        "cap": cap,
        "offsets_by_served": draw(st.booleans()),
        "repeat_past_end": draw(st.booleans()),
    }


def may_stall(world: dict[str, object]) -> bool:
    """A server repeating its last page past the end while works keep arriving (or with a
    library of one page) cannot be told from works arriving a page at a time: the walk may
    stop with WalkStalledError there rather than risk hiding works."""
    arrivals = bool(world["max_arrivals"]) and bool(world["arrival_chance"])
    small = world["tasks"] <= world["size"]  # type: ignore[operator]
    return bool(world["repeat_past_end"]) and (arrivals or small)


def setup(world: dict[str, object]) -> tuple[Server, Schedule, list[int], Planner[list[int]]]:
    rng = random.Random(world["seed"])  # type: ignore[arg-type]
    server = Server.build(
        rng,
        world["tasks"],  # type: ignore[arg-type]
        cap=world["cap"],  # type: ignore[arg-type]
        offsets_by_served=world["offsets_by_served"],  # type: ignore[arg-type]
        repeat_past_end=world["repeat_past_end"],  # type: ignore[arg-type]
    )
    schedule = Schedule(
        rng,
        max_arrivals=world["max_arrivals"],  # type: ignore[arg-type]
        arrival_chance=world["arrival_chance"],  # type: ignore[arg-type]
        delete_chance=world["delete_chance"],  # type: ignore[arg-type]
        deliver_bias=world["deliver_bias"],  # type: ignore[arg-type]
    )
    before = server.ids()
    planner: Planner[list[int]] = Planner(
        page_size=world["size"],  # type: ignore[arg-type]
        prefetch=world["prefetch"],  # type: ignore[arg-type]
    )
    return server, schedule, before, planner


def assert_exactly_once(yielded: list[int], before: list[int]) -> None:
    counts = Counter(yielded)
    twice = [w for w, n in counts.items() if n > 1]
    assert not twice, f"yielded twice: {twice}"
    lost = [w for w in before if w not in counts]
    assert not lost, f"lost: {lost}"


def resumed(checkpoint: WalkCheckpoint, server: Server, schedule: Schedule, prefetch: int) -> Run:
    planner: Planner[list[int]] = Planner(
        page_size=checkpoint.page_size, prefetch=prefetch, resume=checkpoint
    )
    return drive(planner, server, schedule)


@SETTINGS
@given(worlds())
def test_exactly_once_below_half_a_page_per_request(world: dict[str, object]) -> None:
    """Every pre-existing work exactly once, whatever the order of answers, caps and ends."""
    server, schedule, before, planner = setup(world)
    try:
        run = drive(planner, server, schedule)
    except WalkStalledError:
        assert may_stall(world)
        return
    assert run.finished
    assert_exactly_once(run.yielded, before)


@SETTINGS
@given(worlds(heavy=True))
def test_up_to_a_page_per_request_complete_or_stalled(world: dict[str, object]) -> None:
    """Faster arrivals: complete and exact, or WalkStalledError; never a work twice."""
    server, schedule, before, planner = setup(world)
    yielded: list[int] = []
    try:
        run = drive(
            planner,
            server,
            schedule,
            on_batch=lambda b: yielded.extend(b.payload[i] for i in b.keep),
        )
    except WalkStalledError:
        assert max(Counter(yielded).values(), default=1) == 1
        return
    assert run.finished
    assert_exactly_once(run.yielded, before)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(deletions=True))
def test_deletions_never_twice(world: dict[str, object]) -> None:
    """Deletions may hide works from an offset walk (the documented limit), never repeat one."""
    server, schedule, _, planner = setup(world)
    yielded: list[int] = []
    with contextlib.suppress(WalkStalledError, ResumeError):
        drive(
            planner,
            server,
            schedule,
            on_batch=lambda b: yielded.extend(b.payload[i] for i in b.keep),
        )
    assert max(Counter(yielded).values(), default=1) == 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.integers(0, 30), st.integers(0, 2**32 - 1))
def test_resume_from_every_checkpoint(world: dict[str, object], arrivals: int, seed: int) -> None:
    """Stop after any batch, let any number of works arrive, resume: exactly once overall."""
    assume(not may_stall(world))
    server, schedule, before, planner = setup(world)
    full = drive(planner, server, schedule, keep_checkpoints=True)
    assert full.finished
    rng = random.Random(seed)
    for count, checkpoint in full.checkpoints:
        # Replay the world as it was at that checkpoint is not possible; instead resume on the
        # list as it stands, after more arrivals: every work of the list as the checkpoint
        # was taken, not yet yielded, must come out exactly once.
        data = WalkCheckpoint.from_json(checkpoint.to_json())
        first = full.yielded[:count]
        later_server = Server(
            tasks=list(server.tasks),
            cap=server.cap,
            offsets_by_served=server.offsets_by_served,
            repeat_past_end=server.repeat_past_end,
            next_id=server.next_id,
        )
        later_server.arrive(rng.randint(0, arrivals))
        sched = Schedule(
            random.Random(rng.random()),
            max_arrivals=schedule.max_arrivals,
            arrival_chance=schedule.arrival_chance,
            deliver_bias=schedule.deliver_bias,
        )
        run = resumed(data, later_server, sched, world["prefetch"])  # type: ignore[arg-type]
        assert run.finished
        assert_exactly_once(first + run.yielded, before)


@pytest.mark.parametrize("prefetch", [0, 2, 4, 8, 16])
def test_static_library_costs_few_extra_requests(prefetch: int) -> None:
    """With nothing arriving, prefetch (2 and deeper) costs at most a quarter more requests
    than pages: head probes and the pages asked past the end."""
    rng = random.Random(1)
    server = Server(tasks=[(i,) for i in range(1, 4001)])
    planner: Planner[list[int]] = Planner(page_size=40, prefetch=prefetch)
    run = drive(planner, server, Schedule(rng, deliver_bias=0.3))
    assert run.yielded == list(range(1, 4001))
    assert run.requests <= 1.25 * 101


def library(tasks: int) -> Server:
    return Server(tasks=[(i,) for i in range(1, tasks + 1)])


def test_static_library_prefetch_4_takes_a_quarter_of_the_round_trips() -> None:
    """The benchmark's static library (4,000 tasks, 101 pages of 40) in round trips, as the
    benchmarks' fake server serves them: prefetch=4 takes at most 1/4.2 of the round trips
    of prefetch=0, with at most a quarter more requests."""
    walks = {}
    for prefetch in (0, 4):
        planner: Planner[list[int]] = Planner(page_size=40, prefetch=prefetch)
        walks[prefetch] = drive_rounds(planner, library(4000), 0.0)
        assert walks[prefetch].run.yielded == list(range(1, 4001))
    assert walks[0].round_trips == 101
    assert walks[4].round_trips * 4.2 <= walks[0].round_trips
    assert walks[4].run.requests <= 1.25 * walks[0].run.requests


@pytest.mark.parametrize("inserts", [0.05, 0.1, 0.5, 1.0])
def test_steady_arrivals_cost_no_round_trip(inserts: float) -> None:
    """Works arriving at the head before every request (the benchmark's "steady arrivals":
    2,000 tasks, pages of 40, requests served in the order sent): prefetch=4 takes no more
    round trips than prefetch=0, asks at most one page again (no read back from the page
    of the walk's place), and yields every work that existed once."""
    walks = {}
    for prefetch in (0, 4):
        server = library(2000)
        planner: Planner[list[int]] = Planner(page_size=40, prefetch=prefetch)
        walks[prefetch] = drive_rounds(planner, server, inserts)
        assert walks[prefetch].run.finished
        assert_exactly_once(walks[prefetch].run.yielded, list(range(1, 2001)))
        assert planner.stats.refetches <= 1
    assert walks[4].round_trips <= walks[0].round_trips
    assert walks[4].run.requests <= 1.4 * walks[0].run.requests


def test_a_failed_page_is_reported_not_waited_for() -> None:
    """A page that fails for good while the next one waits for its head probe: the planner
    names the failed request once it is needed, instead of waiting for nothing."""
    server = Server(tasks=[(i,) for i in range(1, 15)])
    planner: Planner[list[int]] = Planner(page_size=2, prefetch=1)
    sent: dict[int, tuple[int, int]] = {}
    handed: list[int] = []

    def flush() -> None:
        for req in planner.take_requests():
            sent[req.id] = (req.page_num, req.page_size)
        planner.take_cancels()

    def serve(rid: int) -> None:
        planner.receive(rid, server.answer(*sent[rid]))
        flush()
        while (batch := planner.next_batch()) is not None:
            handed.append(batch.page_num)
            flush()
        flush()

    flush()
    for rid in (1, 3, 4, 2, 5):
        serve(rid)
    planner.receive_failure(6)
    answered = {1, 2, 3, 4, 5, 6}
    serve(7)
    answered.add(7)
    while not planner.done:
        waiting = sorted(set(sent) - answered)
        assert waiting, "the planner waits for nothing"
        answered.add(waiting[0])
        serve(waiting[0])
    assert planner.failed_request == 6  # page 6 is needed now: its error is the walk's
    assert handed == [1, 2, 3, 4, 5]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.integers(1, 12))
def test_max_pages_is_a_bound(world: dict[str, object], max_pages: int) -> None:
    """max_pages bounds the page requests (head probes aside), whatever the server does."""
    server, schedule, _, _ = setup(world)
    planner: Planner[list[int]] = Planner(
        page_size=world["size"],  # type: ignore[arg-type]
        prefetch=world["prefetch"],  # type: ignore[arg-type]
        max_pages=max_pages,
    )
    sizes: list[int] = []
    original = planner.take_requests

    def counted() -> list[PlanRequest]:
        requests = original()
        sizes.extend(0 if r.probe else 1 for r in requests)
        return requests

    planner.take_requests = counted  # type: ignore[method-assign]
    with contextlib.suppress(WalkStalledError, ResumeError):
        drive(planner, server, schedule)
    assert sum(sizes) <= max_pages


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.lists(st.integers(0, 8), min_size=1, max_size=20))
def test_depth_changes_mid_walk_keep_exactly_once(
    world: dict[str, object], depths: list[int]
) -> None:
    """The depth changing after any batch (prefetch="auto"): exactly once all the same."""
    server, schedule, before, planner = setup(world)
    pending = list(depths)

    def change(_: object) -> None:
        if pending:
            planner.set_prefetch(pending.pop(0))

    try:
        run = drive(planner, server, schedule, on_batch=change)
    except WalkStalledError:
        assert may_stall(world)
        return
    assert run.finished
    assert_exactly_once(run.yielded, before)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12),
    st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 40), max_size=8)), max_size=60),
)
def test_the_window_of_ids_seen_holds_what_an_lru_would(
    max_ids: int, steps: list[tuple[bool, list[int]]]
) -> None:
    """The planner's window of ids seen (two generations of sets, for speed) never forgets
    an id that an LRU of the same size (the definition) still holds: forgetting one could
    hand a work out twice."""
    from collections import OrderedDict

    from kling_async._planner import _Window

    window = _Window(max_ids)
    lru: OrderedDict[int, None] = OrderedDict()
    for is_add, ids in steps:
        if is_add:
            window.add(ids)
            for i in ids:
                lru[i] = None
                lru.move_to_end(i)
            while len(lru) > max_ids:
                lru.popitem(last=False)
        else:
            window.touch(ids)
            for i in ids:
                if i in lru:
                    lru.move_to_end(i)
        assert all(i in window for i in lru)
        assert set(window.ids()) >= set(lru)
        assert len(window.ids()) <= 3 * (max_ids + 8)  # bounded: a few pages at most


def _plain(value: object) -> object:
    """A planner's attribute as comparable data (slots by what they hold, not identity)."""
    if isinstance(value, _Slot):
        return (
            "slot", value.req, value.emit_seq, value.recv_seq, value.lo, value.hi, value.failed,
            value.solo, value.refetch, value.wave, value.answer is not None,
            [c.req.id for c in value.covers],
        )  # fmt: skip
    if isinstance(value, _Window):
        return ("window", sorted(value._new), sorted(value._old), value._added, value.max_ids)
    if isinstance(value, _Mark):
        return ("mark", value.rid, value.emit, value.recv)
    if isinstance(value, _Check):
        return ("check", value.page_num, _plain(value.above), _plain(value.again))
    if isinstance(value, dict):
        return sorted((k, _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple, deque, range)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value


def _state(planner: Planner[list[int]]) -> dict[str, object]:
    """Everything the planner holds, for the differential test below."""
    return {k: _plain(v) for k, v in vars(planner).items() if k not in ("_plain", "take_requests")}


def _trace(world: dict[str, object], depths: list[int], *, shortcut: bool) -> tuple[object, ...]:
    """Everything a walk does that anyone can see: the requests in order, each batch, the
    checkpoint after it, the stats and how it ended."""
    server, schedule, _, planner = setup(world)
    if not shortcut:
        planner._plain = False  # the general path only
    sent: list[tuple[int, int, bool]] = []
    take = planner.take_requests

    def recording() -> list[PlanRequest]:
        out = take()
        sent.extend((r.page_num, r.page_size, r.probe) for r in out)
        return out

    planner.take_requests = recording  # type: ignore[method-assign]
    batches: list[tuple[int, list[int], bytes, dict[str, object]]] = []
    pending = list(depths)

    def on_batch(batch: object) -> None:
        assert isinstance(batch, Batch)
        batches.append(
            (batch.page_num, list(batch.keep), planner.checkpoint().to_json(), _state(planner))
        )
        if pending:
            planner.set_prefetch(pending.pop(0))

    try:
        run = drive(planner, server, schedule, on_batch=on_batch)
        outcome: object = ("finished", run.finished, run.yielded)
    except (WalkStalledError, ResumeError) as exc:
        outcome = (type(exc).__name__, str(exc))
    return outcome, sent, batches, planner.stats, _state(planner)


@SETTINGS
@given(
    worlds(heavy=True),
    st.booleans(),
    st.lists(st.sampled_from([0, 0, 0, 1, 4]), max_size=6),
)
def test_the_sequential_shortcut_decides_as_the_general_path(
    world: dict[str, object], deletions: bool, depths: list[int]
) -> None:
    """One page at a time, the planner hands the usual page out and asks the next in one
    step (Planner._next_in_sequence); the general path must have done exactly the same:
    the same requests in the same order, the same batches and checkpoints, the same end."""
    world = {**world, "prefetch": 0, "delete_chance": 0.1 if deletions else 0.0}
    assert _trace(world, depths, shortcut=True) == _trace(world, depths, shortcut=False)


def _stepwise(world: dict[str, object], ops_seed: int, *, shortcut: bool) -> list[object]:
    """A walk step by step, the planner's every attribute after each step: depth changes at
    any moment (as prefetch="auto" makes them, between an answer and the next batch) and up
    to two resumes from a checkpoint, with works arriving in between."""
    server, schedule, _, planner = setup(world)
    ops = random.Random(ops_seed)
    stale = ops.choice([1, 2, 3, 5])

    def new_planner(resume: WalkCheckpoint | None) -> Planner[list[int]]:
        made: Planner[list[int]] = Planner(
            page_size=resume.page_size if resume else world["size"],  # type: ignore[arg-type]
            prefetch=ops.choice([0, 0, 1, 4]),
            max_stale_pages=stale,
            resume=resume,
        )
        if not shortcut:
            made._plain = False
        return made

    planner = new_planner(None)
    steps: list[object] = []
    waiting: dict[int, tuple[int, int]] = {}
    answered: dict[int, Answer[list[int]]] = {}
    resumes = 0

    def flush() -> None:
        for req in planner.take_requests():
            waiting[req.id] = (req.page_num, req.page_size)
            steps.append(("send", req))
        for rid in planner.take_cancels():
            waiting.pop(rid, None)
            answered.pop(rid, None)
            steps.append(("cancel", rid))

    try:
        for _ in range(20_000):
            flush()
            if ops.random() < 0.1:
                planner.set_prefetch(ops.choice([0, 0, 1, 4]))
                steps.append(("depth", _state(planner)))
                flush()
            batch = planner.next_batch()
            if batch is not None and shortcut:
                _sole_request_is_all_there_is(planner)  # where the driver asks for it
            flush()
            steps.append(("next", None if batch is None else list(batch.keep), _state(planner)))
            if batch is not None:
                if resumes < 2 and ops.random() < 0.1:
                    resumes += 1
                    checkpoint = WalkCheckpoint.from_json(planner.checkpoint().to_json())
                    server.arrive(ops.randint(0, 3))
                    waiting.clear()
                    answered.clear()
                    planner = new_planner(checkpoint)
                    steps.append(("resume", _state(planner)))
                continue
            if planner.done:
                steps.append(("done", planner.finished))
                return steps
            receive = _checked_receive(planner) if shortcut else None
            rid = step(planner, server, schedule, waiting, answered, receive)
            steps.append(("step", rid, _state(planner)))
    except (WalkStalledError, ResumeError) as exc:
        steps.append((type(exc).__name__, str(exc)))
    return steps


def _sole_request_is_all_there_is(planner: Planner[list[int]]) -> bool:
    """Planner.sole_request() (where the driver calls it: after a batch) against the steps
    the driver would take instead: when it gives a request, those must send just it, hand
    out nothing, cancel nothing and not end, leaving the same planner; else it takes
    nothing."""
    sole, general = copy.deepcopy(planner), copy.deepcopy(planner)
    req = sole.sole_request()
    if req is None:
        assert _state(sole) == _state(planner)
        return False
    assert general.take_requests() == [req]
    assert general.take_cancels() == []
    assert general.next_batch() is None
    assert general.take_requests() == []
    assert general.take_cancels() == []
    assert not general.done
    assert _state(sole) == _state(general)
    return True


def _receive_in_sequence_is_receive_then_next_batch(
    planner: Planner[list[int]], rid: int, answer: Answer[list[int]]
) -> bool:
    """Planner.receive_in_sequence() against the calls the driver would make instead:
    receive(), then (nothing to send or cancel in between) next_batch() on the general path.
    When it gives a batch, they must give the same one and leave the same planner; else it
    changes nothing."""
    fast = copy.deepcopy(planner)
    batch = fast.receive_in_sequence(rid, answer)
    if batch is None:
        assert _state(fast) == _state(planner)
        return False
    general = copy.deepcopy(planner)  # planner itself is as it was before
    general._plain = False  # the general path only
    general.receive(rid, answer)
    assert general.take_requests() == []
    assert general.take_cancels() == []
    expected = general.next_batch()
    assert expected is not None
    assert (batch.page_num, list(batch.keep), batch.payload) == (
        expected.page_num,
        list(expected.keep),
        expected.payload,
    )
    assert _state(fast) == _state(general)
    return True


def _checked_receive(planner: Planner[list[int]]) -> Callable[[int, Answer[list[int]]], None]:
    """planner.receive, checking receive_in_sequence() against it first."""

    def receive(rid: int, answer: Answer[list[int]]) -> None:
        _receive_in_sequence_is_receive_then_next_batch(planner, rid, answer)
        planner.receive(rid, answer)

    return receive


@SETTINGS
@given(worlds(heavy=True), st.booleans(), st.integers(0, 2**32 - 1))
def test_the_sequential_shortcut_decides_as_the_general_path_step_by_step(
    world: dict[str, object], deletions: bool, ops_seed: int
) -> None:
    """The same, compared after every step, with depth changes between an answer and the
    next batch, resumes from checkpoints and other max_stale_pages."""
    world = {**world, "delete_chance": 0.1 if deletions else 0.0}
    assert _stepwise(world, ops_seed, shortcut=True) == _stepwise(world, ops_seed, shortcut=False)


def test_the_sequential_shortcut_is_taken() -> None:
    """The differential test above means something only if the shortcut runs."""
    server = library(400)
    planner: Planner[list[int]] = Planner(page_size=40)
    calls = 0
    shortcut = planner._next_in_sequence

    def counting() -> object:
        nonlocal calls
        batch = shortcut()
        calls += batch is not None
        return batch

    planner._next_in_sequence = counting  # type: ignore[assignment,method-assign]
    drive(planner, server, Schedule(random.Random(0)))
    assert calls >= 8  # every full page after the first


def test_the_answer_in_sequence_is_taken() -> None:
    """The checks of Planner.receive_in_sequence() mean something only if it gives batches."""
    planner: Planner[list[int]] = Planner(page_size=40)
    given = 0

    def checking(rid: int, answer: Answer[list[int]]) -> None:
        nonlocal given
        given += _receive_in_sequence_is_receive_then_next_batch(planner, rid, answer)
        planner.receive(rid, answer)

    server, schedule = library(400), Schedule(random.Random(0))
    waiting: dict[int, tuple[int, int]] = {}
    answered: dict[int, Answer[list[int]]] = {}
    for _ in range(1000):
        batch = planner.next_batch()
        for req in planner.take_requests():
            waiting[req.id] = (req.page_num, req.page_size)
        if batch is None:
            if planner.done:
                break
            step(planner, server, schedule, waiting, answered, checking)
    assert planner.finished
    assert given >= 8  # every full page after the first


def _in_sequence_ready() -> tuple[Planner[list[int]], PlanRequest, Answer[list[int]], int]:
    """A planner one page at a time, four pages handed out and the next one asked (not yet
    taken), that page's answer, and the id of a request answered earlier."""
    server = library(40)
    planner: Planner[list[int]] = Planner(page_size=2)
    rid = 0
    for _ in range(4):
        (req,) = planner.take_requests()
        planner.receive(req.id, server.answer(req.page_num, req.page_size))
        rid = req.id
        assert planner.next_batch() is not None
    (req,) = planner._out
    return planner, req, server.answer(req.page_num, req.page_size), rid


def test_receive_in_sequence_hands_out_the_usual_page() -> None:
    """The state the tests below start from is one where the step applies."""
    planner, req, answer, _ = _in_sequence_ready()
    assert planner.take_requests() == [req]
    batch = planner.receive_in_sequence(req.id, answer)
    assert batch is not None and batch.payload == answer.payload


@pytest.mark.parametrize("case", ["stale id", "not taken", "cancel pending", "failed"])
def test_receive_in_sequence_declines_what_is_not_the_usual_answer(case: str) -> None:
    """An answer to another request than the one out (a cancelled one's, say), a request the
    driver has not taken yet, a cancel not yet taken, or a request already reported failed:
    receive_in_sequence() changes nothing, and receive() + next_batch() decide (a failure
    wins over an answer that comes after it)."""
    planner, req, answer, old_id = _in_sequence_ready()
    rid = req.id
    if case != "not taken":
        assert planner.take_requests() == [req]
    if case == "stale id":
        rid = old_id
    elif case == "cancel pending":
        planner._cancels.append(old_id)
    elif case == "failed":
        planner.receive_failure(req.id)
    before = _state(planner)
    assert planner.receive_in_sequence(rid, answer) is None
    assert _state(planner) == before
    if case == "failed":
        planner.receive(rid, answer)
        assert planner.next_batch() is None
        assert planner.failed_request == req.id


def test_the_sole_request_is_given_one_page_at_a_time() -> None:
    """The check of Planner.sole_request() above means something only if it gives one."""
    planner: Planner[list[int]] = Planner(page_size=40)
    given = 0
    next_batch = planner.next_batch

    def checking() -> Batch[list[int]] | None:
        nonlocal given
        batch = next_batch()
        if batch is not None:  # where the driver asks for it
            given += _sole_request_is_all_there_is(planner)
        return batch

    planner.next_batch = checking  # type: ignore[method-assign]
    drive(planner, library(400), Schedule(random.Random(0)))
    assert given >= 8


def _walk_checking_sole_requests(seed: int) -> int:
    """A walk of any kind (max_items, max_pages, since, failures, caps, repeats, depth
    changes, resumes, a stop in the consumer's turn), checking Planner.sole_request() after
    every batch, where the driver asks for it: after the consumer's turn. Returns how often
    it gave a request."""
    rng = random.Random(seed)
    server = Server.build(
        rng,
        rng.randint(0, 40),
        cap=rng.choice([None, None, rng.randint(1, 6)]),
        offsets_by_served=rng.random() < 0.5,
        repeat_past_end=rng.random() < 0.5,
    )
    arrivals = rng.choice([0, 0, 1, 3])
    fail_chance = rng.choice([0.0, 0.05, 0.2])
    options: dict[str, Any] = {
        "page_size": rng.randint(1, 6),
        "prefetch": rng.choice([0, 0, 0, 1]),
        "max_items": rng.choice([None, rng.randint(0, 60)]),
        "max_pages": rng.choice([None, rng.randint(0, 15)]),
        "since": rng.choice([None, 10**9 - rng.randint(1, 80)]),
        "max_stale_pages": rng.choice([1, 2, 3]),
    }
    planner: Planner[list[int]] = Planner(**options)
    waiting: dict[int, tuple[int, int]] = {}
    answered: dict[int, Answer[list[int]] | None] = {}  # None: the request failed
    given = resumes = 0

    def flush() -> None:
        for req in planner.take_requests():
            waiting[req.id] = (req.page_num, req.page_size)
        for rid in planner.take_cancels():
            waiting.pop(rid, None)
            answered.pop(rid, None)

    with contextlib.suppress(WalkStalledError, ResumeError):
        for _ in range(5000):
            flush()
            if rng.random() < 0.05:
                planner.set_prefetch(rng.choice([0, 0, 1, 4]))
                flush()
            if planner.next_batch() is not None:
                if rng.random() < 0.03:
                    planner.finish()  # Walk.stop() in the consumer's turn
                given += _sole_request_is_all_there_is(planner)
                flush()
                if resumes < 2 and rng.random() < 0.1 and not planner.finished:
                    resumes += 1
                    checkpoint = WalkCheckpoint.from_json(planner.checkpoint().to_json())
                    server.arrive(rng.randint(0, 3))
                    waiting.clear()
                    answered.clear()
                    prefetch = rng.choice([0, 0, 1])
                    planner = Planner(**{**options, "prefetch": prefetch, "resume": checkpoint})
                continue
            flush()
            if planner.done:
                break
            if answered and (not waiting or rng.random() < 0.5):
                rid = rng.choice(list(answered))
                answer = answered.pop(rid)
                if answer is None:
                    planner.receive_failure(rid)
                else:
                    _checked_receive(planner)(rid, answer)
            elif waiting:
                rid = rng.choice(list(waiting))
                page_num, size = waiting.pop(rid)
                if arrivals and rng.random() < 0.5:
                    server.arrive(rng.randint(1, arrivals))
                if rng.random() < fail_chance:
                    answered[rid] = None
                else:
                    answer = server.answer(page_num, size)
                    # Newer works (arrivals, ids from 10,000,000) newer, older ones older.
                    answer.times = [10**9 + i if i >= 10**7 else 10**9 - i for i in answer.ids]
                    answered[rid] = answer
            else:
                break
    return given


@SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_the_sole_request_is_all_there_is_in_any_walk(seed: int) -> None:
    """Planner.sole_request() against the general steps in walks of every kind: with
    max_items, max_pages and since, failed requests, and a stop in the consumer's turn."""
    _walk_checking_sole_requests(seed)


def test_the_sole_request_check_sees_requests_given() -> None:
    """The test above means something only if sole_request() gives requests in such walks."""
    assert sum(_walk_checking_sole_requests(seed) for seed in range(200)) >= 200
