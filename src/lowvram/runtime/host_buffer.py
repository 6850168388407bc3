"""Exactly-sized page-locked host memory, for the weights that are streamed to the device every step.

Hand-written because torch's way of pinning rounds every allocation up to a power of two: `pin_memory()`
and `torch.empty(..., pin_memory=True)` go through ATen's CachingHostAllocator, which allocates
`PowerOf2Ceil(size)` bytes and keeps freed blocks cached. Pinning a streamed model tensor by tensor that
way costs far more host RAM than the weights (computed from the real-size models' streamed tensors:
SDXL at 4 GiB 2.17 -> 2.84 GiB, 1.31x; Flux-dev at 8 GiB 16.2 -> 26.0 GiB, 1.60x; SD3.5-Large at 8 GiB
8.8 -> 12.5 GiB, 1.42x: `bench/pinned_rounding.py`) — RAM the plan never counted and a 32 GB machine does not have.

A HostBuffer is one anonymous private mapping of exactly the asked size (transparent huge pages asked
for, so page-locking and the DMA engine walk fewer pages), registered with the CUDA driver
(`cudaHostRegister`: page-locked, so device copies from it are asynchronous DMA) and unregistered when it
is released (on Windows, which has no anonymous private mappings, an ordinary allocation is registered
instead). Without CUDA, or if registration fails (a locked-memory limit), it stays ordinary pageable
memory: the caller can read `pinned`, and every copy from it still works, synchronously.
"""

from __future__ import annotations

import mmap

import torch


class HostBuffer:
    """`nbytes` of host memory as a flat uint8 tensor; `view(offset, like)` gives typed tensors inside it."""

    def __init__(self, nbytes: int, pin: bool) -> None:
        self.nbytes = int(nbytes)
        self._map = None
        if self.nbytes and hasattr(mmap, "MAP_ANONYMOUS"):  # POSIX; Windows has no anonymous private mappings
            self._map = mmap.mmap(-1, self.nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                try:
                    self._map.madvise(mmap.MADV_HUGEPAGE)
                except OSError:  # kernels without transparent huge pages: ordinary pages do
                    pass
            self.tensor = torch.frombuffer(self._map, dtype=torch.uint8, count=self.nbytes)
        else:  # an ordinary allocation, exactly sized too (registration does not need page alignment)
            self.tensor = torch.empty(self.nbytes, dtype=torch.uint8)
        self.pinned = bool(pin) and self.nbytes > 0 and torch.cuda.is_available() and self._register()

    def _register(self) -> bool:
        err = torch.cuda.cudart().cudaHostRegister(self.tensor.data_ptr(), self.nbytes, 0)
        return int(err) == 0

    def view(self, offset: int, like: torch.Tensor) -> torch.Tensor:
        """A tensor shaped and typed like `like`, at byte `offset` of this buffer."""
        n = like.numel() * like.element_size()
        return self.tensor[offset:offset + n].view(like.dtype).view(like.shape)

    def holds(self, tensor: torch.Tensor, offset: int) -> bool:
        """True if `tensor` already lives at byte `offset` of this buffer."""
        return self.nbytes > 0 and tensor.device.type == "cpu" and tensor.data_ptr() == self.tensor.data_ptr() + offset

    def release(self) -> None:
        """Unpin. The memory itself goes when the last tensor viewing it does (views stay valid, pageable)."""
        if self.pinned:
            self.pinned = False
            torch.cuda.cudart().cudaHostUnregister(self.tensor.data_ptr())

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: the driver may be gone already
            pass
