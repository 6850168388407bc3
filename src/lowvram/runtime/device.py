"""The VRAM cap that holds a run to its plan on a card with more memory than planned."""

from __future__ import annotations

import torch


def cap_cuda_memory(device: torch.device, vram_bytes: int):
    """Hold this process to the planned VRAM when it is less than the card has (`--vram 6GB` on a
    24 GB card leaves the rest to other programs, and is how budgets are tested on a big GPU).
    Returns a function that lifts the cap again."""
    if device.type != "cuda" or vram_bytes <= 0:
        return lambda: None
    total = torch.cuda.get_device_properties(device).total_memory
    if vram_bytes >= total:
        return lambda: None
    index = device.index if device.index is not None else torch.cuda.current_device()  # torch wants an index here
    torch.cuda.set_per_process_memory_fraction(vram_bytes / total, index)
    return lambda: torch.cuda.set_per_process_memory_fraction(1.0, index)
