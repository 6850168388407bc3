"""Inspection identifies every layout people download, from headers only."""

import json
import resource
import struct
import subprocess
import sys

import gguf
import pytest
from checkpoints import (flux_bfl, flux_qtype, meta_state_dict, sd1_single_file, sd35_comfy_single_file,
                         sdxl_single_file, write_sparse, write_sparse_gguf)

import layouts as L
from lowvram.checkpoints.inspect import inspect_path
from lowvram.errors import CheckpointError, UserError

SDXL_UNET = 2_567_463_684
FLUX = 11_901_408_320


def _comp(rep, name):
    return next(c for c in rep.components if c.name == name)


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def test_sdxl_single_file_original_layout(tmp_path):
    p = tmp_path / "sd_xl_base_1.0.safetensors"
    size = write_sparse(p, sdxl_single_file(), "F16")
    assert size > 6 * 2**30  # a real-size (sparse) checkpoint
    before, faults = _bytes_read(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    rep = inspect_path(str(p))
    assert _bytes_read() - before < 2 * 2**20  # the header only, never the 6.9 GB of data
    assert resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults < 50
    assert (rep.architecture, rep.variant, rep.format) == ("sdxl", "base", "single-file")
    assert [c.name for c in rep.components] == ["unet", "text_encoder", "text_encoder_2", "vae"]
    assert _comp(rep, "unet").params == SDXL_UNET
    assert _comp(rep, "unet").dtype == "F16"
    assert _comp(rep, "text_encoder_2").params == 694_659_840
    assert rep.missing == []


def test_sdxl_inpaint_and_sd1_variants(tmp_path):
    p = tmp_path / "sdxl_inpaint.safetensors"
    write_sparse(p, sdxl_single_file(unet_in_channels=9))
    assert (inspect_path(str(p)).architecture, inspect_path(str(p)).variant) == ("sdxl", "inpaint")
    p1 = tmp_path / "v1-5-pruned-emaonly.safetensors"
    write_sparse(p1, sd1_single_file(), "F32")
    rep = inspect_path(str(p1))
    assert (rep.architecture, rep.variant) == ("sd15", "base")
    assert _comp(rep, "unet").params == 859_520_964
    assert _comp(rep, "text_encoder").params == 123_060_480
    p2 = tmp_path / "sd15-inpainting.safetensors"
    write_sparse(p2, sd1_single_file(unet_in_channels=9))
    assert inspect_path(str(p2)).variant == "inpaint"


def test_sd2_and_sdxl_refiner(tmp_path):
    sd2 = L.sd2_checkpoint(meta_state_dict("sd21", "unet"), meta_state_dict("sd21", "text_encoder"), meta_state_dict("sd21", "vae"))
    p = tmp_path / "v2-1_768-ema-pruned.safetensors"
    write_sparse(p, sd2)
    rep = inspect_path(str(p))
    assert rep.architecture == "sd21" and _comp(rep, "unet").params == 865_910_724
    ref = L.sdxl_checkpoint(meta_state_dict("sdxl-refiner", "unet"), None, meta_state_dict("sdxl-refiner", "text_encoder_2"),
                            meta_state_dict("sdxl-refiner", "vae"))
    p = tmp_path / "sd_xl_refiner_1.0.safetensors"
    write_sparse(p, ref)
    rep = inspect_path(str(p))
    assert (rep.architecture, rep.variant) == ("sdxl-refiner", "refiner")
    assert [c.name for c in rep.components] == ["unet", "text_encoder_2", "vae"]


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_flux_bfl_file(tmp_path, variant):
    p = tmp_path / f"flux1-{variant}.safetensors"
    write_sparse(p, flux_bfl(variant))
    rep = inspect_path(str(p))
    assert (rep.architecture, rep.variant) == (f"flux-{variant}", variant)
    assert rep.components[0].layout == "original"
    assert rep.components[0].params == (FLUX if variant == "dev" else 11_891_178_560)
    assert rep.missing == ["text_encoder", "text_encoder_2", "vae"]


def test_flux_fp8_file_reports_its_storage_type(tmp_path):
    p = tmp_path / "flux1-dev-fp8.safetensors"
    write_sparse(p, flux_bfl("dev"), "F8_E4M3")
    c = inspect_path(str(p)).components[0]
    assert c.dtype == "F8_E4M3" and c.bytes == FLUX


@pytest.mark.parametrize("model,variant", [("sd35-large", "large"), ("sd35-medium", "medium"), ("sd3-medium", "medium")])
def test_sd3_comfy_single_file_with_text_encoders(tmp_path, model, variant):
    p = tmp_path / f"{model}.safetensors"
    write_sparse(p, sd35_comfy_single_file(model), "F16")
    rep = inspect_path(str(p))
    assert (rep.architecture, rep.variant) == (model, variant)
    assert [c.name for c in rep.components] == ["transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"]
    assert _comp(rep, "text_encoder_3").params == 4_762_310_656
    assert rep.missing == []


def _comfy_flux_files(folder):
    folder.mkdir()
    write_sparse(folder / "flux1-dev.safetensors", flux_bfl("dev"))
    t5 = meta_state_dict("flux-dev", "text_encoder_2")
    t5.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, stored once
    write_sparse(folder / "t5xxl_fp16.safetensors", t5, "F16")
    write_sparse(folder / "clip_l.safetensors", L.hf_clip_keys(meta_state_dict("flux-dev", "text_encoder")), "F16")
    write_sparse(folder / "ae.safetensors", L.vae_to_ldm(meta_state_dict("flux-dev", "vae")), "F32")
    return folder


def test_comfyui_component_files_alone_and_assembled(tmp_path):
    folder = _comfy_flux_files(tmp_path / "flux")
    t5 = inspect_path(str(folder / "t5xxl_fp16.safetensors"))
    assert t5.architecture is None and "T5" in t5.variant
    assert t5.components[0].role == "text_encoder" and t5.components[0].dtype == "F16"
    assert t5.components[0].params == 4_762_310_656
    assert "flux-dev" in t5.used_by and "sd35-large" in t5.used_by
    vae = inspect_path(str(folder / "ae.safetensors"))
    assert vae.components[0].role == "vae" and "FLUX" in vae.variant
    rep = inspect_path(str(folder))
    assert (rep.architecture, rep.format) == ("flux-dev", "component-files")
    assert [c.name for c in rep.components] == ["transformer", "text_encoder", "text_encoder_2", "vae"]
    assert rep.missing == []


def test_diffusers_folder(tmp_path):
    root = tmp_path / "FLUX.1-schnell"
    for sub, comp in (("transformer", "transformer"), ("text_encoder", "text_encoder"), ("text_encoder_2", "text_encoder_2"), ("vae", "vae")):
        (root / sub).mkdir(parents=True)
        sd = meta_state_dict("flux-schnell", comp)
        if sub == "transformer":  # big components are sharded
            keys = sorted(sd)
            write_sparse(root / sub / "diffusion_pytorch_model-00001-of-00002.safetensors", {k: sd[k] for k in keys[:300]})
            write_sparse(root / sub / "diffusion_pytorch_model-00002-of-00002.safetensors", {k: sd[k] for k in keys[300:]})
        else:
            write_sparse(root / sub / ("model.safetensors" if "text" in sub else "diffusion_pytorch_model.safetensors"), sd)
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    rep = inspect_path(str(root))
    assert (rep.architecture, rep.format) == ("flux-schnell", "diffusers")
    assert _comp(rep, "transformer").params == 11_891_178_560
    assert _comp(rep, "transformer").layout == "diffusers"
    assert rep.missing == []


def test_gguf_city96_and_stable_diffusion_cpp(tmp_path):
    bfl = {k: tuple(v.shape) for k, v in flux_bfl("dev").items()}
    p = tmp_path / "flux1-dev-Q4_K_S.gguf"
    write_sparse_gguf(p, bfl, flux_qtype(gguf.GGMLQuantizationType.Q4_K), arch="flux")
    before = _bytes_read()
    rep = inspect_path(str(p))
    assert _bytes_read() - before < 4 * 2**20
    c = rep.components[0]
    assert (rep.architecture, rep.format) == ("flux-dev", "gguf")
    assert c.dtype == "Q4_K" and set(c.dtypes) == {"Q4_K", "F32"}
    assert c.params == FLUX
    assert c.bytes < FLUX * 0.6  # ~4.5 bits per weight
    # stable-diffusion.cpp: full prefixes, no general.architecture
    p2 = tmp_path / "flux1-schnell-q8_0.gguf"
    sdcpp = {"model.diffusion_model." + k: tuple(v.shape) for k, v in flux_bfl("schnell").items()}
    write_sparse_gguf(p2, sdcpp, flux_qtype(gguf.GGMLQuantizationType.Q8_0), arch=None)
    rep2 = inspect_path(str(p2))
    assert (rep2.architecture, rep2.components[0].dtype) == ("flux-schnell", "Q8_0")


# ---- bad input: one sentence on stderr, exit 2, no traceback --------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lowvram.cli", *args], capture_output=True, text=True, timeout=120)


def _assert_clean_failure(r, *words):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0]
    assert r.stdout == ""


