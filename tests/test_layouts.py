"""Round-trip checks for tests/fixtures/layouts.py against diffusers' own
single-file (original layout -> diffusers) converters.

* tiny random models: original layout -> diffusers converter must give back the
  identical state dict (same keys, torch.equal tensors);
* real-size models on the meta device: key sets / shapes, diffusers' model-type
  detection, and known key counts of the real files.
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))

import layouts as L  # noqa: E402

sfu = pytest.importorskip("diffusers.loaders.single_file_utils")
from diffusers import (  # noqa: E402
    AutoencoderKL,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def assert_same(got, want, values=True):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, f"missing={missing[:10]} extra={extra[:10]}"
    for k, v in want.items():
        assert got[k].shape == v.shape, (k, got[k].shape, v.shape)
        assert got[k].dtype == v.dtype, (k, got[k].dtype, v.dtype)
        if values:
            assert torch.equal(got[k], v), k


def randomize(model, seed=0):
    """Random non-degenerate values everywhere (zero-init layers would hide swaps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def sd_of(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


def meta_sd(cls, **kw):
    with torch.device("meta"):
        return sd_of(cls(**kw))


def meta_clip_sd(cls, **kw):
    with torch.device("meta"):
        return sd_of(cls(CLIPTextConfig(**kw)))


def unique_collapsed(sd):
    """Materialize a (meta) state dict as [rows, 1, ...] tensors with unique
    values.  All layout ops act on dim 0 only, so this checks ordering of
    real-size fused tensors at negligible cost."""
    out, start = {}, 0
    for k, v in sd.items():
        shape = (v.shape[0],) + (1,) * (v.ndim - 1) if v.ndim else ()
        n = int(torch.Size(shape).numel())
        out[k] = torch.arange(start, start + n, dtype=torch.float64).reshape(shape)
        start += n
    return out


def ns(**cfg):
    class _M:
        pass

    m = _M()
    m.config = CLIPTextConfig(**cfg)
    return m


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------

TINY_CLIP = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=16, projection_dim=24,
                 bos_token_id=0, eos_token_id=1, pad_token_id=1)

TINY_UNETS = {
    "sd1": dict(block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8, sample_size=16,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=32, attention_head_dim=8),
    "sd1_3lvl_lpb1": dict(block_out_channels=(32, 32, 64), layers_per_block=1, norm_num_groups=8,
                          down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                          cross_attention_dim=32, attention_head_dim=8),
    "sd2": dict(block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True),
    "sdxl": dict(block_out_channels=(32, 64, 64), layers_per_block=2, norm_num_groups=8,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 3), cross_attention_dim=32, attention_head_dim=(2, 4, 8),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=32 + 6 * 8),
    "sdxl_refiner": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=2, norm_num_groups=8,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                           "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                         transformer_layers_per_block=2, cross_attention_dim=32, attention_head_dim=(2, 4, 8, 8),
                         use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                         projection_class_embeddings_input_dim=32 + 5 * 8),
}

TINY_VAE = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
                latent_channels=4, sample_size=16)
TINY_VAE16 = dict(TINY_VAE, block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, latent_channels=16,
                  use_quant_conv=False, use_post_quant_conv=False)

SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SD21_UNET = dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                 use_linear_projection=True)
SDXL_UNET = dict(sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 attention_head_dim=(5, 10, 20), cross_attention_dim=2048, transformer_layers_per_block=(1, 2, 10),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
SDXL_REFINER_UNET = dict(sample_size=128, block_out_channels=(384, 768, 1536, 1536), layers_per_block=2,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                           "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                         attention_head_dim=(6, 12, 24, 24), cross_attention_dim=1280, transformer_layers_per_block=4,
                         use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                         projection_class_embeddings_input_dim=2560)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
FLUX_VAE = dict(SD_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu")
OPENCLIP_H = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  projection_dim=512, hidden_act="gelu")
OPENCLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  projection_dim=1280, hidden_act="gelu")
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
SD35_LARGE = dict(SD3_MEDIUM, num_layers=38, num_attention_heads=38, caption_projection_dim=2432,
                  qk_norm="rms_norm")
