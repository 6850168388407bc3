"""Running a batch: skip what DIR holds, run the rest, write each line's images as it finishes.

The same loop serves both back ends: this machine's Session (`local_results`) and Ray Data's workers
(batch/ray_data.py) each yield a LineResult per line, and only this process writes files — on a cluster
DIR is the machine you typed the command on, not the workers'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError
from .jobs import BatchLine
from .outputs import finished_lines, image_names, write_line


@dataclass
class LineResult:
    number: int
    names: list[str] = field(default_factory=list)
    images: list = field(default_factory=list)  # float RGB arrays in [0, 1]
    infotexts: list[str] = field(default_factory=list)
    error: str | None = None  # one sentence when the line could not be made (it stays to be rerun)


@dataclass
class BatchSummary:
    lines: int  # in the jobs file
    skipped: int  # already in DIR
    made: int  # lines made by this run
    images: int  # images written by this run
    failed: list[tuple[int, str]] = field(default_factory=list)


class StepCounter:
    """The Session's step observer where no signal handler can be installed (a Ray worker's thread) and
    no per-step bar is wanted: it only counts."""

    def __init__(self) -> None:
        self.step = 0
        self.interrupt = False

    def __enter__(self) -> "StepCounter":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def label(self, text: str) -> None:
        return None

    def advance(self, latents=None) -> bool:
        self.step += 1
        return self.interrupt


def run_line(session, line: BatchLine, observer=None) -> LineResult:
    """One line on a Session; a UserError (a plan that does not fit, an unreadable file) is its result.
    Ctrl-C (the Session's default observer stops between steps) stops the whole batch: KeyboardInterrupt."""
    try:
        res = session.run(line.request, observer=observer)
    except UserError as e:
        return LineResult(line.number, error=str(e))
    if res.interrupted_at is not None:
        raise KeyboardInterrupt
    return LineResult(line.number, image_names(line.number, res.seeds), list(res.images), list(res.infotexts))


def local_results(session, pending: list[BatchLine]):
    """This machine's back end: the lines in order on one Session."""
    for line in pending:
        yield run_line(session, line)


def pending_lines(lines: list[BatchLine], out_dir: str) -> list[BatchLine]:
    done = finished_lines(out_dir)
    return [line for line in lines if line.number not in done]


def run_batch(lines: list[BatchLine], out_dir: str, results, console=None) -> BatchSummary:
    """Write what `results(pending)` yields into DIR, with one progress display on `console` (a rich
    Console; None: silent); raises a UserError at the end when lines failed (the others are written, and
    a rerun retries only those)."""
    from .progress import BatchProgress

    pending = pending_lines(lines, out_dir)
    summary = BatchSummary(len(lines), len(lines) - len(pending), 0, 0)
    total = sum(line.images for line in lines)
    progress = BatchProgress(total, total - sum(line.images for line in pending), console)
    with progress:
        if summary.skipped:
            progress.note(f"{summary.skipped} of {len(lines)} lines already in {out_dir}: skipped")
        for r in results(pending):
            if r.error is not None:
                summary.failed.append((r.number, r.error))
                progress.note(f"line {r.number} failed: {r.error}")
                continue
            write_line(out_dir, r.names, r.images, r.infotexts)
            summary.made += 1
            summary.images += len(r.images)
            progress.advance(len(r.images), r.names[0] if len(r.names) == 1 else f"{r.names[0]} ...")
    if summary.failed:
        numbers = ", ".join(str(n) for n, _ in summary.failed)
        raise UserError(f"{len(summary.failed)} of {len(lines)} lines failed (line {numbers}), the rest are in "
                        f"{out_dir}: fix what the messages above say and rerun to make only those.")
    return summary
