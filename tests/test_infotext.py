"""A1111 infotext: built from a record, written into PNG/JPEG/WebP, read back with A1111's own parser."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from a1111 import parse_a1111, parse_generation_parameters, parse_lora_tags
from lowvram import __version__
from lowvram.errors import UserError
from lowvram.generate.hashes import lora_hash, lora_name, model_hash
from lowvram.generate.infotext import GenerationRecord, LoraUse, infotext, record_parts
from lowvram.generate.output import image_format, read_infotext, write_pngs

RECORD = GenerationRecord(
    prompt='a lighthouse, at dawn: "golden" light', negative="blurry,\nlow quality", steps=20, sampler="DPM++ 2M",
    schedule="Karras", cfg_scale=7.5, seed=123456789, width=832, height=1216, model_name="sdxl, my merge",
    model_hash="31e35c80fc", loras=(LoraUse("style", 0.8, "0123456789ab"), LoraUse("detail:v2", 1.0, "ba9876543210")),
    extra=(("lowvram plan", "unet resident bf16; vae resident bf16"),))


def test_record_reads_back_field_by_field_with_a1111s_parser():
    text = infotext(RECORD)
    res = parse_generation_parameters(text)
    assert res["Prompt"].startswith(RECORD.prompt)
    assert parse_lora_tags(res["Prompt"]) == [("style", "0.8"), ("detailv2", "1")]
    assert res["Negative prompt"] == RECORD.negative
    assert res["Steps"] == "20" and res["Sampler"] == "DPM++ 2M" and res["Schedule type"] == "Karras"
    assert res["CFG scale"] == "7.5" and res["Seed"] == "123456789"
    assert (res["Size-1"], res["Size-2"]) == ("832", "1216")
    assert res["Model"] == "sdxl, my merge" and res["Model hash"] == "31e35c80fc"
    assert res["Lora hashes"] == "style: 0123456789ab, detailv2: ba9876543210"  # A1111 strips ':' and ',' from names
    assert res["lowvram plan"] == "unet resident bf16; vae resident bf16"
    assert res["Version"] == f"lowvram {__version__}"
    last = text.split("\n")[-1]
    assert last.startswith("Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 123456789, "
                           "Size: 832x1216, Model hash: 31e35c80fc, Model: \"sdxl, my merge\"")
    assert last.endswith(f"Version: lowvram {__version__}")


def test_lora_tags_in_the_prompt_as_a1111_prompts_carry_them():
    prompt, _, _ = record_parts(RECORD)
    assert prompt == RECORD.prompt + " <lora:style:0.8> <lora:detailv2:1>"
    already = GenerationRecord(**{**RECORD.__dict__, "prompt": "a cat <lora:style:0.5>"})
    assert record_parts(already)[0] == "a cat <lora:style:0.5> <lora:detailv2:1>"  # not named twice


def test_defaults_stay_out_as_a1111_leaves_them_out():
    rec = GenerationRecord(prompt="a cat", steps=4, sampler="Euler", cfg_scale=7.0, seed=1, width=512, height=512)
    text = infotext(rec)
    assert text == f"a cat\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Version: lowvram {__version__}"
    assert "Schedule type" not in parse_generation_parameters(text)  # A1111 reads a missing one as Automatic


@pytest.mark.parametrize("suffix,fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_each_format_carries_the_infotext_where_a1111_puts_it(tmp_path, suffix, fmt):
    out = str(tmp_path / f"x{suffix}")
    img = np.random.default_rng(0).random((64, 48, 3))
    prompt, negative, fields = record_parts(RECORD)
    [path] = write_pngs([img], out, prompt, negative, fields)
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (48, 64)
    info = parse_a1111(read_infotext(path))
    assert info["Size"] == "48x64" and info["Sampler"] == "DPM++ 2M" and info["Negative prompt"] == RECORD.negative
    assert not any(n.endswith(".part") for n in os.listdir(tmp_path))


def test_an_unsupported_suffix_is_refused_before_writing(tmp_path):
    with pytest.raises(UserError, match=r"\.png, \.jpg or \.webp"):
        write_pngs([np.zeros((8, 8, 3))], str(tmp_path / "x.gif"), "p", "", {"Steps": 1})
    assert os.listdir(tmp_path) == []
    assert image_format("out") == "PNG" and image_format("A.JPG") == "JPEG"


def test_hashes_are_a1111s(tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(ckpt), metadata={"a": "1"})
    assert model_hash(str(ckpt)) == hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    assert model_hash(str(tmp_path)) is None  # a folder has no A1111 hash
    # LoRA: the addnet hash skips the JSON header, so a metadata edit keeps the hash
    lora = tmp_path / "my_style.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(lora), metadata={"ss_note": "first"})
    h = lora_hash(str(lora))
    raw = lora.read_bytes()
    assert h == hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()[:12]
    edited = tmp_path / "edited.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(edited), metadata={"ss_note": "second, longer"})
    assert lora_hash(str(edited)) == h and lora_name(str(lora)) == "my_style"


def test_controlnet_unit_reads_back_as_the_extension_parses_it():
    """`ControlNet 0` as A1111's ControlNet extension writes it: A1111's reader unquotes the field, and the
    extension's own `parse_unit` (split on ", " then ": ") gets every field back, even from a name with
    a colon and a comma in it (stripped, as the extension does not allow them)."""
    from lowvram.generate.infotext import controlnet_unit

    rec = GenerationRecord(prompt="a cat", steps=2, sampler="Euler", cfg_scale=7, seed=1, width=64, height=64,
                           extra=(("ControlNet 0", controlnet_unit("cn:canny, v2 [abcd1234]", 0.8, 2, 0.1, 0.9)),))
    value = parse_generation_parameters(infotext(rec))["ControlNet 0"]
    unit = dict(item.strip().split(": ") for item in value.split(","))  # the extension's parse_unit
    assert unit == {"Module": "none", "Model": "cncanny v2 [abcd1234]", "Weight": "0.8", "Resize Mode": "Resize and Fill",
                    "Guidance Start": "0.1", "Guidance End": "0.9", "Pixel Perfect": "False", "Control Mode": "Balanced"}