SD35_MEDIUM = dict(SD3_MEDIUM, pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)))


# ---------------------------------------------------------------------------
# tiny round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TINY_UNETS))
def test_unet_roundtrip_tiny(name):
    unet = randomize(UNet2DConditionModel(**TINY_UNETS[name]))
    want = sd_of(unet)
    ldm = L.unet_to_ldm(want)
    assert "input_blocks.0.0.weight" in ldm and "out.2.weight" in ldm
    got = sfu.convert_ldm_unet_checkpoint(L.with_prefix(ldm, "model.diffusion_model."), unet.config)
    assert_same(got, want)


@pytest.mark.parametrize("cfg", [TINY_VAE, TINY_VAE16], ids=["vae4", "vae16"])
def test_vae_roundtrip_tiny(cfg):
    vae = randomize(AutoencoderKL(**cfg))
    want = sd_of(vae)
    ldm = L.vae_to_ldm(want)
    c = cfg["block_out_channels"][-1]
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (c, c, 1, 1)
    assert ldm["decoder.mid.attn_1.proj_out.weight"].shape == (c, c, 1, 1)
    assert ("quant_conv.weight" in ldm) == cfg.get("use_quant_conv", True)
    got = sfu.convert_ldm_vae_checkpoint(L.with_prefix(ldm, "first_stage_model."), vae.config)
    assert_same(got, want)


@pytest.mark.parametrize("prefix", ["cond_stage_model.", "conditioner.embedders.0."])
def test_clip_l_roundtrip_tiny(prefix):
    want = L.hf_clip_keys(sd_of(randomize(CLIPTextModel(CLIPTextConfig(**TINY_CLIP)))))
    sd1 = L.clip_l_to_sd1(want)
    assert "transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in sd1
    got = sfu.convert_ldm_clip_checkpoint(L.with_prefix(sd1, prefix))
    assert_same(got, want)


@pytest.mark.parametrize("with_proj", [False, True])
def test_openclip_roundtrip_tiny(with_proj):
    cls = CLIPTextModelWithProjection if with_proj else CLIPTextModel
    model = randomize(cls(CLIPTextConfig(**TINY_CLIP)))
    want = L.hf_clip_keys(sd_of(model))
    oc = L.clip_to_openclip(want)
    h = TINY_CLIP["hidden_size"]
    assert oc["transformer.resblocks.1.attn.in_proj_weight"].shape == (3 * h, h)
    assert oc["positional_embedding"].shape == (TINY_CLIP["max_position_embeddings"], h)
    if with_proj:
        assert oc["text_projection"].shape == (h, TINY_CLIP["projection_dim"])
    prefix = "conditioner.embedders.1.model." if with_proj else "cond_stage_model.model."
    got = sfu.convert_open_clip_checkpoint(model, L.with_prefix(oc, prefix), prefix=prefix)
    assert_same(got, want)


def test_flux_roundtrip_real_size_collapsed():
    # diffusers' converter hardcodes inner_dim=3072, so use the real flux-dev
    # shapes (collapsed to [rows, 1]) with unique values: checks every split,
    # fusion and the scale/shift swap value-exactly.
    want = unique_collapsed(meta_sd(FluxTransformer2DModel, guidance_embeds=True))
    bfl = L.flux_to_bfl(want)
    got = sfu.convert_flux_transformer_checkpoint_to_diffusers(L.with_prefix(bfl, "model.diffusion_model."))
    assert_same(got, want)


