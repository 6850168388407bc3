"""The answers shipped with the package (`lowvram/shipped.json`): complete for planning the catalogue on
every card, and equal to what the simulator computes now. If either fails, run `python -m lowvram.ship`."""

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest

from lowvram import cache
from lowvram.catalogue import MODELS
from lowvram.simulate import SimRequest, simulate_component
from lowvram.simulate.api import _key_fields

COLD_RUN = """
import sys
from lowvram.cli import app
for args in (["models"], ["gpus"], ["gpus", "--tiers"], ["plan", "flux-dev", "--gpu", "RTX 4060"],
             ["plan", "sdxl", "--gpu", "RTX 2060", "--quality", "fast", "--img2img"],
             ["plan", "sd15", "--gpu", "RTX 3060", "--controlnet", "default"],
             ["plan", "qwen-image", "--gpu", "RTX 4060", "--no-guidance"]):  # --gpu: probing this machine needs torch
    try:
        app(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, (args, e.code)
print("TORCH", "torch" in sys.modules)
"""


def test_cold_planning_needs_no_simulation(tmp_path):
    """With an empty cache, `gpus` over every card and model and `plan` in its common forms answer from
    the shipped file alone: no simulation ran, so torch was never imported."""
    env = dict(os.environ, LOWVRAM_CACHE_DIR=str(tmp_path / "empty"))
    env.pop("LOWVRAM_NO_SHIPPED", None)
    r = subprocess.run([sys.executable, "-c", COLD_RUN], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "TORCH False", "some answer is not shipped: run `python -m lowvram.ship`"


CASES = [("sd15", "text_encoder", SimRequest(batch=1, width=0, height=0, dtype="bf16")),
         ("sd15", "unet", SimRequest(batch=2, width=512, height=512, dtype="bf16")),
         ("sd15", "vae", SimRequest(op="decode", batch=1, width=512, height=512, dtype="bf16")),
         ("sdxl", "vae", SimRequest(op="decode", batch=1, width=1024, height=1024, dtype="bf16")),
         ("flux-dev", "text_encoder_2", SimRequest(batch=1, width=0, height=0, dtype="bf16"))]


@pytest.mark.parametrize("model,component,req", CASES, ids=[f"{m}-{c}-{r.op}" for m, c, r in CASES])
def test_shipped_answers_equal_a_fresh_simulation(model, component, req, monkeypatch):
    spec = MODELS[model]
    comp = spec.component(component)
    shipped = cache.shipped("sim", _key_fields(spec, comp, req, None))
    assert shipped is not None, "not shipped: run `python -m lowvram.ship`"
    monkeypatch.setenv("LOWVRAM_NO_SHIPPED", "1")
    fresh = asdict(simulate_component(spec, comp, req, use_cache=False))
    # with the library versions the file was written with: exact; with others (a newer diffusers in a
    # fresh install), the model code may move a buffer or two — within 5 %
    with open(cache.SHIPPED) as f:
        written_with = json.load(f)["versions"]
    tol = 0.0 if written_with == dict(zip(("torch", "diffusers", "transformers"), cache.library_versions())) else 0.05
    for k in ("weights_bytes", "activation_peak_bytes", "output_bytes", "input_bytes", "flops", "params"):
        assert abs(shipped[k] - fresh[k]) <= tol * max(abs(fresh[k]), 1), \
            f"{k}: shipped {shipped[k]}, now {fresh[k]} — run `python -m lowvram.ship`"
