"""What a GPU benchmark ran on, as JSON on stdout: date, card, driver, CUDA, library versions, commit.

bench/gpu_session.sh writes it to $OUT/env.json first; bench/gpu_report.py heads the tables with it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata

LIBRARIES = ["torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub", "mmgp",
             "optimum-quanto", "numpy"]
NVIDIA_SMI_FIELDS = "name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max"


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def collect() -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
           "cpus": os.cpu_count(), "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    for lib in LIBRARIES:
        try:
            env[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            env[lib] = None
    try:
        import psutil

        env["ram_GiB"] = psutil.virtual_memory().total / 2**30
    except ImportError:
        pass
    smi = _run(["nvidia-smi", f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv,noheader"])
    if smi:
        name, mem, driver, gen, width = [x.strip() for x in smi.splitlines()[0].split(",")]
        env.update(card=name, card_memory=mem, driver=driver, pcie=f"gen {gen} x{width}")
    elif torch.cuda.is_available():
        env["card"] = torch.cuda.get_device_name(0)
    else:
        env["card"] = "CPU (dry run)"
    here = os.path.dirname(os.path.abspath(__file__))
    # the device gets a copy of the working tree, maybe without .git: the caller can pass the commit it sent
    env["commit"] = (os.environ.get("LOWVRAM_COMMIT") or _run(["git", "-C", here, "rev-parse", "--short", "HEAD"])
                     or "unknown (no git there)")
    return env


if __name__ == "__main__":
    print(json.dumps(collect(), indent=2))
