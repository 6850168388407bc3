"""Which replica runs a request: the plans decide, not a scheduler of our own.

Order (issue #14): a free replica that already has the model loaded (no reload); else the free replica
whose plan for the model is fastest; else the request waits. A model no replica's plan fits is refused
with the smallest card that would fit it. Pure functions over the replicas' reported state, so the
rules are tested without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReplicaState:
    """What the ingress knows of one replica: its report (replica.info) and its own bookkeeping."""

    name: str
    card: str = ""
    vram_bytes: int = 0
    ram_bytes: int = 0
    plans: dict = field(default_factory=dict)  # model name -> {"fits", "seconds_per_image", ...}
    loaded: str | None = None
    busy: bool = False
    up: bool = False  # answered its last info(); False while Ray Serve restarts it
    served: int = 0  # requests it answered with images

    def fits(self, model: str) -> bool:
        return bool(self.plans.get(model, {}).get("fits"))

    def seconds(self, model: str) -> float:
        return float(self.plans.get(model, {}).get("seconds_per_image", float("inf")))


def choose(model: str, replicas: list[ReplicaState]) -> ReplicaState | None:
    """The replica to run `model` now, or None: wait (every fitting replica busy or restarting)."""
    free = [r for r in replicas if r.up and not r.busy and r.fits(model)]
    if not free:
        return None
    loaded = [r for r in free if r.loaded == model]
    if loaded:
        return loaded[0]
    return min(free, key=lambda r: (r.seconds(model), r.name))


def fits_somewhere(model: str, replicas: list[ReplicaState]) -> bool:
    """Whether any replica's plan fits the model (restarting ones count: they come back on the same card)."""
    return any(r.fits(model) for r in replicas)


def smallest_fitting_card(spec, file_weights, ram_bytes: int, quality: str) -> str | None:
    """The table card with the least VRAM whose plan fits `spec` at its default size with this RAM."""
    from ..machines.cards import CARDS
    from ..plan import Policy, Workload, make_plan
    from ..plan.machine import machine_from_card

    wl = Workload(spec.width, spec.height, 1, spec.steps)
    for card in sorted(CARDS, key=lambda c: (c.vram_bytes, c.name)):
        if make_plan(spec, wl, machine_from_card(card, ram_bytes), Policy(quality), file_weights=file_weights).fits:
            return card.name
    return None
