"""Process plumbing of the apps: progress bars, the single-process context, CPU threads."""

import os

import pytest

from perceptual_loss.apps import runtime
from perceptual_loss.apps.runtime import (
    NoProgress,
    advance,
    cpu_threads,
    progress_bar,
    setup_distributed,
)


def test_a_disabled_progress_bar_shows_nothing(capsys):
    bar = progress_bar(3, enabled=False, description="x")
    assert isinstance(bar, NoProgress)
    bar.update(2)
    bar.set_postfix({"loss": 1.0})
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_advance_ends_on_the_last_step_with_its_values():
    class Bar:
        n = 0

        def update(self, count=1):
            self.n += count

        def set_postfix(self, values, refresh=True):
            self.values = values

    bar = Bar()
    for step in range(1, 4):
        advance(bar, {"step": step, "loss": 1.0 / step}, step, 3)
    assert bar.n == 3 and bar.values == {"loss": "0.333"}


def test_without_torchrun_the_context_is_one_process(monkeypatch):
    import torch

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup_distributed(torch.device("cpu"))
    try:
        assert (context.rank, context.world_size, context.distributed) == (0, 1, False)
        assert context.is_main
        lines = []
        context.echo(lines.append)("hello")
        assert lines == ["hello"]
    finally:
        context.close()
    other_rank = runtime.DistributedContext(rank=1, world_size=2)
    other_rank.echo(lines.append)("only rank 0 prints")
    assert lines == ["hello"] and not other_rank.is_main


def test_cpu_threads_leave_busy_cores_alone(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    for busy, expected in ((0.0, 7), (0.4, 7), (1.0, 7), (1.6, 6), (3.0, 5), (20.0, 1)):
        monkeypatch.setattr(runtime, "_busy_cores", lambda busy=busy: busy)
        assert cpu_threads()[0] == expected
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(runtime, "_busy_cores", lambda: 0.0)
    assert cpu_threads()[0] == 1  # 2 cores: one left free, whatever runs now
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert cpu_threads()[0] == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(runtime, "_busy_cores", lambda: None)  # no /proc/stat
    monkeypatch.setattr("os.getloadavg", lambda: (1.2, 0.0, 0.0))
    assert cpu_threads() == (3, "4 cores, one left free, 1.2 load average; --threads to choose")
    assert cpu_threads(3) == (3, "3 asked for, 4 cores")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        cpu_threads(0)


def test_busy_cores_are_the_busy_share_of_the_jiffies_times_the_cores():
    # user nice system idle iowait irq softirq steal; 4 cores
    readings = iter([
        "cpu  100 0 100 700 100 0 0 0\ncpu0 1\ncpu1 1\ncpu2 1\ncpu3 1\nintr 5\n",
        # 400 more jiffies, 100 of them idle or iowait: 3/4 busy -> 3 cores
        "cpu  250 0 250 750 150 0 0 0\ncpu0 1\ncpu1 1\ncpu2 1\ncpu3 1\nintr 9\n",
    ])
    busy = runtime._busy_cores(0.0, read_stat=lambda: next(readings))
    assert busy == pytest.approx(3.0)
    unchanged = "cpu  1 0 1 1 1 0 0 0\ncpu0 1\n"
    assert runtime._busy_cores(0.0, read_stat=lambda: unchanged) is None  # no time passed

    def unreadable() -> str:
        raise OSError("no /proc/stat")

    assert runtime._busy_cores(0.0, read_stat=unreadable) is None


def test_busy_cores_of_this_machine_lie_between_zero_and_its_cores():
    busy = runtime._busy_cores(0.2)
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    assert 0.0 <= busy <= os.cpu_count()