def test_flux_tiny_shapes():
    model = randomize(FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                             attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                             pooled_projection_dim=32, guidance_embeds=False,
                                             axes_dims_rope=(4, 6, 6)))
    sd = sd_of(model)
    bfl = L.flux_to_bfl(sd)
    assert bfl["double_blocks.1.img_attn.qkv.weight"].shape == (96, 32)
    assert bfl["single_blocks.1.linear1.weight"].shape == (96 + 128, 32)
    assert torch.equal(bfl["single_blocks.0.linear1.weight"][96:], sd["single_transformer_blocks.0.proj_mlp.weight"])
    scale, shift = sd["norm_out.linear.weight"].chunk(2)
    assert torch.equal(bfl["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))
    assert not any(k.startswith("guidance_in") for k in bfl)
    assert len(bfl) == len(sd) - 2 * 8 - 2 * 6  # 12 -> 4 per double block, 8 -> 2 per single block


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(qk_norm="rms_norm"), dict(qk_norm="rms_norm", dual_attention_layers=(0, 1))],
    ids=["sd3", "sd35_qknorm", "sd35_dual"],
)
def test_sd3_roundtrip_tiny(kw):
    model = randomize(SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3,
                                            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                            caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
                                            pos_embed_max_size=8, **kw))
    want = sd_of(model)
    mm = L.sd3_to_mmdit(want)
    assert mm["joint_blocks.0.x_block.attn.qkv.weight"].shape == (48, 16)
    assert ("joint_blocks.0.x_block.attn2.qkv.weight" in mm) == bool(kw.get("dual_attention_layers"))
    assert "joint_blocks.2.context_block.attn.proj.weight" not in mm  # context_pre_only
    got = sfu.convert_sd3_transformer_checkpoint_to_diffusers(L.with_prefix(mm, "model.diffusion_model."))
    assert_same(got, want)


# ---------------------------------------------------------------------------
# tiny full single-file checkpoints
# ---------------------------------------------------------------------------


def _tiny_clip(cls=CLIPTextModel, seed=0):
    return cls(CLIPTextConfig(**TINY_CLIP)) if seed is None else randomize(cls(CLIPTextConfig(**TINY_CLIP)), seed)


def test_sdxl_checkpoint_tiny_roundtrip_and_save(tmp_path):
    from safetensors.torch import load_file, save_file

    unet = randomize(UNet2DConditionModel(**TINY_UNETS["sdxl"]))
    clip_l = _tiny_clip(CLIPTextModel, 1)
    clip_g = _tiny_clip(CLIPTextModelWithProjection, 2)
    vae = randomize(AutoencoderKL(**TINY_VAE), 3)
    ck = L.sdxl_checkpoint(sd_of(unet), sd_of(clip_l), sd_of(clip_g), sd_of(vae))
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_ids" in ck
    assert "conditioner.embedders.1.model.logit_scale" in ck
    assert "conditioner.embedders.1.model.text_projection" in ck
    assert "model.diffusion_model.label_emb.0.0.weight" in ck
    path = tmp_path / "sdxl.safetensors"
    save_file(ck, str(path))  # contiguous, no shared storage
    ck = load_file(str(path))

    assert_same(sfu.convert_ldm_unet_checkpoint(ck, unet.config), sd_of(unet))
    assert_same(sfu.convert_ldm_vae_checkpoint(ck, vae.config), sd_of(vae))
    got_l = sfu.convert_ldm_clip_checkpoint(ck)
    got_l.pop("text_model.embeddings.position_ids")
    assert_same(got_l, L.hf_clip_keys(sd_of(clip_l)))
    got_g = sfu.convert_open_clip_checkpoint(clip_g, ck, prefix="conditioner.embedders.1.model.")
    assert_same(got_g, L.hf_clip_keys(sd_of(clip_g)))


def test_sdxl_refiner_checkpoint_tiny():
    unet = randomize(UNet2DConditionModel(**TINY_UNETS["sdxl_refiner"]))
    clip_g = _tiny_clip(CLIPTextModelWithProjection, 2)
    vae = randomize(AutoencoderKL(**TINY_VAE), 3)
    ck = L.sdxl_checkpoint(sd_of(unet), None, sd_of(clip_g), sd_of(vae))
    assert not any(k.startswith("conditioner.embedders.1.") for k in ck)
    got_g = sfu.convert_open_clip_checkpoint(clip_g, ck, prefix="conditioner.embedders.0.model.")
    assert_same(got_g, L.hf_clip_keys(sd_of(clip_g)))
    assert_same(sfu.convert_ldm_unet_checkpoint(ck, unet.config), sd_of(unet))


