"""Probe this machine: GPU name and VRAM (total / free), system RAM (total / available).

Only the CLI and the runtime call this; the planner takes a Machine as an argument. NVIDIA's own
`nvidia-smi` answers first (tens of milliseconds, so planning for this machine stays instant); torch's
CUDA query (seconds: it imports torch and creates a context) is the fallback where nvidia-smi is absent.
"""

from __future__ import annotations

import shutil
import subprocess
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
    gpu = _nvidia_smi()
    if gpu is None:
        gpu = _torch_cuda()
    name, total, free = gpu
    return Probe(name, int(total), int(free), int(vm.total), int(vm.available))


def _nvidia_smi() -> tuple[str | None, int, int] | None:
    """(name, total, free) of GPU 0 from nvidia-smi; (None, 0, 0) when it runs and finds no GPU;
    None when it cannot answer (not installed, fails, or prints something else)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.strip()]
    if r.returncode != 0 or not lines:
        return None
    try:
        name, total, free = (x.strip() for x in lines[0].rsplit(",", 2))
        return name, int(float(total)) * 2**20, int(float(free)) * 2**20  # MiB
    except ValueError:
        return None


def _torch_cuda() -> tuple[str | None, int, int]:
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            return torch.cuda.get_device_name(0), total, free
    except Exception:  # a broken driver means "no usable GPU", not a crash
        pass
    return None, 0, 0
