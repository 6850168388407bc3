"""The CLI reads well at 80 columns: no line wider than the terminal, no cell cut to "…"."""

import os
import subprocess
import sys

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

COMMANDS = [
    ["plan", "sdxl", "--gpu", "RTX 4060"],
    ["plan", "flux-dev", "--gpu", "RTX 4060 Laptop", "--quality", "balanced", "--explain"],
    ["gpus", "--models", "sd15,sdxl,flux-dev,sd35-large"],
    ["gpus", "--tiers"],
    ["models"],
]


def _run(args, columns, tmp_path):
    env = dict(os.environ, COLUMNS=str(columns), PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               LOWVRAM_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("LOWVRAM_NO_SHIPPED", None)
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_80_columns(args, tmp_path):
    text = _run(args, 80, tmp_path)
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert too_wide == [] and "…" not in text
    assert text.strip()


def test_wide_terminals_still_get_tables(tmp_path):
    text = _run(["plan", "sdxl", "--gpu", "RTX 4060"], 160, tmp_path)
    assert "┃ component" in text and "text_encoder_2 │" in text
    grid = _run(["gpus", "--tiers", "--models", "sd15,sdxl"], 80, tmp_path)
    assert grid.count("┃ GPU") == 1 and "│ 4 GB " in grid  # two models fit beside the GPU column: one table
