"""The input rules that merging, the explorer service, the preview, ATM and the command line share,
each written once so that one bad value is refused the same way wherever it comes in. Every check
raises a one-line ValueError that names the value and says what it must be."""
from __future__ import annotations

import math


def finite(what: str, x: float, rule: str = "it must be a finite number") -> float:
    """x as a float when it is finite (not NaN, not an infinity)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} is {x}; {rule}")
    return x


def number(what: str, value) -> float:
    """A real, finite number from a number or a numeric string, as API clients may send one."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    return finite(what, x)


def interval(low: float, high: float, low_open: bool = False, high_open: bool = False) -> str:
    if not (low_open or high_open):
        return f"between {low:g} and {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def in_range(what: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """float(value) when it lies between low and high (an open end excluded); NaN never does."""
    x = float(value)
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    if not (above and below):  # written so that NaN fails too
        raise ValueError(f"{what}={value!r} is out of range; it must be {interval(low, high, low_open, high_open)}")
    return x