def test_sd1_sd2_checkpoint_tiny():
    vae = randomize(AutoencoderKL(**TINY_VAE), 3)
    unet1 = randomize(UNet2DConditionModel(**TINY_UNETS["sd1"]))
    clip = _tiny_clip(CLIPTextModel, 1)
    ck1 = L.sd1_checkpoint(sd_of(unet1), sd_of(clip), sd_of(vae))
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ck1
    assert_same(sfu.convert_ldm_unet_checkpoint(ck1, unet1.config), sd_of(unet1))
    assert_same(sfu.convert_ldm_vae_checkpoint(ck1, vae.config), sd_of(vae))
    got = sfu.convert_ldm_clip_checkpoint(ck1)
    got.pop("text_model.embeddings.position_ids")
    assert_same(got, L.hf_clip_keys(sd_of(clip)))

    unet2 = randomize(UNet2DConditionModel(**TINY_UNETS["sd2"]))
    ck2 = L.sd2_checkpoint(sd_of(unet2), sd_of(clip), sd_of(vae))
    assert "cond_stage_model.model.logit_scale" in ck2
    assert "cond_stage_model.model.transformer.resblocks.2.ln_1.weight" not in ck2  # tiny: no dropped layer
    assert_same(sfu.convert_ldm_unet_checkpoint(ck2, unet2.config), sd_of(unet2))
    got = sfu.convert_open_clip_checkpoint(clip, ck2, prefix="cond_stage_model.model.")
    assert_same(got, L.hf_clip_keys(sd_of(clip)))


def test_sd3_checkpoint_tiny():
    model = randomize(SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2,
                                            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                            caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
                                            pos_embed_max_size=8))
    clip_l = _tiny_clip(CLIPTextModelWithProjection, 1)
    clip_g = _tiny_clip(CLIPTextModelWithProjection, 2)
    t5 = randomize(T5EncoderModel(T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                           num_heads=2)), 4)
    vae = randomize(AutoencoderKL(**TINY_VAE16), 3)
    ck = L.sd3_checkpoint(sd_of(model), sd_of(clip_l), sd_of(clip_g), sd_of(t5), sd_of(vae))
    assert "text_encoders.t5xxl.transformer.shared.weight" in ck
    assert "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight" not in ck
    assert "text_encoders.clip_g.transformer.text_projection.weight" in ck
    assert_same(sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(ck)), sd_of(model))
    assert_same(sfu.convert_ldm_clip_checkpoint(ck, remove_prefix="text_encoders.clip_l.transformer."),
                L.hf_clip_keys(sd_of(clip_l)))
    assert_same(sfu.convert_ldm_clip_checkpoint(ck, remove_prefix="text_encoders.clip_g.transformer."),
                L.hf_clip_keys(sd_of(clip_g)))
    want_t5 = {k: v for k, v in sd_of(t5).items() if k != "encoder.embed_tokens.weight"}
    assert_same(sfu.convert_sd3_t5_checkpoint_to_diffusers(ck), want_t5)
    assert_same(sfu.convert_ldm_vae_checkpoint(ck, vae.config), sd_of(vae))
    only_mmdit = L.sd3_checkpoint(sd_of(model))
    assert all(k.startswith("model.diffusion_model.") for k in only_mmdit)


# ---------------------------------------------------------------------------
# real-size (meta) key sets, shapes and model-type detection
# ---------------------------------------------------------------------------


