"""Progress where no bar can draw: one line per period and one at the end, with rate and time left."""

from __future__ import annotations

from lmdock.client.progress import ProgressLines, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_once_a_period_and_at_the_end_with_rate_and_time_left() -> None:
    clock, lines = Clock(), []
    report = ProgressLines("embedding", lines.append, unit=" texts", every_s=30, clock=clock)
    clock.now += 10
    report(100, 1000)  # within the first period: nothing yet
    assert lines == []
    clock.now += 20  # 30 s in, 300 done: 10 per second, 70 s left
    report(300, 1000)
    assert lines == ["embedding: 300/1000 (30%), 10 texts/s, about 1m10s left"]
    clock.now += 5
    report(350, 1000)
    assert len(lines) == 1
    clock.now += 65  # 100 s in: done, whatever the period
    report(1000, 1000)
    assert lines[-1] == "embedding: 1000/1000 (100%), 10 texts/s, done in 1m40s"


def test_a_training_step_line_carries_its_loss() -> None:
    clock, lines = Clock(), []
    report = ProgressLines("training", lines.append, unit=" steps", every_s=0, clock=clock)
    clock.now += 4
    report(2, 8, 0.6931)
    assert lines == ["training: 2/8 (25%), loss 0.693, 0.5 steps/s, about 12s left"]


def test_durations_read_as_a_person_says_them() -> None:
    assert [duration(s) for s in (0, 42, 185, 4800, 7199.6)] == ["0s", "42s", "3m05s", "1h20m", "2h00m"]
