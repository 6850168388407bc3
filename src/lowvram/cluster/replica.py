"""One Ray Serve replica per GPU: a Session planned for the card and RAM this replica probes itself.

A replica runs one request at a time (the Session is not thread-safe, and one card runs one model
well); `info()` answers while it works, so the ingress can show and route by what each card holds and
how it would run each model. Errors a client caused come back as (status, sentence), as the single
server answers them; a replica that dies is Ray Serve's to restart and the ingress's to route around.
"""

from __future__ import annotations

import asyncio
import threading

from ..errors import UserError

# The size plans are shown and compared at when routing: each model's own default size, one image.
PLAN_BATCH = 1


class Replica:
    """The body of each per-GPU deployment (cluster/app.py wraps it with `serve.deployment`)."""

    def __init__(self, name: str, models: list, machine_flags: tuple, quality: str) -> None:
        """`models`: the ServedModels the ingress lists; `machine_flags`: (gpu, vram, ram), all None to probe
        this replica's own card and RAM."""
        from ..generate.session import LONG_LIVED_IMAGES_PER_LOAD, Session, planner_for
        from ..plan.machine import resolve_run_machine
        from ..server.models import Registry

        gpu, vram, ram = machine_flags
        self.name = name
        self.machine = resolve_run_machine(gpu, vram, ram)[0]
        self.quality = quality
        self.session = Session(planner_for(self.machine, quality, LONG_LIVED_IMAGES_PER_LOAD))
        self.registry = Registry(models, {})  # the ingress's names, inspected here as the server inspects them
        self.loaded: str | None = None  # the model name of the last request that ran
        self.running = 0
        self._lock = threading.Lock()  # one generation at a time
        self._plans = None

    def plans(self) -> dict:
        """Each listed model's plan on this replica's machine at its default size: fits, s/image, VRAM."""
        if self._plans is None:
            self._plans = {m.name: self._plan(m) for m in self.registry.models.values()}
        return self._plans

    def _plan(self, m) -> dict:
        from ..plan import Policy, Workload, make_plan

        try:
            spec = self.registry.architecture(m)
            p = make_plan(spec, Workload(spec.width, spec.height, PLAN_BATCH, spec.steps), self.machine,
                          Policy(self.quality), file_weights=self.registry.file_weights(m))
        except (UserError, KeyError) as e:
            return {"fits": False, "why": str(e)}
        return {"fits": bool(p.fits), "seconds_per_image": round(p.seconds_per_image, 3),
                "peak_vram_bytes": int(p.peak_vram_bytes), "peak_ram_bytes": int(p.peak_ram_bytes),
                "model": spec.name}

    def info(self) -> dict:
        import os

        return {"replica": self.name, "pid": os.getpid(), "card": self.machine.name,
                "vram_bytes": int(self.machine.vram_bytes), "ram_bytes": int(self.machine.ram_bytes),
                "loaded": self.loaded, "queue": self.running, "plans": self.plans()}

    async def generate(self, model_name: str, request) -> tuple:
        """('ok', GenerateResult) or ('error', HTTP status, sentence); runs off the replica's event loop so
        `info()` still answers."""
        self.running += 1
        try:
            return await asyncio.to_thread(self._generate, model_name, request)
        finally:
            self.running -= 1

    def _generate(self, model_name: str, request) -> tuple:
        import torch

        from ..batch.run import StepCounter

        with self._lock:
            try:
                res = self.session.run(request, observer=StepCounter())
            except UserError as e:
                return ("error", 400, str(e))
            except torch.OutOfMemoryError:
                return ("error", 507, "The GPU ran out of memory even after re-planning: try a smaller size or batch.")
            finally:
                self.loaded = model_name if self.session.loaded is not None else None
            return ("ok", res)
