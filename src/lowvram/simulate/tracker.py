"""Track the bytes of every tensor storage alive during a forward pass, and their peak.

Hand-written because no library does this on fake tensors with the semantics we need: torch's
`MemTracker` (torch.distributed._tools) needs a distributed build and counts per-module categories, and
`torch.cuda.max_memory_allocated` needs the GPU we plan *for*. The same tracker runs over real CPU
tensors (the accuracy test) and over FakeTensors (the simulation): each storage an op creates is
counted when it appears and released by a weakref finalizer when its last tensor dies — exactly when
PyTorch's allocator would get the block back.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .api import CUDA_BLOCK_BYTES  # noqa: F401  (defined where torch-free code reads it too)


class MemoryTracker(TorchDispatchMode):
    """Live/peak bytes of storages created inside the mode (plus any registered with `track`)."""

    def __init__(self, round_to: int = 1) -> None:
        super().__init__()
        self.round_to = max(1, round_to)
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()
        self._ignored: set[int] = set()
        self._ignored_refs: list = []

    def _size(self, nbytes: int) -> int:
        r = self.round_to
        return -(-nbytes // r) * r

    def ignore(self, *tensors_or_modules) -> None:
        """Storages that exist before the forward (weights) and are accounted for separately."""
        for obj in tensors_or_modules:
            tensors = (list(obj.parameters()) + list(obj.buffers())) if isinstance(obj, torch.nn.Module) else [obj]
            for t in tensors:
                s = t.untyped_storage()
                self._ignored.add(id(s))
                self._ignored_refs.append(s)  # keep alive so the id stays unique

    def track(self, t: torch.Tensor) -> None:
        """Count a tensor's storage as live from now until it is freed."""
        s = t.untyped_storage()
        key = id(s)
        if key in self._tracked or key in self._ignored:
            return
        n = self._size(s.nbytes())
        self._tracked.add(key)
        self.live += n
        if self.live > self.peak:
            self.peak = self.live
        weakref.finalize(s, self._release, key, n)

    def _release(self, key: int, n: int) -> None:
        self._tracked.discard(key)
        self.live -= n

    def reset_peak(self) -> None:
        self.peak = self.live

    def __enter__(self):
        # Under inference_mode composite ops (SDPA's math kernel, linear) reach a dispatch mode whole,
        # hiding their intermediates; no_grad lets them decompose first. Refuse the silent undercount.
        if torch.is_inference_mode_enabled():
            raise RuntimeError("MemoryTracker must run under torch.no_grad(), not inference_mode")
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.track(t)
        return out
