"""A checkpoint larger than this machine's RAM loads and runs, its weights streamed from the file."""

import os

import psutil
import pytest
import torch

from lowvram.checkpoints.safetensors_header import write_safetensors_header_only
from lowvram.runtime.accountant import BudgetAccountant
from lowvram.runtime.loading import iter_safetensors, load_into
from lowvram.runtime.streaming import StreamingEngine

WIDTH = 16384  # 1 GiB per fp32 layer


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="needs a POSIX file system with sparse files")
def test_checkpoint_larger_than_ram_loads_and_runs(tmp_path):
    ram = psutil.virtual_memory().total + psutil.swap_memory().total
    layers = ram // (WIDTH * WIDTH * 4) + 2  # more bytes of weights than RAM + swap
    path = tmp_path / "huge.safetensors"
    size = write_safetensors_header_only(path, {f"{i}.weight": ((WIDTH, WIDTH), "F32") for i in range(layers)})
    assert size > ram and os.stat(path).st_blocks * 512 < 2**20  # sparse: costs no disk
    with torch.device("meta"):
        model = torch.nn.Sequential(*(torch.nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(layers)))
    report = load_into(model, iter_safetensors([str(path)]), torch.float32, disk_backed=True)
    assert report["missing"] == [] and report["unexpected"] == []
    anon_before = _rss_anon()
    eng = StreamingEngine(model, "cpu", 0, BudgetAccountant(4 * WIDTH * WIDTH * 4), pin_memory=False).apply()
    x = torch.ones(1, WIDTH)
    with torch.no_grad():
        y = model(x)
    assert torch.equal(y, torch.zeros(1, WIDTH))  # the holes read as zeros
    # every byte came through the pool (plus the first layer again: prefetched for the next call)
    assert eng.stats.bytes_copied >= layers * WIDTH * WIDTH * 4
    # anonymous memory grew by the two pool slots, not by the checkpoint (file pages are the kernel's to drop)
    assert _rss_anon() - anon_before < 3 * WIDTH * WIDTH * 4
    eng.remove()


def _rss_anon() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("RssAnon:")).split()[1]) * 1024
