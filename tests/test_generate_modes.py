"""Generation modes the other end-to-end tests leave out, on tiny pipelines saved as diffusers folders:
SDXL with a ControlNet (resident and streamed), SD3 img2img, and LoRA sizes reaching the plan."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pipelines import build_pipeline, catalogue_sized

from lowvram.checkpoints.lora_size import lora_file_bytes
from lowvram.generate.run import GenerateRequest, generate
from lowvram.plan import Machine, Policy, make_plan

GiB = 2**30


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    for m in ("sdxl", "sd3-medium", "sd15"):
        build_pipeline(m, str(root / m))
    return {m: str(root / m) for m in ("sdxl", "sd3-medium", "sd15")}


def _run(folder, tmp_path, name, vram_gb=48, **kw):
    machine = Machine("test", vram_gb * GiB, 64 * GiB, 12.5e9, 40.0, device="cpu")  # the CPU runs it
    req = GenerateRequest(prompt="a red cat", model=folder, width=64, height=64, steps=kw.pop("steps", 3),
                          output=str(tmp_path / name), quiet=True, **kw)
    # planned at the catalogue's real sizes, so a 3 GB budget streams the tiny UNet
    res = generate(req, catalogue_sized(lambda spec, wl, fw=None: make_plan(spec, wl, machine, Policy("lossless"), file_weights=fw)))
    return res, np.asarray(Image.open(res.paths[0])).astype(int)


def _component(plan, role):
    return next(c for c in plan.components if c.role == role)


def test_sdxl_with_controlnet(folders, tmp_path):
    from tiny_pipelines import edges_image, noisy_controlnet

    edges = tmp_path / "edges.png"
    edges_image(edges)
    n_params = noisy_controlnet(folders["sdxl"], str(tmp_path / "cn_sdxl"))
    _, base = _run(folders["sdxl"], tmp_path, "base.png", seed=4)
    res, ctl = _run(folders["sdxl"], tmp_path, "ctl.png", seed=4, controlnet=str(tmp_path / "cn_sdxl"),
                    control_image=str(edges))
    assert not np.array_equal(base, ctl)
    planned = _component(res.plan, "controlnet")
    assert planned.params == n_params and res.plan.workload.controlnet_path == str(tmp_path / "cn_sdxl")
    # the UNet streamed: the ControlNet runs beside it in its phase, and the image is the same
    res2, ctl2 = _run(folders["sdxl"], tmp_path, "ctl2.png", vram_gb=3, seed=4, controlnet=str(tmp_path / "cn_sdxl"),
                      control_image=str(edges))
    assert _component(res2.plan, "denoiser").placement == "streamed"
    assert np.array_equal(ctl, ctl2)


def test_sd3_img2img_differs_from_txt2img_and_is_reproducible(folders, tmp_path):
    init = tmp_path / "init.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(init)
    _, txt = _run(folders["sd3-medium"], tmp_path, "t2i.png", seed=5, steps=4)
    res, a = _run(folders["sd3-medium"], tmp_path, "a.png", seed=5, steps=4, init_image=str(init), strength=0.6)
    _, b = _run(folders["sd3-medium"], tmp_path, "b.png", seed=5, steps=4, init_image=str(init), strength=0.6)
    _, c = _run(folders["sd3-medium"], tmp_path, "c.png", seed=6, steps=4, init_image=str(init), strength=0.6)
    assert res.plan.model == "sd3-medium" and res.plan.workload.img2img  # the VAE encode is planned
    assert not np.array_equal(a, txt)
    assert np.array_equal(a, b)  # same seed, same image
    assert not np.array_equal(a, c)


def test_lora_file_sizes_reach_the_plan(folders, tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    blk = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{blk}.lora_down.weight": torch.randn(4, 32, generator=g),
               f"{blk}.lora_up.weight": torch.randn(32, 4, generator=g), f"{blk}.alpha": torch.tensor(4.0)},
              str(tmp_path / "style.safetensors"))
    res, _ = _run(folders["sd15"], tmp_path, "lora.png", seed=1, loras=[(str(tmp_path / "style.safetensors"), 0.8)])
    assert res.plan.workload.lora_bytes == (lora_file_bytes(str(tmp_path / "style.safetensors")),) == ((2 * 4 * 32 + 1) * 2,)
    assert any("LoRA: 1 file" in d for d in res.plan.decisions)


def test_controlnet_of_another_model_is_refused_before_denoising(folders, tmp_path):
    """An SD1.5 ControlNet handed to SDXL: same class, other widths — one sentence, no file, no traceback."""
    import subprocess
    import sys

    import diffusers

    unet = diffusers.UNet2DConditionModel.from_pretrained(f"{folders['sd15']}/unet")
    diffusers.ControlNetModel.from_unet(unet).save_pretrained(str(tmp_path / "cn_sd15"))
    edges = tmp_path / "edges.png"
    Image.new("RGB", (64, 64)).save(edges)
    out = tmp_path / "x.png"
    r = subprocess.run([sys.executable, "-m", "lowvram.cli", "generate", "a cat", "--model", folders["sdxl"], "--width", "64",
                        "--height", "64", "--steps", "2", "--vram", "24GB", "--controlnet", str(tmp_path / "cn_sd15"),
                        "--control-image", str(edges), "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "made for another model" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
