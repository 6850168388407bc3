"""Real-size catalogue components with random weights, made straight on the benchmark's device (and
the host link's measured bandwidth, which the GPU benchmarks plan with).

Weights are never read from a hub (there is none offline), and random weights with the real
architecture give the real memory and speed figures. Parameters are made empty on the device and
filled there (minutes faster than initialising 12 B parameters on a CPU); buffers are built by the
constructor as usual, so integer ones such as CLIP's `position_ids` hold their real values (a plain
`to_empty` would leave them as garbage indices).
"""

from __future__ import annotations

import os
import sys

import torch
from accelerate import init_empty_weights

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from real_sd15 import random_parameters_  # noqa: E402  (the same random init the real-size CPU tests use)

from lowvram.catalogue import build_component  # noqa: E402


def build_random(comp, device: "str | torch.device", dtype: torch.dtype, overrides: dict | None = None) -> torch.nn.Module:
    """The component at `dtype` on `device` with random weights of a sensible scale (activations stay
    finite; speed and memory don't care); tied parameters stay tied."""
    device = torch.device(device)
    with init_empty_weights(include_buffers=False):
        module = build_component(comp, "cpu", config_overrides=overrides)
    random_parameters_(module, dtype, device)
    if hasattr(module, "tie_weights"):  # transformers ties embeddings after construction; redo it
        module.tie_weights()
    module.to(device=device)
    for sub in module.modules():  # float buffers follow the compute dtype, as a loaded pipeline's do
        for name, b in list(sub._buffers.items()):
            if b is not None and b.dtype.is_floating_point:
                sub._buffers[name] = b.to(dtype)
    return module.eval().requires_grad_(False)


def pinned_bandwidth() -> float:
    """Host -> device bytes per second from pinned memory (1 GiB copied 5 times), as streaming sees it."""
    import time

    x = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
    y = torch.empty_like(x, device="cuda")
    y.copy_(x, non_blocking=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        y.copy_(x, non_blocking=True)
    torch.cuda.synchronize()
    bw = 5 * x.numel() / (time.perf_counter() - t0)
    del x, y
    return bw
