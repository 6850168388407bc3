"""Probe this machine: GPU name and VRAM (total / free), system RAM (total / available).

Only the CLI and the runtime call this; the planner takes a Machine as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Probe:
    gpu_name: str | None
    vram_total: int
    vram_free: int
    ram_total: int
    ram_available: int


def probe() -> Probe:
    vm = psutil.virtual_memory()
    name, total, free = None, 0, 0
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            free, total = torch.cuda.mem_get_info(0)
    except Exception:  # a broken driver means "no usable GPU", not a crash
        name, total, free = None, 0, 0
    return Probe(name, int(total), int(free), int(vm.total), int(vm.available))