def test_bad_inputs(tmp_path):
    _assert_clean_failure(_cli("inspect", str(tmp_path / "nope.safetensors")), "does not exist")
    (tmp_path / "empty").mkdir()
    _assert_clean_failure(_cli("inspect", str(tmp_path / "empty")), "holds no model")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    _assert_clean_failure(_cli("inspect", str(huge)), "huge.safetensors", "truncated or corrupt")
    bad_json = tmp_path / "bad.safetensors"
    bad_json.write_bytes(struct.pack("<Q", 10) + b"{not json}")
    _assert_clean_failure(_cli("inspect", str(bad_json)), "bad.safetensors", "JSON")
    past = tmp_path / "past.safetensors"
    hdr = json.dumps({"w": {"dtype": "F16", "shape": [1024], "data_offsets": [0, 2048]}}).encode()
    past.write_bytes(struct.pack("<Q", len(hdr)) + hdr + b"\0" * 100)
    _assert_clean_failure(_cli("inspect", str(past)), "past.safetensors", "truncated")
    magic = tmp_path / "bad.gguf"
    magic.write_bytes(b"GGUX" + b"\0" * 100)
    _assert_clean_failure(_cli("inspect", str(magic)), "bad.gguf", "magic")
    good = tmp_path / "cut.gguf"
    write_sparse_gguf(good, {"double_blocks.0.img_attn.qkv.weight": (9216, 3072)}, flux_qtype(gguf.GGMLQuantizationType.Q8_0))
    data = good.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:200])  # tensor table cut short
    _assert_clean_failure(_cli("inspect", str(tmp_path / "cut.gguf")), "cut.gguf")
    unknown = tmp_path / "unknown.safetensors"
    write_sparse(unknown, {"foo.weight": __import__("torch").empty(4, 4, device="meta")})
    _assert_clean_failure(_cli("inspect", str(unknown)), "unknown.safetensors", "recognises")
    _assert_clean_failure(_cli("inspect", str(tmp_path / "empty" / "x")), "does not exist")


def test_inspect_json_schema(tmp_path):
    folder = _comfy_flux_files(tmp_path / "flux")
    r = _cli("inspect", "--json", str(folder / "flux1-dev.safetensors"))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["architecture"] == "flux-dev" and obj["variant"] == "dev"
    assert obj["missing"] == ["text_encoder", "text_encoder_2", "vae"]
    for c in obj["components"]:
        assert {"name", "role", "params", "bytes", "dtype"} <= set(c)


def test_library_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        inspect_path(str(tmp_path / "missing"))
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\1\2")
    with pytest.raises(CheckpointError):
        inspect_path(str(p))
