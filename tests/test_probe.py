"""The machine probe: nvidia-smi first (no torch import, so `lowvram plan MODEL` on a GPU box is instant),
torch as the fallback. A fake nvidia-smi on PATH stands in for the driver's."""

import os
import stat
import subprocess
import sys

from lowvram.machines import probe as P


def _fake_smi(folder, body: str) -> None:
    path = folder / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_nvidia_smi_answers_without_torch(tmp_path):
    _fake_smi(tmp_path, 'echo "NVIDIA GeForce RTX 4060, 8188, 7900"')
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", LOWVRAM_CACHE_DIR=str(tmp_path / "c"))
    code = ("import sys; from lowvram.cli import app\n"
            "app(['plan', 'flux-dev'], standalone_mode=False)\n"
            "print('TORCH', 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RTX 4060" in r.stdout and "8.0 GiB VRAM" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "TORCH False"


def test_probe_reads_name_and_sizes(tmp_path, monkeypatch):
    _fake_smi(tmp_path, 'echo "NVIDIA H100 80GB HBM3, 81559, 80000"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    p = P.probe()
    assert p.gpu_name == "NVIDIA H100 80GB HBM3" and p.vram_total == 81559 * 2**20 and p.vram_free == 80000 * 2**20


def test_failing_nvidia_smi_falls_back_to_torch(tmp_path, monkeypatch):
    _fake_smi(tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver." >&2; exit 9')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert P._nvidia_smi() is None
    assert P.probe().gpu_name is None  # this CPU-only machine: torch finds no GPU either
