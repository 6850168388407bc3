"""How long reading a component's weights into its planned precision takes: the plan's prediction
beside which `generate` reports the measured time (runtime/loading.py does the reading)."""

from __future__ import annotations

from dataclasses import replace

from ..contract import ComponentPlan, Machine
from . import cost
from .dtypes import FLOAT_DTYPES


def load_seconds(cp: ComponentPlan, machine: Machine) -> float:
    """max(the file's bytes at disk speed, the conversion), as the loader overlaps the two.

    Float weights already stored in the planned dtype are copied; other float ones are cast; 8-bit ones
    quantised; GGUF ones kept as the file's blocks (copied). Disk-backed weights in their stored dtype are
    mapped, not read: nothing to load before the first call (they are read as they stream). The stored
    dtype is told from bytes per weight, so an fp16 file planned as bf16 counts as a copy (same cost
    order: one pass over the bytes either way)."""
    if cp.params <= 0 or cp.stored_bytes <= 0:
        return 0.0
    stored_per_weight = cp.stored_bytes / cp.params
    if cp.precision in ("fp8", "int8"):
        convert = cp.params / cost.LOAD_QUANTISE_ELEMENTS_PER_S
    elif cp.precision not in FLOAT_DTYPES:  # GGUF blocks: read as stored
        convert = cp.stored_bytes / cost.LOAD_COPY_BYTES_PER_S
    elif round(stored_per_weight) == cost.BYTES_PER_WEIGHT[cp.compute_dtype]:
        if cp.source == "disk":
            return 0.0
        convert = cp.stored_bytes / cost.LOAD_COPY_BYTES_PER_S
    else:
        convert = cp.params / cost.LOAD_CAST_ELEMENTS_PER_S
    return max(cp.stored_bytes / machine.disk_bytes_per_s, convert)


def with_load_times(components: tuple[ComponentPlan, ...], machine: Machine) -> tuple[ComponentPlan, ...]:
    """The components, each with its predicted load_seconds."""
    return tuple(replace(c, load_seconds=load_seconds(c, machine)) for c in components)
