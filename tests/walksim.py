"""A simulation harness for the walk planner: a model of the assets list and a scheduler.

The list is newest first; works arrive at its head (and may be deleted) as requests are
served. The scheduler serves in-flight requests in any order and hands the answers to the
planner in any order (a request is served when it is chosen, answered later), as a server
with several backends and a network in between may. Pages may be capped below the size asked
(offsets counted by the size asked or served), and a page past the end comes back empty or
repeats the last page. Each answer could carry any server clock: the planner never reads one,
so no clock behaviour can change what it does (the answer it gets has no clock field).

Everything is plain code driven by a ``random.Random``: thousands of schedules run in
seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from kling_async._planner import Answer, Batch, Planner, WalkCheckpoint

Task = tuple[int, ...]  # the work ids of one history entry


@dataclass
class Server:
    """The assets list and how the server pages it."""

    tasks: list[Task]
    cap: int | None = None  # most entries served per page
    offsets_by_served: bool = False  # offsets counted by the size served (else asked)
    repeat_past_end: bool = False  # past the end, serve the last page again
    next_id: int = 10_000_000
    served: int = 0

    @classmethod
    def build(cls, rng: random.Random, n_tasks: int, **kwargs: object) -> Server:
        tasks: list[Task] = []
        next_id = 1
        for _ in range(n_tasks):
            k = 1 if rng.random() < 0.8 else rng.randint(2, 4)
            tasks.append(tuple(range(next_id, next_id + k)))
            next_id += k
        return cls(tasks=tasks, **kwargs)  # type: ignore[arg-type]

    def ids(self) -> list[int]:
        return [w for t in self.tasks for w in t]

    def arrive(self, n: int) -> None:
        for _ in range(n):
            self.tasks.insert(0, (self.next_id,))
            self.next_id += 1

    def delete(self, rng: random.Random) -> None:
        if self.tasks:
            del self.tasks[rng.randrange(len(self.tasks))]

    def answer(self, page_num: int, size: int) -> Answer[list[int]]:
        self.served += 1
        served = min(size, self.cap) if self.cap else size
        step = served if self.offsets_by_served else size
        offset = (page_num - 1) * step
        entries = self.tasks[offset : offset + served]
        if not entries and self.repeat_past_end and self.tasks:
            last = (len(self.tasks) - 1) // step * step
            entries = self.tasks[last : last + served]
        ids = [w for t in entries for w in t]
        # As the walk's driver does: the head only of answers to page 1, the only ones the
        # planner may read it of (any other use fails the test).
        head: object = (entries[0] if entries else None) if page_num == 1 else _NO_HEAD
        return Answer(n_entries=len(entries), ids=ids, head=head, payload=ids)


class _NoHead:
    """The head of an answer to a page other than 1: never to be read."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("the planner compared the head of an answer to a page other than 1")

    __hash__ = None  # type: ignore[assignment]


_NO_HEAD: Final = _NoHead()


@dataclass
class Schedule:
    """How the world behaves while the walk runs."""

    rng: random.Random
    max_arrivals: int = 0  # works arriving before each request is served: 0..max
    arrival_chance: float = 0.5
    delete_chance: float = 0.0
    deliver_bias: float = 0.5  # chance to hand an answer over rather than serve a request


@dataclass
class Run:
    yielded: list[int] = field(default_factory=list)
    checkpoints: list[tuple[int, WalkCheckpoint]] = field(default_factory=list)
    stalled: bool = False
    finished: bool = False
    requests: int = 0


