"""One progress display for a whole batch: images done of all, images per minute, time left.

The rate counts only images made by this run (a resumed run's skipped lines took no time), over the
wall clock since the first image was asked for, so loading the model counts against it as a user sees
it. On a terminal it is rich's bar; otherwise (a log, CI) one line per finished line of the jobs file.
"""

from __future__ import annotations

import time

SECONDS_PER_MINUTE = 60.0


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BatchProgress:
    """Counts images over the whole job; `advance(n, label)` after each finished line."""

    def __init__(self, total: int, already: int, console=None, clock=time.monotonic) -> None:
        """`total`: images in the jobs file; `already`: those found in DIR; `console`: a rich Console
        (None: silent)."""
        self.total = total
        self.done = already
        self.made = 0
        self.console = console
        self.clock = clock
        self.started = clock()
        self._bar = None
        self._task = None

    def rate(self) -> float | None:
        """Images per minute made by this run, None before the first."""
        elapsed = self.clock() - self.started
        return self.made / elapsed * SECONDS_PER_MINUTE if self.made and elapsed > 0 else None

    def eta(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r * SECONDS_PER_MINUTE if r else None

    def summary(self) -> str:
        r = self.rate()
        rate = f"{r:.1f} images/min" if r is not None else "-- images/min"
        return f"{self.done}/{self.total} images  {rate}  ETA {format_eta(self.eta())}"

    def __enter__(self) -> "BatchProgress":
        if self.console is not None and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}  ETA {task.fields[eta]}"), console=self.console)
            self._task = self._bar.add_task("batch", total=self.total, completed=self.done,
                                            rate="-- images/min", eta=format_eta(None))
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, images: int, label: str = "") -> None:
        self.done += images
        self.made += images
        if self.console is None:
            return
        if self._bar is not None:
            r = self.rate()
            self._bar.update(self._task, completed=self.done, rate=f"{r:.1f} images/min" if r else "-- images/min",
                             eta=format_eta(self.eta()))
        else:
            self.console.print(self.summary() + (f"  {label}" if label else ""), markup=False, highlight=False)

    def note(self, text: str) -> None:
        """A message that must not break the bar (a failed line)."""
        if self.console is not None:
            (self._bar.console if self._bar is not None else self.console).print(text, markup=False, highlight=False)
