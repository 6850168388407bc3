"""The header-level view of a stored tensor, shared by every file format."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TensorInfo:
    """Name, logical shape, storage type and byte size of one tensor, as its file's header states."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype ("BF16", "F8_E4M3") or GGUF quantisation type ("Q4_K", "F16")
    nbytes: int
    offset: int = 0  # absolute byte offset of the data in the file

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        """A floating-point tensor (F32, F16, BF16, F8_*): weights, not integer bookkeeping."""
        return self.dtype.upper().startswith(("F", "BF"))