def drive(
    planner: Planner[list[int]],
    server: Server,
    schedule: Schedule,
    *,
    on_batch: Callable[[Batch[list[int]]], None] | None = None,
    keep_checkpoints: bool = False,
    max_steps: int = 200_000,
) -> Run:
    """Run ``planner`` against ``server`` until it is done; WalkStalledError propagates."""
    run = Run()
    waiting: dict[int, tuple[int, int]] = {}  # sent, not served: id -> (page, size)
    answered: dict[int, Answer[list[int]]] = {}  # served, not yet handed to the planner

    def flush() -> None:
        for req in planner.take_requests():
            waiting[req.id] = (req.page_num, req.page_size)
            run.requests += 1
        for rid in planner.take_cancels():
            waiting.pop(rid, None)
            answered.pop(rid, None)

    for _ in range(max_steps):
        flush()
        batch = planner.next_batch()
        flush()
        if batch is not None:
            run.yielded.extend(batch.payload[i] for i in batch.keep)
            if keep_checkpoints:
                run.checkpoints.append((len(run.yielded), planner.checkpoint()))
            if on_batch is not None:
                on_batch(batch)
            continue
        if planner.done:
            run.finished = planner.finished
            return run
        assert waiting or answered, "the planner waits for nothing"
        step(planner, server, schedule, waiting, answered)
    raise AssertionError("the walk did not end")


def step(
    planner: Planner[list[int]],
    server: Server,
    schedule: Schedule,
    waiting: dict[int, tuple[int, int]],
    answered: dict[int, Answer[list[int]]],
    receive: Callable[[int, Answer[list[int]]], None] | None = None,
) -> int:
    """One move of the world: hand an answer to the planner (with ``receive``, if given:
    else ``planner.receive``), or serve a request sent (works arriving or deleted first, as
    the schedule says). Returns the request's id."""
    rng = schedule.rng
    if answered and (not waiting or rng.random() < schedule.deliver_bias):
        rid = rng.choice(list(answered))
        (receive or planner.receive)(rid, answered.pop(rid))
        return rid
    rid = rng.choice(list(waiting))
    page_num, size = waiting.pop(rid)
    if schedule.max_arrivals and rng.random() < schedule.arrival_chance:
        server.arrive(rng.randint(1, schedule.max_arrivals))
    if schedule.delete_chance and rng.random() < schedule.delete_chance:
        server.delete(rng)
    answered[rid] = server.answer(page_num, size)
    return rid


@dataclass
class Rounds:
    """A walk driven in round trips (see :func:`drive_rounds`)."""

    run: Run
    round_trips: int


def drive_rounds(planner: Planner[list[int]], server: Server, inserts_per_request: float) -> Rounds:
    """Run ``planner`` against ``server`` in round trips, as the benchmarks' fake server does.

    Every request sent in one round trip is served in the next, in the order it was sent;
    ``inserts_per_request`` new works arrive at the head before each is served (fractions add
    up: 0.1 is one work every tenth request, probes included). The answers of a round trip
    reach the planner in the order their requests were sent; what it asks meanwhile goes out
    in the next. Deterministic: the round trips a walk takes stand in for its wall time.
    """
    run = Run()
    debt = 0.0
    round_trips = 0
    sent: list[tuple[int, int, int]] = []  # (id, page, size), in the order sent
    cancelled: set[int] = set()

    def flush() -> None:
        for req in planner.take_requests():
            sent.append((req.id, req.page_num, req.page_size))
            run.requests += 1
        cancelled.update(planner.take_cancels())

    def hand_out() -> None:
        flush()
        while (batch := planner.next_batch()) is not None:
            run.yielded.extend(batch.payload[i] for i in batch.keep)
            flush()
        flush()

    hand_out()
    while not planner.done:
        # Requests cancelled before they went out are never served.
        serving = [s for s in sent if s[0] not in cancelled]
        assert serving, "the planner waits for nothing"
        sent.clear()
        round_trips += 1
        answers = []
        for rid, page_num, size in serving:
            debt += inserts_per_request
            arrived = int(debt)
            debt -= arrived
            server.arrive(arrived)
            answers.append((rid, server.answer(page_num, size)))
        for rid, answer in answers:
            if rid not in cancelled:
                planner.receive(rid, answer)
                hand_out()
    run.finished = planner.finished
    return Rounds(run, round_trips)
