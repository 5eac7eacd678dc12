"""Progress callbacks: how long-running client work reports how far it has got."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "StageProgress", "TrainingProgress"]

#: (done, total): texts embedded, bytes downloaded.
Progress = Callable[[int, int], None]
#: (stage, done, total): a daemon task's preparation, stage by stage (reading, embedding, ...).
StageProgress = Callable[[str, int, int], None]
#: (step, total steps, running loss): a training run, which also reports how it is learning.
TrainingProgress = Callable[[int, int, float], None]
