"""Pulls started from the page: `lowvram pull` run as a background job, one per model at a time.

A pull is planned when it is asked for (an unknown model or a quant the model does not publish is
refused at once, with its sentence), then previewed and downloaded on its own thread by the same
code as `lowvram pull` (pull_order.py, hub.py), into the same place: the Hugging Face cache. Progress
comes from huggingface_hub's own progress hook (hub_progress.Meter). A second request for a model
being pulled joins the first; cancel stops it at its next chunk: the files it finished stay in the
cache (the next pull skips them), the one it was writing is deleted by huggingface_hub. When a pull ends well, `on_pulled` runs (the server
lists the new model without a restart).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from ..errors import UserError
from ..hub_progress import Meter, PullCancelled

JOIN_SECONDS = 15.0  # how long closing waits for cancelled pulls' threads, all together (a read times out after 10 s)
KEEP_FINISHED = 32  # finished pulls kept for GET /lowvram/v1/pulls/{id} before the oldest go

log = logging.getLogger("lowvram.server")


class Pull:
    """One model being pulled: its order (what and why), its state and its meter."""

    def __init__(self, order, gguf: str | None) -> None:
        self.id = uuid.uuid4().hex
        self.order = order
        self.model = order.spec.name
        self.gguf = gguf
        self.state = "queued"  # queued (previewing) -> downloading -> done / failed / cancelled
        self.error: str | None = None
        self.meter = Meter()
        self.bytes_total = 0  # what is not in the cache yet, from the preview
        self.bytes_cached = 0
        self.files_total = 0
        self.created = time.time()
        self.download_started: float | None = None
        self.finished: float | None = None
        self.path: str | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def status(self) -> dict:
        """What the page shows: state, bytes and files done of their totals, speed (bytes received since the
        download began, over its time) and seconds left at that speed (None until there is a speed)."""
        m = self.meter
        done = min(m.bytes_done, self.bytes_total) if self.bytes_total else m.bytes_done
        rate = None
        if self.download_started is not None and m.bytes_received > 0:
            elapsed = (self.finished or time.time()) - self.download_started
            rate = m.bytes_received / elapsed if elapsed > 0 else None
        eta = None
        if self.state == "done":
            eta = 0.0
        elif self.state == "downloading" and rate:
            eta = max(0, self.bytes_total - done) / rate
        out = {"id": self.id, "model": self.model, "state": self.state, "weights": self.order.weights,
               "reason": self.order.choice.reason, "command": self.order.command(self.gguf),
               "bytes_done": done, "bytes_total": self.bytes_total, "bytes_cached": self.bytes_cached,
               "files_done": min(m.files_done, self.files_total), "files_total": self.files_total,
               "bytes_per_second": round(rate, 1) if rate else None,
               "eta_seconds": round(eta, 2) if eta is not None else None, "path": self.path}
        if self.error is not None:
            out["error"] = self.error
        return out


class Pulls:
    """The server's pulls by id; at most one running per model."""

    def __init__(self, machine, plan_lock, on_pulled=None) -> None:
        self.machine = machine
        self.plan_lock = plan_lock
        self.on_pulled = on_pulled  # on_pulled(pull): runs on the pull's thread after it ends well
        self.pulls: dict[str, Pull] = {}
        self._orders: dict[tuple, object] = {}  # (model, policy, quant) -> PullOrder: plans are pure, the machine fixed
        self._lock = threading.Lock()
        self._announcing = threading.Lock()  # on_pulled one at a time: two pulls may end together
        self._closed = False

    def order(self, name: str, quality: str | None = None, gguf: str | None = None):
        """What pulling catalogue model `name` fetches on this machine (a pull_order.PullOrder), planned
        once per server: the catalogue shows it on each row and the Pull button then fetches exactly that."""
        from ..catalogue import get_model
        from ..contract import POLICIES
        from ..plan.weights_choice import check_request
        from ..pull_order import PAGE_POLICY, order_pull

        if quality is not None and quality not in POLICIES:
            raise UserError(f"Unknown quality {quality!r}: choose lossless, balanced or fast.")
        spec = get_model(name)
        policy = quality or PAGE_POLICY
        key = (spec.name, policy, gguf.strip().upper() if gguf else None)
        if key not in self._orders:
            check_request(spec, policy, gguf)
            with self.plan_lock:
                self._orders[key] = order_pull(spec, policy, gguf, self.machine)
        return self._orders[key]

    def start(self, name: str, quality: str | None = None, gguf: str | None = None) -> Pull:
        """Start pulling catalogue model `name` (or join its running pull); UserError for what cannot be pulled."""
        from ..catalogue import get_model

        running = self.running(get_model(name).name)
        if running is not None:
            return running
        order = self.order(name, quality, gguf)
        with self._lock:
            if self._closed:
                raise UserError("The server is shutting down: pull the model again once it is back.")
            running = self._running_locked(order.spec.name)
            if running is not None:  # another request planned the same model meanwhile
                return running
            pull = Pull(order, gguf)
            self.pulls[pull.id] = pull
            self._prune_locked()
            pull.thread = threading.Thread(target=self._run, args=(pull,), name=f"lowvram-pull-{order.spec.name}",
                                           daemon=True)
            pull.thread.start()
        return pull

    def running(self, model: str) -> Pull | None:
        with self._lock:
            return self._running_locked(model)

    def _running_locked(self, model: str) -> Pull | None:
        return next((p for p in self.pulls.values() if p.model == model and not p.done.is_set()), None)

    def _prune_locked(self) -> None:
        finished = [p for p in self.pulls.values() if p.done.is_set()]
        for p in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
            del self.pulls[p.id]

    def get(self, pull_id: str) -> Pull:
        from .models import UnknownName

        pull = self.pulls.get(pull_id)
        if pull is None:
            raise UnknownName(f"There is no pull {pull_id!r} (finished pulls are forgotten after a while).")
        return pull

    def cancel(self, pull_id: str) -> Pull:
        pull = self.get(pull_id)
        pull.meter.cancel()
        return pull

    def close(self) -> None:
        """Cancel every running pull and wait (bounded) for their threads."""
        with self._lock:
            self._closed = True
            running = [p for p in self.pulls.values() if not p.done.is_set()]
        for p in running:
            p.meter.cancel()
        deadline = time.monotonic() + JOIN_SECONDS
        for p in running:
            p.thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, pull: Pull) -> None:
        from ..hub import download, preview

        try:
            previews = [preview(f) for f in pull.order.fetches]
            files = [i for fs in previews for i in fs]
            pull.files_total = len(files)
            pull.bytes_total = sum(i.size for i in files if not i.cached)
            pull.bytes_cached = sum(i.size for i in files if i.cached)
            if pull.meter.cancelled:
                raise PullCancelled("cancelled before the download began")
            pull.state, pull.download_started = "downloading", time.time()
            pulled = download(pull.order.spec, list(pull.order.fetches), tqdm_class=pull.meter.bar_class())
            pull.path = pulled.path
            if self.on_pulled is not None:
                with self._announcing:
                    self.on_pulled(pull)
            pull.state = "done"
        except PullCancelled:
            pull.state = "cancelled"
        except UserError as e:
            pull.state, pull.error = "failed", str(e)
        except Exception as e:  # the server lives on; the page gets one sentence, the log the traceback
            from .jobs import first_line

            log.exception("pull of %s failed", pull.model)
            pull.state, pull.error = "failed", (f"Pulling {pull.model} failed ({type(e).__name__}: {first_line(e)}); "
                                                "pull it again: the files it finished are kept.")
        finally:
            pull.finished = time.time()
            pull.done.set()
