"""Reading the manifest's JSON into typed records: each field is checked once, where it is read, and a
missing or mistyped one is a one-line CacheError that names it by its path (`tasks[2].sizes.train`)."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from .errors import CacheError

T = TypeVar("T")
Check = Callable[[Any, str], T]
_REQUIRED = object()
FIX = "rebuild the cache or get it again from its source"


def bad(field: str, problem: str) -> CacheError:
    return CacheError(f"manifest field {field}: {problem}; {FIX}")


def _expect(ok: bool, value, field: str, what: str) -> None:
    if not ok:
        shown = repr(value)
        raise bad(field, f"expected {what}, got {shown if len(shown) <= 60 else shown[:57] + '...'}")


def text(value, field: str) -> str:
    _expect(isinstance(value, str), value, field, "a string")
    return value


def whole(value, field: str) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool), value, field, "a whole number")
    return value


def number(value, field: str) -> float:
    _expect(isinstance(value, (int, float)) and not isinstance(value, bool), value, field, "a number")
    return value


def flag(value, field: str) -> bool:
    _expect(isinstance(value, bool), value, field, "true or false")
    return value


def obj(value, field: str) -> dict:
    """A JSON object whose contents another layer owns (a data source's spec, open_clip's vision config)."""
    _expect(isinstance(value, dict), value, field, "an object")
    return value


def optional(check: Check[T]) -> Check[T | None]:
    return lambda value, field: None if value is None else check(value, field)


def each(check: Check[T]) -> Check[tuple[T, ...]]:
    """A JSON list, every item checked."""
    def read(value, field: str) -> tuple[T, ...]:
        _expect(isinstance(value, list), value, field, "a list")
        return tuple(check(item, f"{field}[{i}]") for i, item in enumerate(value))
    return read


def by_name(check: Check[T]) -> Check[dict[str, T]]:
    """A JSON object of named values (per task, per file, per record), every value checked."""
    def read(value, field: str) -> dict[str, T]:
        _expect(isinstance(value, dict), value, field, "an object")
        return {name: check(item, f"{field}.{name}") for name, item in value.items()}
    return read


texts = each(text)
numbers = by_name(number)


class Fields:
    """One JSON object of the manifest, read field by field; `done()` refuses the fields nobody read."""

    def __init__(self, value, where: str):
        _expect(isinstance(value, dict), value, where or "(top level)", "an object")
        self.data, self.where, self._read = value, where, set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, check: Check[T], default=_REQUIRED) -> T:
        self._read.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise bad(self.path(key), "missing")
            return default
        return check(self.data[key], self.path(key))

    def rest(self) -> dict:
        """The fields not read yet, as they are."""
        return {k: v for k, v in self.data.items() if k not in self._read}

    def done(self) -> None:
        unknown = self.rest()
        if unknown:
            raise bad(self.where or "(top level)", f"unknown field(s) {', '.join(map(repr, unknown))}, which this "
                      "tvexplorer does not read (a newer tvexplorer wrote it?)")
