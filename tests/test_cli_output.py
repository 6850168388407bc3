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


def test_version_and_one_sentence_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    from lowvram import __version__

    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout == f"lowvram {__version__}\n"
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes\n")
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "inspect", str(notes)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2 and "not a model file" in r.stderr and "download" not in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_lora_file_weight_parsing(tmp_path):
    from lowvram.cli import _lora_arg
    from lowvram.errors import UserError

    assert _lora_arg("style.safetensors") == ("style.safetensors", 1.0)
    assert _lora_arg("style.safetensors:0.8") == ("style.safetensors", 0.8)
    assert _lora_arg("C:/loras/style.safetensors:-0.5") == ("C:/loras/style.safetensors", -0.5)
    odd = tmp_path / "v1:final.safetensors"
    odd.write_bytes(b"")
    assert _lora_arg(str(odd)) == (str(odd), 1.0)  # an existing file whose name holds a colon
    for bad, words in [("style.safetensors:abc", "'abc' is not a weight"), ("style.safetensors:inf", "out of range"),
                       ("style.safetensors:1e9", "out of range")]:
        with pytest.raises(UserError, match=words):
            _lora_arg(bad)
