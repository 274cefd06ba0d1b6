"""Formatting helpers of the report: numbers, ratios and the one markdown table builder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Add = Callable[[str], None]  # appends one line to the document


def ok(value: Any) -> bool:
    """A number that can be shown (not None, not NaN)."""
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def f1(value: Any, unit: str = "") -> str:
    return f"{value:,.1f}{unit}" if ok(value) else "n/a"


def f0(value: Any, unit: str = "") -> str:
    return f"{value:,.0f}{unit}" if ok(value) else "n/a"


def f2(value: Any, unit: str = "") -> str:
    return f"{value:,.2f}{unit}" if ok(value) else "n/a"


def ratio(a: Any, b: Any, digits: int = 1) -> str:
    return f"{a / b:.{digits}f}x" if ok(a) and ok(b) and b else "n/a"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """A markdown table and the blank line after it; ``align`` is one l/r/c per column
    (default: the first left, the others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def add_table(
    add: Add, headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = ""
) -> None:
    for line in table(headers, rows, align):
        add(line)


def get(data: Any, *path: Any) -> Any:
    """``data[path[0]][path[1]]...``, or None where a step is missing."""
    for key in path:
        if data is None:
            return None
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data
