"""The progress display and Ctrl-C of a generation.

Ctrl-C only sets a flag; the pipeline's step callback reads it after each step, so a run stops between
steps (never inside one, never with a half-written file) and says at which step.

On a terminal the progress is a rich bar with s/it and ETA. Piped to a file or a log (a slow CPU run can
take many minutes per image) a redrawn bar would write nothing useful, so it prints plain lines instead —
`denoising: step 3/20, 12.4 s/it, ETA 3:31` — at most every PLAIN_EVERY_S seconds, and at the last step.
"""

from __future__ import annotations

import signal
import time

PLAIN_EVERY_S = 5.0  # seconds between two plain progress lines in a log (often enough to see it live)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def rate_text(seconds_per_step: float | None) -> str:
    """s/it as diffusers' and A1111's bars show it (it/s when faster than one step a second)."""
    if not seconds_per_step:
        return "-- s/it"
    if seconds_per_step < 1:
        return f"{1 / seconds_per_step:.2f} it/s"
    return f"{seconds_per_step:.2f} s/it"


class StepWatch:
    """`with StepWatch(console, total) as w:` ... call `w.advance()` once per finished denoising step;
    it returns True when the user pressed Ctrl-C. `console=None` shows nothing; a console that is not a
    terminal gets plain lines."""

    def __init__(self, console, total: int, label: str = "denoising", clock=time.monotonic) -> None:
        self.step = 0
        self.total = total
        self.interrupt = False
        self._previous = None
        self._bar = None
        self._console = console
        self._label = label
        self._clock = clock
        self._start = self._last_line = None
        self._plain = console is not None and not console.is_terminal
        if console is not None and not self._plain:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False)
            self._task = self._bar.add_task(label, total=total, rate=rate_text(None))

    def __enter__(self) -> "StepWatch":
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
        self._start = self._last_line = self._clock()
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        self.interrupt = True

    def label(self, text: str) -> None:
        """Name what the bar counts now (a cascade's stage)."""
        self._label = text
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def seconds_per_step(self) -> float | None:
        if not self.step or self._start is None:
            return None
        return (self._clock() - self._start) / self.step

    def advance(self, latents=None) -> bool:
        """One finished step (`latents`: its latents, for observers that preview; unused here)."""
        self.step += 1
        per = self.seconds_per_step()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.step, rate=rate_text(per))
        elif self._plain:
            now = self._clock()
            if now - self._last_line >= PLAIN_EVERY_S or self.step >= self.total:
                self._last_line = now
                eta = "" if per is None or self.step >= self.total else f", ETA {_clock(per * (self.total - self.step))}"
                self._console.print(f"{self._label}: step {self.step}/{self.total}, {rate_text(per)}{eta}",
                                    highlight=False, soft_wrap=True)
        return self.interrupt
