"""A fixed pool of reusable device buffers for streamed weights.

Streamed units are copied into one of `slots` flat byte buffers, each the size of the largest unit,
allocated once: no allocator churn and no fragmentation however many steps run. A unit's parameters
become typed views into its slot.
"""

from __future__ import annotations

import torch

from .accountant import BudgetAccountant

ALIGN = 256  # bytes: CUDA kernels want aligned pointers; also satisfies every dtype's alignment


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class BufferPool:
    def __init__(self, slot_bytes: int, slots: int, device: torch.device, accountant: BudgetAccountant,
                 owner: str = "stream buffers") -> None:
        self.slot_bytes = align(slot_bytes)
        self.slots = slots
        self.owner = owner
        self.accountant = accountant
        accountant.reserve(self.slot_bytes * slots, owner)
        self.buffers = [torch.empty(self.slot_bytes, dtype=torch.uint8, device=device) for _ in range(slots)]

    def view(self, slot: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        """A tensor shaped and typed like `like`, living in `slot` at byte `offset`."""
        n = like.numel() * like.element_size()
        return self.buffers[slot][offset:offset + n].view(like.dtype).view(like.shape)

    def free(self) -> None:
        self.buffers = []
        self.accountant.release(self.slot_bytes * self.slots, self.owner)