def _unet_meta_roundtrip(cfg):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    want = sd_of(unet)
    ldm = L.unet_to_ldm(want)
    got = sfu.convert_ldm_unet_checkpoint(L.with_prefix(ldm, "model.diffusion_model."), unet.config)
    assert_same(got, want, values=False)
    return want, ldm


def _vae_meta(cfg):
    with torch.device("meta"):
        vae = AutoencoderKL(**cfg)
    want = sd_of(vae)
    ldm = L.vae_to_ldm(want)
    assert_same(sfu.convert_ldm_vae_checkpoint(ldm, vae.config), want, values=False)
    return ldm


def test_real_sd15_layout():
    want, ldm = _unet_meta_roundtrip(SD15_UNET)
    assert len(ldm) == 686
    assert ldm["output_blocks.11.0.skip_connection.weight"].shape == (320, 640, 1, 1)
    assert ldm["input_blocks.3.0.op.weight"].shape == (320, 320, 3, 3)
    assert ldm["output_blocks.2.1.conv.weight"].shape == (1280, 1280, 3, 3)
    assert ldm["output_blocks.5.2.conv.weight"].shape == (1280, 1280, 3, 3)
    assert ldm["input_blocks.1.1.proj_in.weight"].shape == (320, 320, 1, 1)
    vae = _vae_meta(SD_VAE)
    assert len(vae) == 248
    assert vae["encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert vae["decoder.up.0.block.0.nin_shortcut.weight"].shape == (128, 256, 1, 1)
    clip = meta_clip_sd(CLIPTextModel, **CLIP_L)
    ck = L.sd1_checkpoint(want, clip, meta_sd(AutoencoderKL, **SD_VAE))
    assert sum(k.startswith("cond_stage_model.") for k in ck) == 197
    assert sfu.infer_diffusers_model_type(ck) == "v1"


def test_real_sd21_layout():
    want, ldm = _unet_meta_roundtrip(SD21_UNET)
    assert ldm["input_blocks.1.1.proj_in.weight"].shape == (320, 320)
    oc_model_sd = meta_clip_sd(CLIPTextModel, **OPENCLIP_H)
    ck = L.sd2_checkpoint(want, oc_model_sd, meta_sd(AutoencoderKL, **SD_VAE))
    assert ck["cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight"].shape == (3072, 1024)
    assert ck["cond_stage_model.model.text_projection"].shape == (1024, 1024)
    assert ck["cond_stage_model.model.positional_embedding"].shape == (77, 1024)
    assert sfu.infer_diffusers_model_type(ck) == "v2"
    got = sfu.convert_open_clip_checkpoint(ns(**OPENCLIP_H), ck, prefix="cond_stage_model.model.")
    assert_same(got, L.hf_clip_keys(oc_model_sd), values=False)


def test_real_sdxl_layout():
    want, ldm = _unet_meta_roundtrip(SDXL_UNET)
    assert len(ldm) == 1680
    assert ldm["label_emb.0.0.weight"].shape == (1280, 2816)
    assert ldm["input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"].shape == (1280, 2048)
    assert ldm["output_blocks.2.2.conv.weight"].shape == (1280, 1280, 3, 3)
    assert ldm["output_blocks.5.2.conv.weight"].shape == (640, 640, 3, 3)
    assert ldm["middle_block.1.transformer_blocks.9.ff.net.2.weight"].shape == (1280, 5120)
    clip_l = meta_clip_sd(CLIPTextModel, **CLIP_L)
    clip_g = meta_clip_sd(CLIPTextModelWithProjection, **OPENCLIP_G)
    ck = L.sdxl_checkpoint(want, clip_l, clip_g, meta_sd(AutoencoderKL, **SD_VAE))
    assert ck["conditioner.embedders.1.model.text_projection"].shape == (1280, 1280)
    assert ck["conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight"].shape == (3840, 1280)
    assert sum(k.startswith("conditioner.embedders.1.") for k in ck) == 32 * 12 + 6
    assert sfu.infer_diffusers_model_type(ck) == "xl_base"
    got = sfu.convert_open_clip_checkpoint(ns(**OPENCLIP_G), ck, prefix="conditioner.embedders.1.model.")
    assert_same(got, L.hf_clip_keys(clip_g), values=False)


def test_real_sdxl_refiner_layout():
    want, ldm = _unet_meta_roundtrip(SDXL_REFINER_UNET)
    assert ldm["label_emb.0.0.weight"].shape == (1536, 2560)
    clip_g = meta_clip_sd(CLIPTextModelWithProjection, **OPENCLIP_G)
    ck = L.sdxl_checkpoint(want, None, clip_g, meta_sd(AutoencoderKL, **SD_VAE))
    assert sfu.infer_diffusers_model_type(ck) == "xl_refiner"


@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_real_flux_layout(guidance):
    want = meta_sd(FluxTransformer2DModel, guidance_embeds=guidance)
    bfl = L.flux_to_bfl(want)
    assert len(bfl) == (780 if guidance else 776)
    assert bfl["double_blocks.18.img_attn.qkv.weight"].shape == (9216, 3072)
    assert bfl["single_blocks.37.linear1.weight"].shape == (21504, 3072)
    assert bfl["single_blocks.37.linear2.weight"].shape == (3072, 15360)
    assert bfl["double_blocks.0.img_attn.norm.key_norm.scale"].shape == (128,)
    assert bfl["img_in.weight"].shape == (3072, 64)
    assert bfl["final_layer.adaLN_modulation.1.weight"].shape == (6144, 3072)
    assert sfu.infer_diffusers_model_type(bfl) == ("flux-dev" if guidance else "flux-schnell")
    got = sfu.convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert_same(got, want, values=False)
    vae = _vae_meta(FLUX_VAE)
    assert len(vae) == 244 and "quant_conv.weight" not in vae


@pytest.mark.parametrize(
    "cfg,kind",
    [(SD3_MEDIUM, "sd3"), (SD35_LARGE, "sd35_large"), (SD35_MEDIUM, "sd35_medium")],
    ids=["sd3_medium", "sd35_large", "sd35_medium"],
)
def test_real_sd3_layout(cfg, kind):
    want = meta_sd(SD3Transformer2DModel, **cfg)
    mm = L.sd3_to_mmdit(want)
    n = cfg["num_layers"]
    c = cfg["caption_projection_dim"]
    assert mm["pos_embed"].shape == (1, cfg["pos_embed_max_size"] ** 2, c)
    assert mm[f"joint_blocks.{n - 1}.x_block.attn.qkv.weight"].shape == (3 * c, c)
    assert mm[f"joint_blocks.{n - 1}.context_block.adaLN_modulation.1.weight"].shape == (2 * c, c)
    assert mm["context_embedder.weight"].shape == (c, 4096)
    ck = L.sd3_checkpoint(want, vae=meta_sd(AutoencoderKL, **FLUX_VAE))
    assert sfu.infer_diffusers_model_type(ck) == kind
    got = sfu.convert_sd3_transformer_checkpoint_to_diffusers(dict(ck))
    assert_same(got, want, values=False)


def test_lowvram_flux_converter_inverts_bfl_layout_at_any_width():
    """lowvram's own BFL -> diffusers Flux converter (diffusers' hard-codes width 3072)."""
    from lowvram.generate.flux_keys import bfl_flux_to_diffusers

    for cfg in (dict(num_layers=1, num_single_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                     pooled_projection_dim=32, axes_dims_rope=(4, 6, 6), in_channels=16, guidance_embeds=True), {}):
        with torch.device("meta") if not cfg else torch.device("cpu"):
            model = FluxTransformer2DModel(**cfg)
        sd = model.state_dict()
        got = bfl_flux_to_diffusers(L.flux_to_bfl(sd))
        assert set(got) == set(sd)
        for k, v in sd.items():
            assert got[k].shape == v.shape, k
            if not v.is_meta:
                assert torch.equal(got[k], v), k
