"""A fixed pool of reusable device buffers for streamed weights.

Streamed units are copied into one of `slots` flat byte buffers, each the size of the largest unit,
allocated once: no allocator churn and no fragmentation however many steps run. A unit's parameters
become typed views into its slot.
"""

from __future__ import annotations

import torch

from .accountant import BudgetAccountant
from .host_buffer import HostBuffer

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


class StagingBuffers:
    """Reused host buffers that pageable weights pass through on their way to the device.

    A copy from pageable memory cannot be asynchronous (the driver stages it through its own pinned
    memory and blocks the calling thread), so units whose host copy is not pinned (past the pinned-RAM
    cap, or memory-mapped from disk) are copied into one of these pinned buffers first, by a worker
    thread, and from there to the device asynchronously. Each buffer is written again only once the
    device copy that last read it has finished: the one place the copy path waits. Exactly sized
    (host_buffer.HostBuffer): torch's pinned allocator would round each up to a power of two.
    """

    def __init__(self, slot_bytes: int, count: int, pin: bool) -> None:
        self.slot_bytes = align(slot_bytes)
        self._host = [HostBuffer(self.slot_bytes, pin) for _ in range(count)]
        self.buffers = [h.tensor for h in self._host]
        self._done: list = [None] * count  # per buffer: the event of the device copy that last read it
        self._next = 0

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * len(self.buffers)

    def acquire(self) -> int:
        """The next buffer round-robin, once the device copy that last read it is done."""
        i = self._next
        self._next = (i + 1) % len(self.buffers)
        if self._done[i] is not None:
            self._done[i].synchronize()
            self._done[i] = None
        return i

    def release(self, i: int, event) -> None:
        """Buffer `i` is being read by the device copy `event` marks the end of (None: already read)."""
        self._done[i] = event

    def view(self, i: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        return self._host[i].view(offset, like)

    def release_all(self) -> None:
        """Unpin every buffer (once no copy reads them any more)."""
        for h in self._host:
            h.release()
