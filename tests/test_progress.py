"""Progress bars in a log: a line every few percent, never a carriage-return frame; the same information."""

from __future__ import annotations

import io

from pipeline.progress import LogBar, progress


def test_a_bar_in_a_log_writes_a_line_every_five_percent_and_its_final_state() -> None:
    log = io.StringIO()
    with progress(total=2000, desc="train", unit="step", file=log) as bar:
        assert isinstance(bar, LogBar)  # a StringIO is no terminal
        for step in range(2000):
            bar.update(1)
            bar.set_postfix({"expr": f"{1 / (step + 1):.3f}"})
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 21  # 0 %, 5 %, ..., 100 %
    assert lines[-1].startswith("train: 100%") and "2000/2000" in lines[-1] and "expr=0.001" in lines[-1]


def test_a_bar_stopped_early_or_without_a_total_still_ends_on_its_last_state() -> None:
    log = io.StringIO()
    with progress(total=100, desc="extract", unit="cell", file=log) as bar:
        bar.update(37)
    assert log.getvalue().splitlines()[-1].startswith("extract:  37%")
    log = io.StringIO()
    for _ in progress(iter(range(7)), desc="screen", file=log):
        pass
    assert log.getvalue().splitlines()[-1].startswith("screen: 7it")
