"""Progress callbacks: how long-running client work reports how far it has got."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Progress", "ProgressLines", "StageProgress", "TrainingProgress", "duration"]

#: (done, total): texts embedded, bytes downloaded.
Progress = Callable[[int, int], None]
#: (stage, done, total): a daemon task's preparation, stage by stage (reading, embedding, ...).
StageProgress = Callable[[str, int, int], None]
#: (step, total steps, running loss): a training run, which also reports how it is learning.
TrainingProgress = Callable[[int, int, float], None]


def duration(seconds: float) -> str:
    """A short human duration: 42s, 3m05s, 1h20m."""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLines:
    """A (done, total, [loss]) callback that writes one line every `every_s` seconds and at the
    end, with the rate and the time left: progress for a log or a pipe, where a bar cannot draw.

        embedding: 1200/50000 (2%), 41.2/s, about 19m44s left
    """

    def __init__(
        self,
        label: str,
        write: Callable[[str], None],
        *,
        unit: str = "",
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.write = write
        self.unit = unit
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def __call__(self, done: int, total: int, *extra: float) -> None:
        now = self.clock()
        finished = total > 0 and done >= total
        if not finished and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {done}/{total}" + (f" ({100 * done / total:.0f}%)" if total else "")]
        if extra:  # a training step's running loss
            parts.append(f"loss {extra[0]:.3f}")
        if rate > 0:
            parts.append(f"{rate:.3g}{self.unit}/s")
        if finished:
            parts.append(f"done in {duration(elapsed)}")
        elif rate > 0 and total:
            parts.append(f"about {duration((total - done) / rate)} left")
        self.write(", ".join(parts))
