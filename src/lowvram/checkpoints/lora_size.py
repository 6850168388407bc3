"""What a LoRA file puts on the GPU, from its header alone.

runtime/lora.py moves every pair of low-rank factors to the device in the compute dtype and keeps them
there for the whole run, so the plan needs their element count at 2 bytes (bf16/fp16), whatever the
file stores them in (fp32 files are common). The `alpha` scalars are counted too: a few bytes each.
"""

from __future__ import annotations

import os

from ..errors import UserError

COMPUTE_BYTES = 2  # bf16 / fp16: the dtypes the planner computes in


def lora_file_bytes(path: str) -> int:
    """Bytes of the file's floating-point tensors once cast to the compute dtype; UserError if unreadable."""
    from .inspect import read_tensors

    if not os.path.isfile(path):
        raise UserError(f"The LoRA file {path} does not exist.")
    tensors, _ = read_tensors(path)
    floats = [t for t in tensors if t.is_float]
    if not floats:
        raise UserError(f"{path} holds no floating-point tensors, so it is no LoRA.")
    return sum(t.numel for t in floats) * COMPUTE_BYTES
