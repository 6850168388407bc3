"""Recognise what a set of tensor names is: which kind of component, in which key layout.

A "part" is a group of tensors that forms one component — a whole file (ComfyUI keeps the T5 encoder,
the VAE and the diffusion model in separate files) or one prefix of a single-file checkpoint
(`first_stage_model.*` is the VAE of an A1111 checkpoint). Classification reads names and shapes only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .tensors import TensorInfo

# Container prefixes of single-file checkpoints (A1111 / SGM / ComfyUI) -> the part kind they hold,
# or None when the kind must be read from the keys under the prefix.
CONTAINER_PREFIXES: tuple[tuple[str, str | None], ...] = (
    ("model.diffusion_model.", None),
    ("first_stage_model.", None),
    ("cond_stage_model.transformer.", "clip-l"),  # SD1: HF CLIPTextModel layout
    ("cond_stage_model.model.", "clip-h"),  # SD2: OpenCLIP layout
    ("conditioner.embedders.0.transformer.", "clip-l"),  # SDXL CLIP-L
    ("conditioner.embedders.0.model.", "clip-g"),  # SDXL refiner bigG
    ("conditioner.embedders.1.model.", "clip-g"),  # SDXL bigG
    ("text_encoders.clip_l.transformer.", "clip-l"),  # ComfyUI SD3 / Flux checkpoints
    ("text_encoders.clip_g.transformer.", "clip-g"),
    ("text_encoders.t5xxl.transformer.", "t5"),
    ("text_encoders.clip_l.", "clip-l"),
    ("text_encoders.clip_g.", "clip-g"),
    ("text_encoders.t5xxl.", "t5"),
    ("text_encoders.llama.", "llama"),
    ("vae.", None),
)
# Tensors that are buffers or training leftovers, not parameters of any component.
_IGNORED = re.compile(r"(^|\.)(position_ids|logit_scale|alphas_cumprod(_prev)?|betas|sqrt_.*|log_one_minus_alphas_cumprod|"
                      r"posterior_.*|model_ema\..*|logvar|num_updates|decay)$|^model_ema\.")

CLIP_BY_WIDTH = {768: "clip-l", 1024: "clip-h", 1280: "clip-g"}


@dataclass
class Part:
    """One recognised component: its kind ("unet", "flux", "t5", "vae", ...), layout and tensors."""

    kind: str  # denoiser kinds: unet, mmdit, flux, chroma, pixart, hidream, qwen-image; others: clip-l, clip-g, clip-h, t5, llama, qwen2-vl, vae4, vae16, vae-qwen
    layout: str  # "original" (LDM/SGM/BFL/MMDiT names), "diffusers", "transformers", "openclip"
    tensors: list[TensorInfo] = field(default_factory=list)
    source: str = ""  # file (and prefix) it came from
    facts: dict = field(default_factory=dict)  # shapes read off the keys: context_dim, in_channels, blocks...

    @property
    def is_denoiser(self) -> bool:
        return self.kind in DENOISER_KINDS

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


DENOISER_KINDS = {"unet", "mmdit", "flux", "chroma", "pixart", "hidream", "qwen-image"}


def split_parts(tensors: list[TensorInfo], source: str) -> tuple[list[Part], list[TensorInfo]]:
    """Group a file's tensors by container prefix and classify each group; return (parts, unrecognised)."""
    groups: dict[str, list[TensorInfo]] = {}
    for t in tensors:
        if _IGNORED.search(t.name):
            continue
        for prefix, _ in CONTAINER_PREFIXES:
            if t.name.startswith(prefix):
                groups.setdefault(prefix, []).append(t)
                break
        else:
            groups.setdefault("", []).append(t)
    parts, unknown = [], []
    for prefix, group in groups.items():
        stripped = [TensorInfo(t.name[len(prefix):], t.shape, t.dtype, t.nbytes, t.offset) for t in group]
        part = classify(stripped, f"{source}:{prefix}*" if prefix else source)
        if part is None:
            unknown.extend(group)
        else:
            implied = dict(CONTAINER_PREFIXES).get(prefix)
            if implied and part.kind != implied and not part.is_denoiser:
                # the container says which encoder it is (authoritative for scaled-down or odd widths)
                part.kind = implied
            part.facts["prefix"] = prefix
            parts.append(part)
    return parts, unknown


