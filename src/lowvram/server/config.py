"""What a server is started with, and what its routes share (kept on `app.state.lowvram`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .jobs import DEFAULT_CAPACITY

# Request bodies larger than this are refused (413) before they are read whole: an init image and a
# mask at lowvram's input cap (4096 x 4096, generate/inputs.py), stored as uncompressed RGB (48 MiB
# each) and base64-encoded (x 4/3), come to 128 MiB.
MAX_BODY_BYTES = 128 * 2**20
DEFAULT_HOST = "127.0.0.1"
LISTEN_HOST = "0.0.0.0"


@dataclass
class ServerConfig:
    registry: object  # server.models.Registry
    machine: object  # plan.Machine
    quality: str = "lossless"
    queue_size: int = DEFAULT_CAPACITY
    credentials: list = field(default_factory=list)  # [(user, password)]; empty: no auth
    outputs: str | None = "outputs"  # where images are saved (A1111's layout); None: not saved
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass
class ServerState:
    config: ServerConfig
    queue: object  # server.jobs.JobQueue
    # Held by whatever plans (the worker's Session and the plan routes): a plan that misses the simulation
    # cache builds modules through diffusers' and transformers' lazy modules, whose concurrent first use
    # from two threads fails ("module 'diffusers' has no attribute ...", the race of cpython#114763's kind).
    plan_lock: object = field(default_factory=threading.Lock)
    pulls: object = None  # server.pulls.Pulls: models pulled from the page (None: this server does not pull)
    # The readout's exact plans, run in the background behind its estimates (server/exact_plans.py)
    exact_plans: object = field(default_factory=lambda: _exact_plans())

    @property
    def registry(self):
        return self.config.registry


def _exact_plans():
    from .exact_plans import ExactPlans

    return ExactPlans()
