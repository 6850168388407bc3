"""The inputs a pipeline feeds each component, built at the shapes a workload implies.

One builder per component class, each mirroring what the diffusers pipeline passes (shapes, dtypes,
extra conditioning). They run under whatever tensor mode is active, so the same builder makes fake
tensors for the simulation and real random tensors for the accuracy test and the runtime benchmarks.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..catalogue import ComponentSpec, ModelSpec
from ..kernels.vae_tiling import latent_scale

Inputs = tuple[Callable[..., Any], dict[str, Any]]  # (callable on the module, kwargs)


def _rand(shape, dtype, device) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, device=device)


def _ids(shape, vocab, device) -> torch.Tensor:
    return torch.randint(0, vocab, shape, device=device)


def denoiser_inputs(module, model: ModelSpec, comp: ComponentSpec, batch: int, width: int, height: int,
                    dtype: torch.dtype, device) -> Inputs:
    cfg = module.config
    cls = comp.class_name
    h, w = height // comp.pixel_divisor, width // comp.pixel_divisor
    t = torch.full((batch,), 500.0, device=device)
    if cls == "UNet2DConditionModel":
        ctx_dim = cfg.encoder_hid_dim or cfg.cross_attention_dim
        kw: dict[str, Any] = dict(sample=_rand((batch, cfg.in_channels, h, w), dtype, device), timestep=t,
                                  encoder_hidden_states=_rand((batch, 77, ctx_dim), dtype, device))
        if cfg.addition_embed_type == "text_time":  # SDXL: pooled bigG embedding + size/crop "time ids"
            text_dim = 1280  # the pooled OpenCLIP bigG embedding (base and refiner)
            n_ids = (cfg.projection_class_embeddings_input_dim - text_dim) // cfg.addition_time_embed_dim
            if n_ids <= 0:  # a narrower text encoder (a scaled-down model): the base's 6 size/crop ids
                n_ids = 6
                text_dim = cfg.projection_class_embeddings_input_dim - n_ids * cfg.addition_time_embed_dim
            kw["added_cond_kwargs"] = {"text_embeds": _rand((batch, text_dim), dtype, device),
                                       "time_ids": _rand((batch, n_ids), dtype, device)}
        if cfg.class_embed_type is not None or cfg.num_class_embeds is not None:  # IF II / x4 upscaler: noise level
            kw["class_labels"] = torch.full((batch,), 20, dtype=torch.long, device=device)
        return module, kw
    if cls in ("FluxTransformer2DModel", "ChromaTransformer2DModel"):
        n = (h // 2) * (w // 2)
        text_len = model.text_lengths.get("text_encoder_2" if cls == "FluxTransformer2DModel" else "text_encoder", 512)
        kw = dict(hidden_states=_rand((batch, n, cfg.in_channels), dtype, device),
                  encoder_hidden_states=_rand((batch, text_len, cfg.joint_attention_dim), dtype, device),
                  timestep=t / 1000, img_ids=torch.zeros(n, 3, device=device), txt_ids=torch.zeros(text_len, 3, device=device),
                  return_dict=False)
        if cls == "FluxTransformer2DModel":
            kw["pooled_projections"] = _rand((batch, cfg.pooled_projection_dim), dtype, device)
            if cfg.guidance_embeds:
                kw["guidance"] = torch.full((batch,), 3.5, device=device)
        return module, kw
    if cls == "SD3Transformer2DModel":
        text_len = model.text_lengths["text_encoder"] + model.text_lengths["text_encoder_3"]
        return module, dict(
            hidden_states=_rand((batch, cfg.in_channels, h, w), dtype, device),
            encoder_hidden_states=_rand((batch, text_len, cfg.joint_attention_dim), dtype, device),
            pooled_projections=_rand((batch, cfg.pooled_projection_dim), dtype, device), timestep=t, return_dict=False)
    if cls == "PixArtTransformer2DModel":
        text_len = model.text_lengths["text_encoder"]
        added = {"resolution": None, "aspect_ratio": None}
        if cfg.use_additional_conditions:
            added = {"resolution": torch.tensor([[height, width]] * batch, dtype=dtype, device=device),
                     "aspect_ratio": torch.tensor([[height / width]] * batch, dtype=dtype, device=device)}
        return module, dict(
            hidden_states=_rand((batch, cfg.in_channels, h, w), dtype, device),
            encoder_hidden_states=_rand((batch, text_len, cfg.cross_attention_dim if cfg.caption_channels is None else cfg.caption_channels), dtype, device),
            timestep=t, added_cond_kwargs=added, return_dict=False)
    if cls == "HiDreamImageTransformer2DModel":
        llama_layers = 32
        return module, dict(
            hidden_states=_rand((batch, cfg.in_channels, h, w), dtype, device), timesteps=t,
            encoder_hidden_states_t5=_rand((batch, model.text_lengths["text_encoder_3"], cfg.caption_channels[0]), dtype, device),
            encoder_hidden_states_llama3=_rand((llama_layers, batch, model.text_lengths["text_encoder_4"], cfg.caption_channels[1]), dtype, device),
            pooled_embeds=_rand((batch, cfg.text_emb_dim), dtype, device), return_dict=False)
    if cls == "QwenImageTransformer2DModel":
        n = (h // 2) * (w // 2)
        text_len = model.text_lengths["text_encoder"]
        return module, dict(
            hidden_states=_rand((batch, n, cfg.in_channels), dtype, device),
            encoder_hidden_states=_rand((batch, text_len, cfg.joint_attention_dim), dtype, device),
            encoder_hidden_states_mask=torch.ones(batch, text_len, dtype=torch.long, device=device),
            timestep=t / 1000, img_shapes=[[(1, h // 2, w // 2)]] * batch, return_dict=False)
    raise NotImplementedError(f"no input builder for denoiser class {cls}")


# A ControlNet takes its denoiser's inputs (same config field names) plus the control image.
_CONTROLNET_BASE = {"ControlNetModel": "UNet2DConditionModel", "FluxControlNetModel": "FluxTransformer2DModel"}


def controlnet_inputs(module, model: ModelSpec, comp: ComponentSpec, batch: int, width: int, height: int,
                      dtype: torch.dtype, device) -> Inputs:
    """What diffusers' ControlNet pipelines pass: the denoiser's inputs, the control image (full-size
    pixels; VAE latents packed like the image tokens for InstantX Flux ControlNets) and its scale."""
    if comp.class_name not in _CONTROLNET_BASE:
        raise NotImplementedError(f"no input builder for ControlNet class {comp.class_name}")
    base = ComponentSpec(comp.name, "denoiser", comp.library, _CONTROLNET_BASE[comp.class_name], comp.config,
                         pixel_divisor=comp.pixel_divisor)
    fn, kw = denoiser_inputs(module, model, base, batch, width, height, dtype, device)
    cfg = module.config
    if comp.class_name == "ControlNetModel":
        # the image at the size its embedding brings down to the latents' (x8: the full image, for every
        # published ControlNet, whose embedding matches the VAE's factor)
        f = 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)
        h, w = kw["sample"].shape[-2:]
        kw["controlnet_cond"] = _rand((batch, cfg.conditioning_channels, h * f, w * f), dtype, device)
    elif module.input_hint_block is not None:  # XLabs: embeds the pixels itself
        kw["controlnet_cond"] = _rand((batch, 3, height, width), dtype, device)
    else:  # InstantX: the pipeline VAE-encodes the image and packs it into the image tokens' shape
        kw["controlnet_cond"] = _rand(tuple(kw["hidden_states"].shape), dtype, device)
    if comp.class_name == "FluxControlNetModel" and cfg.num_mode is not None:  # Union: one mode per image
        kw["controlnet_mode"] = torch.zeros((batch, 1), dtype=torch.long, device=device)
    kw["conditioning_scale"] = 1.0
    kw["return_dict"] = False
    return fn, kw


def controlnet_step_inputs(pair, model: ModelSpec, comp: ComponentSpec, batch: int, width: int, height: int,
                           dtype: torch.dtype, device) -> Inputs:
    """One denoiser call of a ControlNet pipeline, on `pair` = ModuleDict(controlnet=..., denoiser=...):
    the ControlNet on the control image and the inputs it shares with the denoiser, then the denoiser
    with its residuals, as diffusers' pipelines make it. Each side gets what its own config asks for
    (a guidance-distilled ControlNet gets guidance even beside FLUX.1-schnell); the control image stays
    alive throughout (the pipeline holds it for the whole loop)."""
    cn, den = pair["controlnet"], pair["denoiser"]
    den_spec = model.by_role("denoiser")[0]
    _, den_kw = denoiser_inputs(den, model, den_spec, batch, width, height, dtype, device)
    _, cn_kw = controlnet_inputs(cn, model, comp, batch, width, height, dtype, device)
    for k, v in cn_kw.items():  # the same latents, prompt embeddings and timestep go to both
        if k in den_kw and _same_shapes(v, den_kw[k]):
            cn_kw[k] = den_kw[k]

    def step(den_kw, cn_kw):
        residuals = cn(**cn_kw)
        if comp.class_name == "ControlNetModel":
            return den(**den_kw, down_block_additional_residuals=residuals[0],
                       mid_block_additional_residual=residuals[1])
        # XLabs ControlNets (with an input hint block) give fewer samples, repeated over the blocks
        return den(**den_kw, controlnet_block_samples=residuals[0], controlnet_single_block_samples=residuals[1],
                   controlnet_blocks_repeat=cn.input_hint_block is not None)
    return step, {"den_kw": den_kw, "cn_kw": cn_kw}


def _same_shapes(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_shapes(a[k], b[k]) for k in a)
    return False


def text_encoder_inputs(module, comp: ComponentSpec, batch: int, device) -> Inputs:
    cfg = module.config
    vocab = getattr(cfg, "vocab_size", None) or cfg.get_text_config().vocab_size
    ids = _ids((batch, comp.max_tokens or 77), vocab, device)
    # HiDream / Qwen-Image read hidden states, not logits, and the CLIP pipelines the penultimate
    # layer: they ask for all hidden states.
    if comp.class_name in ("LlamaForCausalLM", "Qwen2_5_VLForConditionalGeneration") or comp.class_name.startswith("CLIP"):
        return module, dict(input_ids=ids, output_hidden_states=True)
    return module, dict(input_ids=ids)


def vae_inputs(module, comp: ComponentSpec, op: str, batch: int, width: int, height: int, dtype, device) -> Inputs:
    cfg = module.config
    f = latent_scale(module)
    if op == "encode":
        shape = (batch, 3, height, width) if comp.class_name != "AutoencoderKLQwenImage" else (batch, 3, 1, height, width)
        return module.encode, dict(x=_rand(shape, dtype, device))
    lat = (batch, cfg.latent_channels if hasattr(cfg, "latent_channels") else cfg.z_dim, height // f, width // f)
    if comp.class_name == "AutoencoderKLQwenImage":
        lat = (batch, cfg.z_dim, 1, height // f, width // f)
    return module.decode, dict(z=_rand(lat, dtype, device), return_dict=False)
