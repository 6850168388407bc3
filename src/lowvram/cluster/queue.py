"""The ingress's queue: the single server's JobQueue interface over the cluster's replicas.

The server's routers (A1111's and lowvram's) submit Jobs and wait for them exactly as on one GPU; here
a job goes to the replica routing.choose picks, runs there, and its result comes back into the Job
(saved under --outputs by the ingress, as the single server saves). A replica that dies mid-request
(killed, out of memory, its machine gone: Ray raises RayActorError) is marked down until Ray Serve has
restarted it, and the job goes back to the front of the line to run on another replica — the client
waits a little longer and gets its image.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..errors import UserError
from ..server.jobs import JobError, WaitingLine, fail_unrun
from .routing import ReplicaState, choose, fits_somewhere, smallest_fitting_card

MAX_ATTEMPTS = 3  # replicas a request may see die under it before its client is told
RESTART_POLL_S = 1.0  # how often a replica that died is asked whether Ray Serve has it back
INFO_TIMEOUT_S = 600.0  # a replica's first report plans every listed model (simulation: seconds each)

log = logging.getLogger("lowvram.cluster")


class ClusterQueue(WaitingLine):
    """The line over the replicas (`current`: the latest dispatched job, the one A1111's /progress shows);
    runs on the ingress's loop."""

    def __init__(self, handles: dict, registry, quality: str, capacity: int, on_done=None) -> None:
        """`handles`: replica name -> Ray Serve DeploymentHandle of that replica's deployment."""
        super().__init__(capacity)
        self.handles = handles
        self.registry = registry
        self.quality = quality
        self.on_done = on_done
        self.replicas = {name: ReplicaState(name) for name in handles}
        self._attempts: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refusals: dict[str, str] = {}

    async def start(self) -> None:
        """Wait for every replica's first report (its card, RAM and plans)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._refresh(name) for name in self.handles))

    async def _refresh(self, name: str) -> dict | None:
        try:
            info = await asyncio.wait_for(self.handles[name].info.remote(), INFO_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 — a replica that cannot answer is down, whatever Ray says why
            log.warning("replica %s did not report: %s", name, e)
            self.replicas[name].up = False
            return None
        r = self.replicas[name]
        r.card, r.vram_bytes, r.ram_bytes, r.plans = info["card"], info["vram_bytes"], info["ram_bytes"], info["plans"]
        r.loaded, r.up = info["loaded"], True
        return info

    async def cluster(self) -> list[dict]:
        """Each replica as /lowvram/v1/cluster shows it (asking the replicas that are not running a job)."""
        await asyncio.gather(*(self._refresh(n) for n, r in self.replicas.items() if r.up and not r.busy))
        return [{"replica": r.name, "card": r.card, "vram_bytes": r.vram_bytes, "ram_bytes": r.ram_bytes,
                 "state": ("running" if r.busy else "idle") if r.up else "restarting", "loaded_model": r.loaded,
                 "queue_length": int(r.busy), "served": r.served, "plans": r.plans} for r in self.replicas.values()]

    # -- the JobQueue interface the server's routers use ----------------------------------------------
    def submit(self, job):
        self._refuse_if_closed()
        self._check_fits(job.model)
        self._admit(job)
        self._loop.call_soon_threadsafe(self._pump)
        return job

    def interrupt(self) -> bool:
        """Steps run on the replicas, out of reach of a flag here: nothing to stop between steps."""
        return False

    def close(self) -> None:
        fail_unrun(self._close_line())

    # -- routing ----------------------------------------------------------------------------------------
    def _check_fits(self, model: str) -> None:
        """Refuse a model no replica's plan fits, naming the smallest card that would."""
        reps = list(self.replicas.values())
        if fits_somewhere(model, reps):
            return
        if model not in self._refusals:
            served = self.registry.get(model)
            spec = self.registry.architecture(served)
            ram = max((r.ram_bytes for r in reps), default=0)
            card = smallest_fitting_card(spec, self.registry.file_weights(served), ram, self.quality)
            cards = ", ".join(sorted({r.card for r in reps})) or "none"
            self._refusals[model] = (f"{model} fits none of this cluster's GPUs ({cards}): the smallest card that would "
                                     f"fit it is {card}, add one to the cluster." if card else
                                     f"{model} fits none of this cluster's GPUs ({cards}) nor any card lowvram knows "
                                     "with this RAM: give the machines more RAM.")
        raise UserError(self._refusals[model])

    def _pump(self) -> None:
        """Start every waiting job a replica is free for, in order (a job no free replica fits waits)."""
        reps = list(self.replicas.values())
        for job in list(self._waiting):
            r = choose(job.model, reps)
            if r is None:
                continue
            self._waiting.remove(job)
            r.busy = True
            self.current = job
            self._loop.create_task(self._run(job, r))

    async def _run(self, job, r: ReplicaState) -> None:
        import ray

        job.state, job.started = "running", job.started or time.time()
        died = False
        try:
            outcome = await self.handles[r.name].generate.remote(job.model, job.req)
            if outcome[0] == "ok":
                job.result = outcome[1]
                job.step = job.total
                if self.on_done is not None:
                    await asyncio.to_thread(self.on_done, job)
                job.state = "done"
            else:
                job.state, job.error = "failed", JobError(outcome[1], outcome[2])
        except ray.exceptions.RayActorError:
            died = True
        except Exception as e:  # noqa: BLE001 — the client gets one sentence, the log the traceback
            log.exception("job %s failed on %s", job.id, r.name)
            job.state, job.error = "failed", JobError(500, f"Generation failed ({type(e).__name__}).")
        finally:
            r.busy = False
            if self.current is job:
                self.current = None
        if died:
            self._replica_died(job, r)
        else:
            r.loaded = job.model if job.state == "done" else r.loaded
            r.served += job.state == "done"
            self._attempts.pop(job.id, None)
            job._finish()
        self._pump()

    def _replica_died(self, job, r: ReplicaState) -> None:
        r.up, r.loaded = False, None
        self._loop.create_task(self._await_restart(r))
        n = self._attempts[job.id] = self._attempts.get(job.id, 0) + 1
        if n >= MAX_ATTEMPTS:
            del self._attempts[job.id]
            job.state, job.error = "failed", JobError(503, f"{n} replicas died running this request: "
                                                      "check the cluster (`ray status`) and send it again.")
            job._finish()
            return
        log.warning("replica %s died running job %s: running it again elsewhere", r.name, job.id)
        job.state, job.step = "queued", 0
        self._waiting.appendleft(job)

    async def _await_restart(self, r: ReplicaState) -> None:
        while not self._closed and await self._refresh(r.name) is None:
            await asyncio.sleep(RESTART_POLL_S)
        self._pump()
