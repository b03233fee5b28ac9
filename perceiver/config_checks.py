"""Checks of config values that every config class runs in ``__post_init__``: :class:`ConfigError` and
:func:`check_ranges`. No torch import: the core, the adapters, the tasks and the data sets use it alike.
"""

from __future__ import annotations

from typing import Any, Dict


class ConfigError(ValueError):
    """An invalid combination of configuration values."""


def check_ranges(config: Any, ranges: Dict[str, str], error: type = ValueError) -> None:
    """Raise ``error("<field> must be <range>, got <value>")`` for the first field of ``config`` outside its range.

    ``ranges`` maps field names to ``">= 1"``, ``"> 0"``, ``"<= 1"``, ``"< 1"`` or an interval such as ``"[0, 1)"``
    (brackets include the bound, parentheses exclude it). ``None`` values (unset optional fields) are skipped.
    """
    for name, valid in ranges.items():
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{name} must be a number {_describe(valid)}, got {value!r}")
        if not _within(value, valid):
            raise error(f"{name} must be {_describe(valid)}, got {value!r}")


def _describe(valid: str) -> str:
    return f"in {valid}" if valid[0] in "[(" else valid


def _within(value: float, valid: str) -> bool:
    if valid[0] in "[(":
        low, high = (float(part) for part in valid[1:-1].split(","))
        above = value >= low if valid[0] == "[" else value > low
        below = value <= high if valid[-1] == "]" else value < high
        return above and below
    operator, bound = valid.split()
    bound = float(bound)
    return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[operator]
