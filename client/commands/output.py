"""Printing for the CLI: JSON for machines, aligned tables for people, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["emit_json", "progress_bar", "table"]


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def progress_bar(label: str, *, enabled: bool = True, unit: str = "it") -> Any:
    """A callback(done, total, ...) reporting on stderr: a bar with rate and time left on a
    terminal (tqdm), else one line every 30 s and at the end (a log or a pipe sees progress)."""
    from lmdock.client.progress import ProgressLines

    if not enabled:
        return lambda *_: None
    if not sys.stderr.isatty():
        return ProgressLines(label, lambda line: print(line, file=sys.stderr, flush=True), unit=unit)
    return _Bar(label, unit)


class _Bar:
    def __init__(self, label: str, unit: str) -> None:
        self.label, self.unit = label, unit
        self.bar: Any = None

    def __call__(self, done: int, total: int, *extra: float) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        if extra:
            self.bar.set_postfix(loss=f"{extra[0]:.3f}", refresh=False)
        if done >= total:
            self.bar.close()
