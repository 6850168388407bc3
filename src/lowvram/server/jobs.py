"""The queue: one worker thread per GPU holding the Session, first come first served, bounded.

Each request becomes a Job. The worker runs jobs one at a time (a request for another model waits its
turn, then the Session switches models); a job that fails answers its own client with one sentence and
the worker takes the next. A Job is also the Session's step observer: it counts steps, keeps the
latest latents every few steps for the preview, and stops the run at its next step when interrupted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import UserError

DEFAULT_CAPACITY = 16  # requests waiting (the running one not counted); the default
PREVIEW_EVERY = 5  # keep the latents for a preview every this many steps (and at step 1): copies stay cheap
JOIN_SECONDS = 30.0  # how long closing waits for a running step to end
KEEP_FINISHED = 64  # finished jobs kept for /lowvram/v1/jobs/{id} (with their images) before the oldest go

log = logging.getLogger("lowvram.server")


class QueueFull(UserError):
    """The queue holds its maximum: HTTP 503."""


@dataclass
class JobError:
    status: int  # the HTTP status the client gets
    sentence: str


class Job:
    """One request in the queue, and the Session's observer while it runs."""

    def __init__(self, req, kind: str, model: str, total_steps: int, family: str | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.req = req  # a GenerateRequest
        self.kind = kind  # "txt2img" / "img2img": the outputs folder, and A1111's job name
        self.model = model
        self.family = family  # for the preview's latent projection
        self.total = max(1, total_steps)
        self.state = "queued"  # queued -> running -> done / interrupted / failed
        self.step = 0
        self.interrupt = False
        self.stage = ""
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.result = None  # GenerateResult
        self.paths: list[str] = []  # where the images were saved
        self.error: JobError | None = None
        self.done = threading.Event()
        self._latents = None
        self._latents_step = 0
        self._preview: tuple[int, str] | None = None  # (step, base64 PNG) made from the kept latents
        self._pngs: list[bytes] | None = None
        self._callbacks: list = []
        self._lock = threading.Lock()

    # -- the Session's observer --------------------------------------------------------------------
    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def label(self, text: str) -> None:
        self.stage = text

    def advance(self, latents=None) -> bool:
        """One finished step; True stops the run (interrupt)."""
        self.step += 1
        if latents is not None and (self.step == 1 or self.step % PREVIEW_EVERY == 0):
            self._latents = latents[:1].detach().to("cpu", copy=True)
            self._latents_step = self.step
        return self.interrupt

    # -- what clients read -------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        if self.state in ("done", "interrupted", "failed"):
            return 1.0
        return min(1.0, self.step / self.total)

    def eta(self) -> float:
        """Seconds left, from the pace so far (A1111's eta_relative); 0 before the first step."""
        if self.started is None or self.step == 0 or self.finished is not None:
            return 0.0
        elapsed = time.time() - self.started
        return max(0.0, elapsed / self.progress - elapsed)

    def preview(self) -> tuple[int, str] | None:
        """(step, base64 PNG) of the latest kept latents, or None; made once per kept step, however often
        clients poll /progress or follow the events."""
        latents, step = self._latents, self._latents_step
        if latents is None or self.family is None:
            return None
        cached = self._preview
        if cached is None or cached[0] != step:
            from ..generate.output import encode_png
            from ..generate.preview import latent_preview
            from .images import encode_b64

            arr = latent_preview(latents, self.family, self.req.width or 0, self.req.height or 0)
            if arr is None:
                return None
            cached = self._preview = (step, encode_b64(encode_png(arr / 255.0, "")))
        return cached

    def pngs(self) -> list[bytes]:
        """The result's images as PNGs carrying their infotext, encoded once: the saved files and the
        A1111 answer are the same bytes."""
        if self._pngs is None:
            from ..generate.output import encode_png

            res = self.result
            self._pngs = [encode_png(arr, text) for arr, text in zip(res.images, res.infotexts)]
        return self._pngs

    def add_done_callback(self, fn) -> None:
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def _finish(self) -> None:
        self.finished = time.time()
        with self._lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()


async def wait_for(job: Job) -> None:
    """Wait for a job without holding a thread of the server's pool."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def wake():
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))

    job.add_done_callback(wake)
    await fut


class WaitingLine:
    """The line both queues keep (this GPU's JobQueue, the cluster's ClusterQueue): first come first served,
    at most `capacity` waiting, every job by id with finished ones pruned to the last KEEP_FINISHED."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.current: Job | None = None
        self.jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._closed = False

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise QueueFull("The server is shutting down: send the request again once it is back.")

    def _admit(self, job: Job) -> None:
        if len(self._waiting) >= self.capacity:
            raise QueueFull(f"The queue is full ({self.capacity} requests waiting): try again when one has finished.")
        self._waiting.append(job)
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.done.is_set()]
        for j in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
            del self.jobs[j.id]

    def position(self, job: Job) -> int:
        """0: running (or finished); k: k-th in line."""
        try:
            return self._waiting.index(job) + 1
        except ValueError:
            return 0

    def queued(self) -> int:
        return len(self._waiting)

    def _close_line(self) -> list[Job]:
        """Refuse new jobs from now on; the waiting ones, taken out of the line."""
        self._closed = True
        waiting, self._waiting = list(self._waiting), collections.deque()
        return waiting


def fail_unrun(jobs: list[Job]) -> None:
    """Answer jobs a closing server will not run."""
    for job in jobs:
        job.state, job.error = "failed", JobError(503, "The server shut down before this request ran.")
        job._finish()


class JobQueue(WaitingLine):
    """The line on one GPU: one worker thread running the Session."""

    def __init__(self, session, capacity: int = DEFAULT_CAPACITY, on_done=None) -> None:
        """`on_done(job)`: runs on the worker after a job's images are made (saving them)."""
        super().__init__(capacity)
        self.session = session
        self.on_done = on_done
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="lowvram-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._cv:
            self._refuse_if_closed()
            self._admit(job)
            self._cv.notify()
        return job

    def position(self, job: Job) -> int:
        with self._cv:
            return super().position(job)

    def interrupt(self) -> bool:
        """Stop the running job at its next step; False when nothing runs."""
        job = self.current
        if job is None:
            return False
        job.interrupt = True
        return True

    def close(self) -> None:
        """Refuse new jobs, stop the running one, fail the waiting ones, unload the model."""
        with self._cv:
            waiting = self._close_line()
            self._cv.notify_all()
        fail_unrun(waiting)
        self.interrupt()
        self._thread.join(JOIN_SECONDS)
        self.session.unload()

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self.current = job
            try:
                self._run(job)
            finally:
                self.current = None
                job._finish()

    def _run(self, job: Job) -> None:
        import torch

        job.state, job.started = "running", time.time()
        try:
            job.result = self.session.run(job.req, observer=job)
            if job.result.interrupted_at is not None:
                job.state = "interrupted"
                return
            if self.on_done is not None:
                self.on_done(job)
            job.state = "done"
        except UserError as e:
            job.state, job.error = "failed", JobError(400, str(e))
        except torch.OutOfMemoryError:
            job.state, job.error = "failed", JobError(507, "The GPU ran out of memory even after re-planning: "
                                                      "try a smaller size or batch, or free VRAM used by other programs.")
        except Exception as e:  # the worker lives on; the client gets one sentence, the log the traceback
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", JobError(500, f"Generation failed ({type(e).__name__}: {first_line(e)}).")


def first_line(e: BaseException) -> str:
    """The first line of an error's message, at most 300 characters: what a client or a summary shows."""
    text = str(e).strip().splitlines()
    return (text[0] if text else "no message")[:300]
