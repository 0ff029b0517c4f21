"""Text for people: aligned tables and sizes (the CLI and the confirmations changes show). JSON needs no help."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, rule: bool = True, indent: str = "") -> str:
    """Columns padded to their widest cell; None shows as empty; a rule of dashes under the headers."""
    cells = [[str(c) if c is not None else "" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells if i < len(r)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(widths[i]) if i < len(widths) else v for i, v in enumerate(values)]
        return (indent + "  ".join(padded)).rstrip()

    lines = [line(list(headers))]
    if rule:
        lines.append(indent + "  ".join("-" * w for w in widths))
    lines += [line(r) for r in cells]
    return "\n".join(lines)


def size(n: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
