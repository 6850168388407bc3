"""Per-component facts the planner needs from the model code: streamable units and their sizes.

Computed once from the meta-device module (structure.streamable_units) and cached on disk next to the
simulation cache, keyed by the component's config and the library versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..cache import cached_json, lookup_json
from ..catalogue import ComponentSpec, build_component, load_config
from ..catalogue.build import config_identity
from ..structure import Unit
from .cost import BYTES_PER_WEIGHT


@dataclass(frozen=True)
class ComponentFacts:
    units: tuple[Unit, ...]

    @property
    def params(self) -> int:
        return sum(u.quantizable + u.other for u in self.units)

    def unit_bytes(self, precision: str, compute: str = "bf16") -> list[int]:
        """Bytes of each unit with Linear weights at `precision`. Stored in fp32/bf16/fp16, the whole unit
        is in that dtype; stored in 8 bits, biases, norms, embeddings, convs and the per-output-channel
        scales are in the `compute` dtype (runtime/precision.py)."""
        b = BYTES_PER_WEIGHT[precision]
        rest = b if b >= 2 else BYTES_PER_WEIGHT[compute]
        scale = rest if b == 1 else 0
        return [u.quantizable * b + u.out_channels * scale + u.other * rest for u in self.units]


def component_facts(spec: ComponentSpec) -> ComponentFacts:
    return _facts(spec, config_identity(spec.config))


def facts_known(spec: ComponentSpec) -> bool:
    """Whether the facts are cached or shipped: looking them up builds no module (plan/estimated.py plans
    without the server's plan lock only then)."""
    return lookup_json("facts", _facts_key(spec)) is not None


def _facts_key(spec: ComponentSpec) -> list:
    return [spec.class_name, load_config(spec.config), 1]


@lru_cache(maxsize=None)
def _facts(spec: ComponentSpec, config: str) -> ComponentFacts:
    """Memoised per spec and config text (`config` is only the key: a user's config.json may change)."""
    def compute():
        from ..structure import streamable_units

        return [u.__dict__ for u in streamable_units(build_component(spec))]

    units = cached_json("facts", _facts_key(spec), compute)
    return ComponentFacts(tuple(Unit(**u) for u in units))
