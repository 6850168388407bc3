"""Which dtype a component's weights are stored in, and which it computes in without losing a bit.

Lossless means bit-exact weights: the stored dtype is kept, or widened where the machine cannot compute
in it — fp16 -> fp32 and bf16 -> fp32 are exact; fp16 <-> bf16 is not (bf16 drops 3 mantissa bits, fp16
loses range). A CPU computes in cost.CPU_COMPUTE_DTYPE (fp32: widening, so lossless from any 16-bit
file). A family that cannot compute in fp16 at all (a VAE whose config says `force_upcast`: SDXL's
overflows in fp16) is widened to fp32 there, and the plan says why.
"""

from __future__ import annotations

from ..catalogue import ComponentSpec, ModelSpec, load_config
from . import cost
from ..contract import Machine

FLOAT_DTYPES = ("fp32", "bf16", "fp16")  # plan names of the dtypes weights can be stored and computed in


def stored_dtype(model: ModelSpec, spec: ComponentSpec, file_weights: dict | None) -> str:
    """The dtype the file holds the component in, when the caller passes it as (dtype, 1.0) in file_weights
    (inspection passes GGUF types only, checkpoints/inspect.py); else the dtype the catalogue says the model
    is published in."""
    entry = (file_weights or {}).get(spec.name)
    if entry and entry[0] in FLOAT_DTYPES:
        return entry[0]
    return model.dtype


def file_quant(spec: ComponentSpec, file_weights: dict | None) -> tuple[str | None, float | None]:
    """(GGUF type, bytes per bf16 byte) for a component a file stores quantised, else (None, None)."""
    qtype, ratio = (file_weights or {}).get(spec.name, (None, None))
    return (qtype, ratio) if qtype and qtype not in FLOAT_DTYPES else (None, None)


def half_dtype(machine: Machine) -> str:
    """The 16-bit type the machine computes 8-bit and GGUF weights in (a CPU: its compute dtype)."""
    if machine.device == "cpu":
        return cost.CPU_COMPUTE_DTYPE
    return "bf16" if machine.bf16 else "fp16"


def lossless_dtype(spec: ComponentSpec, stored: str, machine: Machine) -> tuple[str, str]:
    """(dtype the component is held and computed in, why it differs from the stored one, or "")."""
    if machine.device == "cpu":
        compute = cost.CPU_COMPUTE_DTYPE
        why = f"the CPU computes in {compute}" if compute != stored else ""
        return compute, why
    if stored == "bf16" and not machine.bf16:
        return "fp32", f"stored in bf16, which {machine.name} cannot compute in: widened to fp32 (bit-exact)"
    if stored == "fp16" and _overflows_in_fp16(spec):
        return "fp32", "overflows in fp16 (its config sets force_upcast): computed in fp32 (bit-exact widening)"
    return stored, ""


def _overflows_in_fp16(spec: ComponentSpec) -> bool:
    return spec.role == "vae" and bool(load_config(spec.config).get("force_upcast"))
