"""Every required architecture is in the catalogue with the real model's parameter count."""

import json
import subprocess
import sys
import time

import pytest

from lowvram.catalogue import MODELS, build_component, component_params, get_model
from lowvram.errors import UserError

# Parameter counts of the real checkpoints (tied weights once, stored buffers such as SD3's pos_embed
# included). Sources in docs/catalogue.md.
EXPECTED = {
    ("sd15", "unet"): 859_520_964, ("sd15", "text_encoder"): 123_060_480, ("sd15", "vae"): 83_653_863,
    ("sd21", "unet"): 865_910_724, ("sd21", "text_encoder"): 340_387_840,
    ("sdxl", "unet"): 2_567_463_684, ("sdxl", "text_encoder_2"): 694_659_840,
    ("sdxl-refiner", "unet"): 2_259_526_660,
    ("sd3-medium", "transformer"): 2_084_951_104, ("sd35-medium", "transformer"): 2_469_663_936,
    ("sd35-large", "transformer"): 8_146_280_768, ("sd35-large", "text_encoder_3"): 4_762_310_656,
    ("flux-dev", "transformer"): 11_901_408_320, ("flux-schnell", "transformer"): 11_891_178_560,
    ("flux-dev", "vae"): 83_819_683,
    ("pixart-alpha", "transformer"): 611_349_152, ("pixart-sigma", "transformer"): 610_856_096,
    ("hidream-i1", "transformer"): 17_105_733_184, ("hidream-i1", "text_encoder_4"): 8_030_261_248,
    ("deepfloyd-if", "unet"): 4_304_695_110, ("deepfloyd-if", "unet_2"): 1_243_277_190,
    ("chroma", "transformer"): 8_899_983_424, ("qwen-image", "transformer"): 20_430_401_088,
}
REQUIRED = {"sd15", "sd21", "sdxl", "sd3-medium", "sd35-medium", "sd35-large", "flux-dev", "flux-schnell",
            "pixart-alpha", "pixart-sigma", "hidream-i1", "deepfloyd-if"}


def test_required_models_present():
    assert REQUIRED <= set(MODELS)
    for m in MODELS.values():
        assert m.by_role("denoiser") and m.width % m.latent_factor == 0
        assert m.by_role("vae") and m.by_role("text_encoder")


@pytest.mark.parametrize("model,component", sorted(EXPECTED))
def test_parameter_counts_are_exact(model, component):
    build_component(MODELS[model].component(component))  # first call imports the model's code
    t0 = time.perf_counter()
    module = build_component(MODELS[model].component(component))
    assert time.perf_counter() - t0 < 2.5  # meta device: no memory, no init cost (~0.1-1.3 s here)
    assert next(module.parameters()).device.type == "meta"
    assert component_params(module) == EXPECTED[(model, component)]


def test_aliases_and_unknown_names():
    assert get_model("SDXL").name == "sdxl" and get_model("flux").name == "flux-dev"
    with pytest.raises(UserError, match="Unknown model"):
        get_model("sd4-ultra")


def test_models_json():
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "models", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert REQUIRED <= set(rows)
    unet = next(c for c in rows["sdxl"]["components"] if c["name"] == "unet")
    assert unet == {**unet, "role": "denoiser", "params": 2_567_463_684, "bytes_bf16": 2 * 2_567_463_684}
    for m in rows.values():
        assert {"name", "family", "components"} <= set(m)
        for c in m["components"]:
            assert c["role"] in ("denoiser", "text_encoder", "vae")
