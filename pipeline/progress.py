"""Progress bars that read well both on a terminal and in a cluster log.

On a terminal a stage shows tqdm's bar. When stderr is not a terminal (a batch job's log, a pipe), the same
bar writes one plain line every few percent of the total (and its last state) instead of a carriage-return frame
per update: the same information (count, rate, time left, the loss postfix) in a few dozen lines.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

LOG_EVERY = 0.05  # share of the total between two log lines
LOG_EVERY_S = 30.0  # without a known total: a line at most this often


class LogBar(tqdm):
    """tqdm that prints a line each `every` of the total (and the final state) and never a carriage return."""

    def __init__(self, *args: Any, every: float = LOG_EVERY, **kwargs: Any) -> None:
        self._every, self._step, self._shown_n, self._shown_at = every, -1, -1, 0.0
        kwargs.update(mininterval=0, miniters=1, leave=False)  # every update reaches display(), which decides
        super().__init__(*args, **kwargs)

    def _line(self) -> None:
        self.fp.write(self.format_meter(**self.format_dict) + "\n")
        self.fp.flush()
        self._shown_n, self._shown_at = self.n, time.monotonic()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # close() clearing the bar: a log keeps its lines
            return False
        if self.total:
            step = int(self.n / self.total / self._every + 1e-9)  # how many `every`s of the total are done
            if self.n < self.total and step <= self._step:
                return True
            self._step = step
        elif self._shown_n >= 0 and time.monotonic() - self._shown_at < LOG_EVERY_S:
            return True
        if self.n != self._shown_n or self.n == 0:
            self._line()
        return True

    def close(self) -> None:
        if not self.disable and self.n != self._shown_n:
            self._line()  # the final state
        super().close()


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A progress bar: tqdm's on a terminal, LogBar's lines elsewhere (same arguments as tqdm)."""
    stream = kwargs.get("file") or sys.stderr
    on_terminal = hasattr(stream, "isatty") and stream.isatty()
    return (tqdm if on_terminal else LogBar)(iterable, **kwargs)
