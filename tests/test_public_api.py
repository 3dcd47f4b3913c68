"""The public surface is exactly what `__all__` says, typed and documented."""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import pytest

import kling_async
import kling_async.testing


@pytest.mark.parametrize("module", [kling_async, kling_async.testing])
def test_all_is_sorted_and_exactly_the_public_names(module: types.ModuleType) -> None:
    """__all__ is sorted and lists every public name the package binds, and only those."""
    names = module.__all__
    assert names == sorted(names)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} == set(names) - {"__version__"}


def test_public_classes_and_functions_are_documented() -> None:
    """Every public class and its public methods carry a docstring."""
    for name in kling_async.__all__:
        obj = getattr(kling_async, name)
        if inspect.isclass(obj):
            assert obj.__doc__, name
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert member.__doc__, f"{name}.{attr}"


def test_package_is_typed() -> None:
    """py.typed ships with the package."""
    assert (Path(kling_async.__file__).parent / "py.typed").is_file()
