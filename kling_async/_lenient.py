"""Decoding that survives schema drift: a field of an unexpected type never fails a work.

The API documents every field as optional and promises no types (a number may arrive as a
float, a boolean as 0/1...). msgspec validates a whole object at once and has no per-field
fallback, so :func:`decode_lenient` builds one:

1. the strict decoder, the fast path: a work as documented decodes in one call;
2. if that raises ``ValidationError``, the work is decoded again untyped and converted with
   ``strict=False`` (msgspec's lax mode converts losslessly where it can: ``"99"`` -> 99,
   ``5041.0`` -> 5041, ``0`` -> False); each field it still refuses, at the path the error
   names, is set to ``None`` (removed where ``None`` is refused too, so its default applies)
   and the conversion tried again.

Every field that failed the strict decode is reported once per call to ``on_drift``, with
whether lax mode kept its value. Nothing here coerces a type by hand.

A field typed ``msgspec.Raw`` (a lazy part of a model, decoded on first read) takes any JSON
in the strict decode; the untyped re-decode gives it back as ``msgspec.Raw`` too, so it never
drifts here either: its own fields are checked when it is read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from typing import Any, Final, TypeVar, cast

import msgspec

__all__ = ["DriftReport", "FieldPath", "decode_lenient", "format_path", "parse_path"]

T = TypeVar("T")

FieldPath = tuple["str | int", ...]
#: ``on_drift(path, reason, kept)``: ``kept`` is True when lax mode converted the value.
DriftReport = Callable[[FieldPath, str, bool], None]

_AT: Final = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_STEP: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
#: A work has a few dozen fields: more repairs than this means something else is wrong.
MAX_REPAIRS: Final = 1000


def parse_path(message: str) -> tuple[str, FieldPath] | None:
    """The reason and the path of a msgspec ``ValidationError`` message, or None."""
    match = _AT.match(message)
    if match is None:
        return None
    text = match["path"]
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        step = _STEP.match(text, pos)
        if step is None:
            return None
        steps.append(step[1] if step[1] is not None else int(step[2]))
        pos = step.end()
    return match["reason"], tuple(steps)


def format_path(path: FieldPath, prefix: str = "") -> str:
    """``history[3].works[0].resource.duration`` from its steps (after ``prefix``)."""
    out = prefix
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def _repair(obj: Any, path: FieldPath, seen: set[FieldPath]) -> bool:
    """Set the value at ``path`` to None, or remove it if None was refused there already."""
    if not path:
        return False
    parent = obj
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1]
    if path not in seen:
        seen.add(path)
        if isinstance(parent, dict) and isinstance(last, str) and last in parent:
            parent[last] = None
            return True
        if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
            parent[last] = None
            return True
        return False
    # None was refused too (a list or a required element): drop it, its default applies.
    if isinstance(parent, dict) and isinstance(last, str) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        del parent[last]
        return True
    return False


class _Items:
    """Where Raw fields are inside each item of an array."""

    __slots__ = ("plan",)

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan


_RAW: Final = object()
#: Where a type holds ``msgspec.Raw`` fields: ``_RAW`` (here), ``_Items`` (in each item of an
#: array), a dict of wire names (in these fields of an object), or None (nowhere).
_Plan = object


@functools.lru_cache(maxsize=256)
def _raw_plan(type_: object) -> _Plan:
    return _plan_of(msgspec.inspect.type_info(type_), 0)


def _plan_of(info: msgspec.inspect.Type, depth: int) -> _Plan:
    if depth > 20:  # the models are a few levels deep; a recursive type is not one of them
        return None
    if isinstance(info, msgspec.inspect.RawType):
        return _RAW
    if isinstance(info, msgspec.inspect.Metadata):
        return _plan_of(info.type, depth + 1)
    if isinstance(info, msgspec.inspect.UnionType):
        plans = [p for t in info.types if (p := _plan_of(t, depth + 1)) is not None]
        return plans[0] if len(plans) == 1 else None
    if isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.VarTupleType)):
        item = _plan_of(info.item_type, depth + 1)
        return None if item is None else _Items(item)
    if isinstance(info, msgspec.inspect.StructType):
        fields = {
            f.encode_name: p for f in info.fields if (p := _plan_of(f.type, depth + 1)) is not None
        }
        return fields or None
    return None


def _wrap_raw(obj: Any, plan: _Plan) -> Any:
    """``obj`` (untyped JSON) with the value at each Raw field as ``msgspec.Raw``."""
    if plan is _RAW:
        return msgspec.Raw(msgspec.json.encode(obj))
    if isinstance(plan, _Items):
        if isinstance(obj, list):
            obj[:] = [_wrap_raw(item, plan.plan) for item in obj]
    elif isinstance(plan, dict) and isinstance(obj, dict):
        for key, sub in plan.items():
            if key in obj:
                obj[key] = _wrap_raw(obj[key], sub)
    return obj


def _convert(data: bytes, type_: type[T], *, strict: bool) -> tuple[T, list[tuple[FieldPath, str]]]:
    """Convert ``data``, repairing each field that fails; returns the fields repaired."""
    obj = msgspec.json.decode(data)
    plan = _raw_plan(cast(object, type_))
    if plan is not None:
        obj = _wrap_raw(obj, plan)
    repaired: list[tuple[FieldPath, str]] = []
    seen: set[FieldPath] = set()
    for _ in range(MAX_REPAIRS):
        try:
            return msgspec.convert(obj, type_, strict=strict), repaired
        except msgspec.ValidationError as exc:
            parsed = parse_path(str(exc))
            if parsed is None or not _repair(obj, parsed[1], seen):
                raise
            if parsed[1] not in {p for p, _ in repaired}:
                repaired.append((parsed[1], parsed[0]))
    raise msgspec.ValidationError(f"more than {MAX_REPAIRS} fields of unexpected types")


def decode_lenient(
    data: bytes,
    decoder: msgspec.json.Decoder[T],
    type_: type[T],
    *,
    on_drift: DriftReport | None = None,
    required: Collection[FieldPath] = (),
) -> T:
    """Decode ``data`` as ``type_``, with every field of an unexpected type converted by lax
    mode or set to None.

    Args:
        data: One JSON document (a work, a page).
        decoder: The strict decoder of ``type_`` (the fast path).
        type_: The type to decode.
        on_drift: Called for each field that failed the strict decode.
        required: Paths that must decode strictly: drift there raises.

    Raises:
        msgspec.DecodeError: ``data`` is not JSON.
        msgspec.ValidationError: A ``required`` path drifted, or the document itself (not a
            field of it) has the wrong type; the message names the path.
    """
    try:
        return decoder.decode(data)
    except msgspec.ValidationError:
        pass
    # Which fields drifted: strict conversion with each refused field nulled in turn.
    _, drifted = _convert(data, type_, strict=True)
    for path, reason in drifted:
        if path in required:
            raise msgspec.ValidationError(f"{reason} - at `{format_path(path, '$')}`")
    value, nulled = _convert(data, type_, strict=False)
    if on_drift is not None:
        lost = {path for path, _ in nulled}
        for path, reason in drifted:
            on_drift(path, reason, path not in lost)
    return value
