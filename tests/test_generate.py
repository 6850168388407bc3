"""End-to-end generation on CPU with tiny random pipelines saved as real diffusers folders."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from a1111 import parse_a1111
from tiny_pipelines import build_pipeline, catalogue_sized, component_state

from lowvram.catalogue import MODELS
from lowvram.generate.run import GenerateRequest, generate
from lowvram.plan import Machine, Policy, make_plan

GiB = 2**30
FAMILIES = ["sd15", "sdxl", "flux-dev", "sd3-medium"]
MORE_FAMILIES = ["sd21", "pixart-sigma", "chroma", "hidream-i1", "qwen-image"]


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    out = {}
    for m in FAMILIES + MORE_FAMILIES:
        build_pipeline(m, str(root / m))
        out[m] = str(root / m)
    return out


def _plan_fn(vram_gb=48, ram_gb=64):
    machine = Machine("test", vram_gb * GiB, ram_gb * GiB, 12.5e9, 40.0, device="cpu")  # the CPU runs it
    # planned at the catalogue's real sizes, so the small budgets below stream the tiny models' components
    return catalogue_sized(lambda spec, wl, file_weights=None: make_plan(spec, wl, machine, Policy("lossless"),
                                                                         file_weights=file_weights))


def _run(folder, tmp_path, name="out.png", vram_gb=48, **kw):
    req = GenerateRequest(prompt=kw.pop("prompt", "a red cat"), model=folder, width=64, height=64, steps=kw.pop("steps", 3),
                          output=str(tmp_path / name), quiet=True, **kw)
    return generate(req, _plan_fn(vram_gb))


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_writes_png_with_a1111_parameters(folders, tmp_path, family):
    res = _run(folders[family], tmp_path, negative="blurry" if MODELS[family].uses_cfg else "", seed=7)
    assert res.paths == [str(tmp_path / "out.png")]
    im = Image.open(res.paths[0])
    assert im.size == (64, 64)
    info = parse_a1111(im.info["parameters"])
    assert info["Prompt"] == "a red cat"
    assert info["Steps"] == "3" and info["Seed"] == "7" and info["Size"] == "64x64" and info["Model"] == family
    assert "lowvram plan" in info and "Sampler" in info and "CFG scale" in info
    if MODELS[family].uses_cfg:
        assert info["Negative prompt"] == "blurry"
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("family", MORE_FAMILIES)
def test_generate_more_families(folders, tmp_path, family):
    res = _run(folders[family], tmp_path, seed=3)
    im = Image.open(res.paths[0])
    info = parse_a1111(im.info["parameters"])
    assert info["Model"] == family and info["Size"] == f"{im.size[0]}x{im.size[1]}"
    if family != "hidream-i1":  # HiDream's pipeline rescales every request to its native area
        assert im.size == (64, 64)


def test_seeds_are_reproducible(folders, tmp_path):
    a = np.asarray(Image.open(_run(folders["sd15"], tmp_path, "a.png", seed=1).paths[0]))
    b = np.asarray(Image.open(_run(folders["sd15"], tmp_path, "b.png", seed=1).paths[0]))
    c = np.asarray(Image.open(_run(folders["sd15"], tmp_path, "c.png", seed=2).paths[0]))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_streamed_plan_gives_the_same_image(folders, tmp_path):
    """A 4 GB plan streams the (real-size-planned) Flux transformer; on the tiny model the same share of
    units is streamed — the image must equal the all-resident one."""
    full = _run(folders["flux-dev"], tmp_path, "full.png", seed=3)
    small = _run(folders["flux-dev"], tmp_path, "small.png", vram_gb=4, seed=3)
    den = next(c for c in small.plan.components if c.role == "denoiser")
    assert den.placement == "streamed"
    assert np.array_equal(np.asarray(Image.open(full.paths[0])), np.asarray(Image.open(small.paths[0])))


def test_out_of_memory_mid_run_replans_and_keeps_the_image(folders, tmp_path, monkeypatch):
    ref = _run(folders["flux-dev"], tmp_path, "ref.png", vram_gb=4, seed=5)
    import diffusers

    original = diffusers.FluxTransformer2DModel.forward
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second denoising step runs out of memory once
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(self, *a, **k)

    monkeypatch.setattr(diffusers.FluxTransformer2DModel, "forward", flaky)
    res = _run(folders["flux-dev"], tmp_path, "oom.png", vram_gb=4, seed=5)
    assert res.replans and "out of memory" in res.replans[0]
    assert np.array_equal(np.asarray(Image.open(ref.paths[0])), np.asarray(Image.open(res.paths[0])))


def test_ctrl_c_stops_between_steps(folders, tmp_path, monkeypatch):
    import diffusers

    original = diffusers.UNet2DConditionModel.forward
    calls = {"n": 0}

    def interrupting(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C during step 2
        return original(self, *a, **k)

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "forward", interrupting)
    res = _run(folders["sd15"], tmp_path, "stopped.png", steps=5)
    assert res.interrupted_at == 2 and res.paths == []
    assert not (tmp_path / "stopped.png").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lowvram.cli", "generate", *args], capture_output=True, text=True, timeout=300)


def test_cli_generate_and_bad_inputs(folders, tmp_path):
    out = tmp_path / "cli.png"
    r = _cli("a cat", "--model", folders["sd15"], "--width", "64", "--height", "64", "--steps", "2", "--vram", "8GB",
             "--quiet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists() and "wrote" in r.stdout
    bad = [
        (("a cat", "--model", str(tmp_path / "nope")), "does not exist"),
        (("a cat", "--model", folders["sd15"], "--steps", "-2", "--vram", "8GB"), "--steps"),
        (("a cat", "--model", folders["sd15"], "--width", "65", "--vram", "8GB"), "multiple of 8"),
        (("a cat", "--model", folders["sd15"], "--vram", "8GB", "-o", str(tmp_path / "no" / "x.png")), "does not exist"),
        (("a cat", "--model", folders["sd15"], "--vram", "8GB", "--sampler", "magic", "-o", str(tmp_path / "s.png")), "Unknown sampler"),
    ]
    for args, words in bad:
        r = _cli(*args)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, (args, r.stderr)
    assert not (tmp_path / "s.png").exists()


def test_missing_tokenizer_is_named(folders, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders["sd15"], broken)
    shutil.rmtree(broken / "tokenizer")
    r = _cli("a cat", "--model", str(broken), "--vram", "8GB", "-o", str(tmp_path / "b.png"))
    assert r.returncode == 2 and "tokenizer" in r.stderr and "vocab.json" in r.stderr, r.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_img2img_and_inpaint(folders, tmp_path, family):
    init = tmp_path / "init.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(init)
    mask = tmp_path / "mask.png"
    m = np.zeros((64, 64), dtype="uint8")
    m[16:48, 16:48] = 255
    Image.fromarray(m).save(mask)
    a = _run(folders[family], tmp_path, "i2i.png", init_image=str(init), strength=0.5, steps=4)
    assert Image.open(a.paths[0]).size == (64, 64)
    b = _run(folders[family], tmp_path, "inp.png", init_image=str(init), mask=str(mask), strength=1.0, steps=4)
    assert Image.open(b.paths[0]).size == (64, 64)


def test_img2img_bad_inputs(folders, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    small = tmp_path / "small.png"
    Image.new("L", (32, 32)).save(small)
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64)).save(init)
    for args, words in [(("--init-image", str(junk)), "not an image"),
                        (("--init-image", str(init), "--mask", str(small)), "same size"),
                        (("--mask", str(small)), "needs --init-image"),
                        (("--init-image", str(init), "--strength", "1.5"), "--strength")]:
        r = _cli("a cat", "--model", folders["sd15"], "--vram", "8GB", "-o", str(tmp_path / "x.png"), *args)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], (args, r.stderr)
    assert not (tmp_path / "x.png").exists()


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def test_single_file_sdxl_original_layout_equals_diffusers_folder(folders, tmp_path):
    """The same tiny SDXL written as an A1111 single file generates the same image as its diffusers folder."""
    from safetensors.torch import save_file

    import layouts as L

    f = folders["sdxl"]
    ck = L.sdxl_checkpoint(*(component_state(f, n) for n in ("unet", "text_encoder", "text_encoder_2", "vae")))
    path = tmp_path / "tiny_sdxl.safetensors"
    save_file(ck, str(path))
    ref = _run(f, tmp_path, "ref.png", seed=4)
    res = _run(str(path), tmp_path, "single.png", seed=4, config=f)
    a, b = _pixels(ref.paths[0]), _pixels(res.paths[0])
    assert np.abs(a - b).max() <= 1  # same weights; conversion may reorder fused q/k/v (float rounding)


def test_comfyui_flux_folder(folders, tmp_path):
    """Flux as ComfyUI users keep it: BFL transformer, T5 and CLIP in transformers layout, ae in LDM layout."""
    from safetensors.torch import save_file

    import layouts as L

    f = folders["flux-dev"]
    comfy = tmp_path / "models"
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (comfy / sub).mkdir(parents=True)
    save_file(L.flux_to_bfl(component_state(f, "transformer")), str(comfy / "diffusion_models" / "flux1-dev.safetensors"))
    t5 = component_state(f, "text_encoder_2")
    save_file(t5, str(comfy / "text_encoders" / "t5xxl_fp16.safetensors"))
    save_file(component_state(f, "text_encoder"), str(comfy / "text_encoders" / "clip_l.safetensors"))
    save_file(L.vae_to_ldm(component_state(f, "vae")), str(comfy / "vae" / "ae.safetensors"))
    ref = _run(f, tmp_path, "ref.png", seed=6)
    res = _run(str(comfy), tmp_path, "comfy.png", seed=6, config=f)
    a, b = _pixels(ref.paths[0]), _pixels(res.paths[0])
    assert np.abs(a - b).max() <= 1


def test_single_file_without_config_names_the_fix(folders, tmp_path):
    from safetensors.torch import save_file

    import layouts as L

    f = folders["flux-dev"]
    path = tmp_path / "flux1-dev.safetensors"
    save_file(L.flux_to_bfl(component_state(f, "transformer")), str(path))
    r = _cli("a cat", "--model", str(path), "--vram", "8GB", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and ("--config" in r.stderr or "lacks" in r.stderr), r.stderr


def _kohya_sd15_lora(path, rank=4, scale=0.5):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    sd = {}
    for blk in ("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"):
        sd[f"lora_unet_{blk}.lora_down.weight"] = torch.randn(rank, 32, generator=g) * scale
        sd[f"lora_unet_{blk}.lora_up.weight"] = torch.randn(32, rank, generator=g) * scale
        sd[f"lora_unet_{blk}.alpha"] = torch.tensor(float(rank))
    sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.randn(rank, 32, generator=g)
    sd["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.randn(32, rank, generator=g)
    save_file(sd, str(path))


def test_lora_kohya_and_peft_change_the_image_without_copying_weights(folders, tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "style_kohya.safetensors"
    _kohya_sd15_lora(lora)
    base = np.asarray(Image.open(_run(folders["sd15"], tmp_path, "base.png", seed=9).paths[0])).astype(int)
    zero = np.asarray(Image.open(_run(folders["sd15"], tmp_path, "zero.png", seed=9, loras=[(str(lora), 0.0)]).paths[0])).astype(int)
    styled = _run(folders["sd15"], tmp_path, "lora.png", seed=9, loras=[(str(lora), 1.0)])
    assert np.array_equal(base, zero)  # weight 0: exactly the base model
    assert not np.array_equal(base, np.asarray(Image.open(styled.paths[0])).astype(int))
    from lowvram.generate.hashes import lora_hash

    text = Image.open(styled.paths[0]).info["parameters"]  # as A1111 writes a LoRA: tag in the prompt, hash by name
    assert "<lora:style_kohya:1>" in text and f"style_kohya: {lora_hash(str(lora))}" in text
    # PEFT / diffusers format on Flux, with the transformer streamed (the LoRA rides on streamed weights)
    g = torch.Generator().manual_seed(1)
    peft = {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.randn(4, 32, generator=g),
            "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.randn(32, 4, generator=g)}
    save_file(peft, str(tmp_path / "flux_peft.safetensors"))
    a = _run(folders["flux-dev"], tmp_path, "fa.png", vram_gb=4, seed=2)
    b = _run(folders["flux-dev"], tmp_path, "fb.png", vram_gb=4, seed=2, loras=[(str(tmp_path / "flux_peft.safetensors"), 1.0)])
    assert next(c for c in b.plan.components if c.role == "denoiser").placement == "streamed"
    assert not np.array_equal(np.asarray(Image.open(a.paths[0])), np.asarray(Image.open(b.paths[0])))


def test_lora_for_another_architecture_is_refused(folders, tmp_path):
    lora = tmp_path / "sd15_style.safetensors"
    _kohya_sd15_lora(lora)
    r = _cli("a cat", "--model", folders["flux-dev"], "--vram", "8GB", "--lora", f"{lora}:0.8", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "another architecture" in r.stderr, r.stderr
    r = _cli("a cat", "--model", folders["sd15"], "--vram", "8GB", "--lora", str(tmp_path / "missing.safetensors"),
             "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_gguf_flux_diffusion_model(folders, tmp_path):
    """A city96-style GGUF Flux (BFL names, Q8_0 Linear weights, F32 rest) in a ComfyUI folder."""
    import gguf
    from safetensors.torch import save_file

    import layouts as L

    f = folders["flux-dev"]
    comfy = tmp_path / "models"
    for sub in ("unet", "text_encoders", "vae"):
        (comfy / sub).mkdir(parents=True)
    from checkpoints import write_gguf

    n_quant = write_gguf(comfy / "unet" / "flux1-dev-Q8_0.gguf", L.flux_to_bfl(component_state(f, "transformer")),
                         gguf.GGMLQuantizationType.Q8_0)
    assert n_quant > 10
    save_file(component_state(f, "text_encoder_2"), str(comfy / "text_encoders" / "t5xxl_fp16.safetensors"))
    save_file(component_state(f, "text_encoder"), str(comfy / "text_encoders" / "clip_l.safetensors"))
    save_file(L.vae_to_ldm(component_state(f, "vae")), str(comfy / "vae" / "ae.safetensors"))
    ref = _run(f, tmp_path, "ref.png", seed=8)
    res = _run(str(comfy), tmp_path, "gguf.png", seed=8, config=f, vram_gb=4)  # streamed: the quantised blocks are what moves
    a, b = _pixels(ref.paths[0]), _pixels(res.paths[0])
    # Q8_0 keeps 8 bits per weight with a scale per 32: the image stays within a few levels of the original
    assert np.abs(a - b).mean() < 3.0, np.abs(a - b).mean()


def test_controlnet_sd15_and_flux(folders, tmp_path):
    import diffusers

    from tiny_pipelines import edges_image, noisy_controlnet

    ctrl_img = tmp_path / "edges.png"
    edges_image(ctrl_img)
    # SD1.5: a ControlNet made from the tiny UNet, saved as a diffusers folder
    noisy_controlnet(folders["sd15"], str(tmp_path / "cn_sd15"))
    base = _run(folders["sd15"], tmp_path, "base.png", seed=1)
    ctl = _run(folders["sd15"], tmp_path, "ctl.png", seed=1, controlnet=str(tmp_path / "cn_sd15"), control_image=str(ctrl_img))
    assert not np.array_equal(np.asarray(Image.open(base.paths[0])), np.asarray(Image.open(ctl.paths[0])))
    # the same with the UNet streamed: the ControlNet shares its phase and the image is identical
    ctl2 = _run(folders["sd15"], tmp_path, "ctl2.png", vram_gb=2, seed=1, controlnet=str(tmp_path / "cn_sd15"),
                control_image=str(ctrl_img))
    assert next(c for c in ctl2.plan.components if c.role == "denoiser").placement == "streamed"
    assert np.array_equal(np.asarray(Image.open(ctl.paths[0])), np.asarray(Image.open(ctl2.paths[0])))
    # Flux ControlNet
    torch.manual_seed(0)
    fcn = diffusers.FluxControlNetModel(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                        joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6],
                                        in_channels=64, guidance_embeds=True)
    with torch.no_grad():
        for p in fcn.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    fcn.save_pretrained(str(tmp_path / "cn_flux"))
    fres = _run(folders["flux-dev"], tmp_path, "fctl.png", seed=1, controlnet=str(tmp_path / "cn_flux"), control_image=str(ctrl_img))
    assert Image.open(fres.paths[0]).size == (64, 64)
    r = _cli("a cat", "--model", folders["sd15"], "--vram", "8GB", "--controlnet", str(tmp_path / "cn_sd15"), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "--control-image" in r.stderr


@pytest.mark.parametrize("family", ["sd15", "sd3-medium"])
def test_single_file_sd15_and_sd3(folders, tmp_path, family):
    """SD1.5 as an A1111 checkpoint and SD3 as a ComfyUI all-in-one file (text encoders inside)."""
    from safetensors.torch import save_file

    import layouts as L

    f = folders[family]
    if family == "sd15":
        ck = L.sd1_checkpoint(component_state(f, "unet"), component_state(f, "text_encoder"), component_state(f, "vae"))
    else:
        ck = L.sd3_checkpoint(component_state(f, "transformer"), component_state(f, "text_encoder"), component_state(f, "text_encoder_2"),
                              component_state(f, "text_encoder_3"), component_state(f, "vae"))
    path = tmp_path / f"{family}.safetensors"
    save_file(ck, str(path))
    ref = _run(f, tmp_path, "ref.png", seed=5)
    res = _run(str(path), tmp_path, "single.png", seed=5, config=f)
    a, b = _pixels(ref.paths[0]), _pixels(res.paths[0])
    assert np.abs(a - b).max() <= 1


def test_legacy_ckpt_loads_only_with_weights_only(folders, tmp_path):
    import layouts as L

    f = folders["sd15"]
    ck = L.sd1_checkpoint(component_state(f, "unet"), component_state(f, "text_encoder"), component_state(f, "vae"))
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": ck}, str(path))
    ref = _run(f, tmp_path, "ref.png", seed=5)
    res = _run(str(path), tmp_path, "ckpt.png", seed=5, config=f)
    a, b = _pixels(ref.paths[0]), _pixels(res.paths[0])
    assert np.abs(a - b).max() <= 1
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": ck, "callback": GenerateRequest("x", "y")}, str(evil))  # needs more than tensors
    r = _cli("a cat", "--model", str(evil), "--config", f, "--vram", "8GB", "-o", str(tmp_path / "e.png"))
    assert r.returncode == 2 and ("refused" in r.stderr or "safe" in r.stderr), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "e.png").exists()


def test_models_dir_finds_the_parts_of_a_comfyui_tree(folders, tmp_path):
    from safetensors.torch import save_file

    import layouts as L

    f = folders["flux-dev"]
    tree = tmp_path / "ComfyUI" / "models"
    for sub in ("diffusion_models", "text_encoders", "vae", "checkpoints"):
        (tree / sub).mkdir(parents=True)
    save_file(L.flux_to_bfl(component_state(f, "transformer")), str(tree / "diffusion_models" / "flux1-dev.safetensors"))
    save_file(component_state(f, "text_encoder_2"), str(tree / "text_encoders" / "t5xxl_fp16.safetensors"))
    save_file(component_state(f, "text_encoder"), str(tree / "text_encoders" / "clip_l.safetensors"))
    save_file(L.vae_to_ldm(component_state(f, "vae")), str(tree / "vae" / "ae.safetensors"))
    save_file(L.vae_to_ldm(component_state(folders["sd15"], "vae")), str(tree / "vae" / "sd_vae.safetensors"))  # another model's
    ref = _run(f, tmp_path, "ref.png", seed=6)
    out = tmp_path / "tree.png"
    r = _cli("a red cat", "--model", "flux1-dev.safetensors", "--models-dir", str(tree), "--config", f, "--width", "64",
             "--height", "64", "--steps", "3", "--seed", "6", "--vram", "48GB", "--quiet", "-o", str(out))
    assert r.returncode == 0, r.stderr
    a, b = (np.asarray(Image.open(p)).astype(int) for p in (ref.paths[0], out))
    assert np.abs(a - b).max() <= 1
    r = _cli("a cat", "--model", "nope.safetensors", "--models-dir", str(tree), "--vram", "8GB")
    assert r.returncode == 2 and "is not in" in r.stderr


def test_fp8_checkpoint_folder(folders, tmp_path):
    """A folder whose transformer is stored in fp8 (like flux1-dev-fp8) loads and generates."""
    import shutil

    from safetensors.torch import save_file

    f = folders["flux-dev"]
    fp8 = tmp_path / "flux-fp8"
    shutil.copytree(f, fp8)
    sub = fp8 / "transformer"
    sd = component_state(f, "transformer")
    for name in list(os.listdir(sub)):
        if name.endswith(".safetensors"):
            os.remove(sub / name)
    save_file({k: (v.to(torch.float8_e4m3fn) if v.dim() == 2 else v) for k, v in sd.items()},
              str(sub / "diffusion_pytorch_model.safetensors"))
    from lowvram.checkpoints.inspect import inspect_path

    rep = inspect_path(str(fp8))
    assert next(c for c in rep.components if c.name == "transformer").dtype == "F8_E4M3"
    ref = _run(f, tmp_path, "ref.png", seed=2)
    res = _run(str(fp8), tmp_path, "fp8.png", seed=2)
    a, b = _pixels(ref.paths[0]), _pixels(res.paths[0])
    assert np.abs(a - b).mean() < 6.0  # fp8 storage rounds the weights (3 mantissa bits)
