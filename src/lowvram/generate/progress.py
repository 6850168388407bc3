"""The progress bar and Ctrl-C of a generation.

Ctrl-C only sets a flag; the pipeline's step callback reads it after each step, so a run stops between
steps (never inside one, never with a half-written file) and says at which step.
"""

from __future__ import annotations

import signal


class StepWatch:
    """`with StepWatch(console, total) as w:` ... call `w.advance()` once per finished denoising step;
    it returns True when the user pressed Ctrl-C. `console=None` shows no bar."""

    def __init__(self, console, total: int, label: str = "denoising") -> None:
        self.step = 0
        self.interrupt = False
        self._previous = None
        self._bar = None
        if console is not None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console, transient=False)
            self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> "StepWatch":
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)
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
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def advance(self, latents=None) -> bool:
        """One finished step (`latents`: its latents, for observers that preview; unused here)."""
        self.step += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self.step)
        return self.interrupt
