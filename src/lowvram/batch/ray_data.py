"""`lowvram batch --ray`: the jobs file's lines on Ray Data, one worker per GPU, each under its own plan.

Ray Data's actor pool does the scheduling (a worker per GPU, lines handed to whichever is free, a worker
that dies restarted and its line run again); each worker holds one Session for its life and plans for
the card and RAM it probes itself, so a mixed cluster runs each card under its own plan. Results stream
back to this process as they finish, and batch/run.py writes them into DIR here.
"""

from __future__ import annotations

import logging
import pickle

from ..errors import UserError
from ..server.jobs import first_line
from .run import StepCounter, run_line

LINES_PER_CALL = 1  # a worker answers line by line, so results (and the progress) stream as they finish


class LineWorker:
    """A Ray Data worker: one Session for its life, planned for this worker's own machine."""

    def __init__(self, machine_flags: tuple, quality: str) -> None:
        from ..generate.session import LONG_LIVED_IMAGES_PER_LOAD, Session, planner_for
        from ..plan.machine import resolve_run_machine

        gpu, vram, ram = machine_flags  # all None: this worker probes its own card and RAM
        self.session = Session(planner_for(resolve_run_machine(gpu, vram, ram)[0], quality, LONG_LIVED_IMAGES_PER_LOAD))

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from .jobs import BatchLine

        out = []
        for number, request in zip(batch["line"], batch["request"]):
            # Pickles made by the driver of this same job (trusted): a GenerateRequest as the Session takes it.
            line = BatchLine(int(number), pickle.loads(request))
            out.append(pickle.dumps(run_line(self.session, line, StepCounter())))
        return {"line": np.asarray(batch["line"]), "result": np.array(out, dtype=object)}


def ray_results(cluster, pending: list, machine_flags: tuple, quality: str):
    """Each pending line's LineResult, as the cluster's workers finish them."""
    import ray
    from ray.data import DataContext

    if not pending:
        return
    _quiet_ray_data(DataContext.get_current())
    workers, gpus_each = cluster.workers()
    items = [{"line": line.number, "request": pickle.dumps(line.request)} for line in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        LineWorker, fn_constructor_kwargs={"machine_flags": machine_flags, "quality": quality},
        compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus_each, batch_size=LINES_PER_CALL)
    try:
        for row in ds.iter_rows():
            yield pickle.loads(row["result"])
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e  # a worker's own exception, without Ray's frames
        raise UserError(f"The Ray job stopped ({type(cause).__name__}: {first_line(cause)}); the images finished so "
                        "far are written: rerun the same command to make the rest.") from None


def _quiet_ray_data(ctx) -> None:
    """Ray Data's per-operator progress bars and start-up log lines would break lowvram's one display."""
    ctx.enable_progress_bars = False
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