def classify(tensors: list[TensorInfo], source: str) -> Part | None:
    """Name the component a group of (prefix-free) tensors makes up, or None if it is none we know."""
    shapes = {t.name: t.shape for t in tensors}
    names = shapes.keys()

    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) for n in names)

    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for n in names if (m := rx.match(n))})

    def part(kind: str, layout: str, **facts) -> Part:
        return Part(kind, layout, list(tensors), source, facts)

    # --- denoisers -------------------------------------------------------------------------------
    if has("double_blocks.") and has("single_blocks."):
        kind = "chroma" if has("distilled_guidance_layer.") else "flux"
        return part(kind, "original", double=count(r"double_blocks\.(\d+)\."), single=count(r"single_blocks\.(\d+)\."),
                    guidance=has("guidance_in."))
    if has("distilled_guidance_layer.") and has("single_transformer_blocks."):
        return part("chroma", "diffusers", double=count(r"transformer_blocks\.(\d+)\."),
                    single=count(r"single_transformer_blocks\.(\d+)\."))
    if has("single_transformer_blocks.") and has("x_embedder."):
        return part("flux", "diffusers", double=count(r"transformer_blocks\.(\d+)\."),
                    single=count(r"single_transformer_blocks\.(\d+)\."), guidance=has("time_text_embed.guidance_embedder."))
    if has("joint_blocks."):
        return part("mmdit", "original", blocks=count(r"joint_blocks\.(\d+)\."), qk_norm=has("joint_blocks.0.x_block.attn.ln_q"),
                    dual=has("joint_blocks.0.x_block.attn2."))
    if has("transformer_blocks.") and has("pos_embed.proj.") and has("context_embedder."):
        return part("mmdit", "diffusers", blocks=count(r"transformer_blocks\.(\d+)\."),
                    qk_norm=has("transformer_blocks.0.attn.norm_q."), dual=has("transformer_blocks.0.attn2."))
    if has("double_stream_blocks.") and has("single_stream_blocks."):
        return part("hidream", "diffusers", double=count(r"double_stream_blocks\.(\d+)\."),
                    single=count(r"single_stream_blocks\.(\d+)\."))
    if has("transformer_blocks.") and has("txt_norm.") and has("img_in."):
        return part("qwen-image", "diffusers", blocks=count(r"transformer_blocks\.(\d+)\."))
    if has("blocks.") and has("x_embedder.") and has("y_embedder.") and has("t_block."):
        return part("pixart", "original", blocks=count(r"blocks\.(\d+)\."), micro=has("csize_embedder.") or has("ar_embedder."))
    if has("transformer_blocks.") and has("adaln_single.") and has("caption_projection."):
        return part("pixart", "diffusers", blocks=count(r"transformer_blocks\.(\d+)\."),
                    micro=has("adaln_single.emb.resolution_embedder."))
    if has("input_blocks.") and has("output_blocks."):
        return part("unet", "original", in_channels=_dim(shapes, "input_blocks.0.0.weight", 1),
                    context_dim=_context_dim(shapes), label_emb=_shape(shapes, "label_emb.0.0.weight"))
    if has("down_blocks.") and has("up_blocks.") and has("conv_in.") and has("time_embedding."):
        return part("unet", "diffusers", in_channels=_dim(shapes, "conv_in.weight", 1), context_dim=_context_dim(shapes),
                    linear_proj=any(n.endswith("proj_in.weight") and len(s) == 2 for n, s in shapes.items()),
                    label_emb=_shape(shapes, "add_embedding.linear_1.weight"), t5_proj=has("encoder_hid_proj."),
                    class_embed=has("class_embedding."))
    # --- VAEs ------------------------------------------------------------------------------------
    if (has("encoder.down.") or has("encoder.down_blocks.") or has("encoder.downsamples.")) and has("decoder.conv_in."):
        w = shapes.get("decoder.conv_in.weight", ())
        if len(w) == 5:
            return part("vae-qwen", "diffusers", latent_channels=w[1])
        layout = "original" if has("encoder.down.") else "diffusers"
        latent = w[1] if len(w) == 4 else 0
        return part("vae16" if latent == 16 else "vae4" if latent == 4 else f"vae{latent}", layout, latent_channels=latent)
    # --- text encoders ---------------------------------------------------------------------------
    for emb, layout in (("text_model.embeddings.token_embedding.weight", "transformers"),
                        ("transformer.text_model.embeddings.token_embedding.weight", "transformers"),
                        ("embeddings.token_embedding.weight", "transformers"),  # transformers >= 5 drops "text_model."
                        ("token_embedding.weight", "openclip")):
        if emb in shapes:
            width = shapes[emb][1]
            layers = count(r"(?:transformer\.)?(?:text_model\.)?encoder\.layers\.(\d+)\.") or count(r"transformer\.resblocks\.(\d+)\.")
            return part(CLIP_BY_WIDTH.get(width, "clip"), layout, width=width, layers=layers,
                        projection=has("text_projection") or has("transformer.text_projection"))
    if has("encoder.block.") and (has("shared.") or has("encoder.embed_tokens.")):
        emb = shapes.get("shared.weight") or shapes.get("encoder.embed_tokens.weight") or (0, 0)
        return part("t5" if emb[1] == 4096 else f"t5-{emb[1]}", "transformers", width=emb[1],
                    layers=count(r"encoder\.block\.(\d+)\."))
    if has("visual.") and (has("model.layers.") or has("model.language_model.")):
        return part("qwen2-vl", "transformers", layers=count(r"model\.(?:language_model\.)?layers\.(\d+)\."))
    if has("model.layers.") and has("model.embed_tokens.") or has("layers.") and has("embed_tokens."):
        return part("llama", "transformers", layers=count(r"(?:model\.)?layers\.(\d+)\."))
    return None


def _shape(shapes: dict, key: str) -> tuple[int, ...] | None:
    return shapes.get(key)


def _dim(shapes: dict, key: str, i: int) -> int | None:
    s = shapes.get(key)
    return s[i] if s and len(s) > i else None


def _context_dim(shapes: dict) -> int | None:
    """Cross-attention context width: the input dim of any attn2 key projection."""
    for name, s in shapes.items():
        if name.endswith("attn2.to_k.weight") and len(s) == 2:
            return s[1]
    return None
