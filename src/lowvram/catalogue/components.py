"""Components shared by several families (the same CLIP, T5 or VAE appears in many pipelines)."""

from __future__ import annotations

from .spec import ComponentSpec


def clip_l(name: str = "text_encoder", projection: bool = False) -> ComponentSpec:
    if projection:  # SD3 / HiDream use the pooled, projected output
        return ComponentSpec(name, "text_encoder", "transformers", "CLIPTextModelWithProjection",
                             "clip-vit-large-patch14-proj", "clip", 77, title="CLIP ViT-L/14")
    return ComponentSpec(name, "text_encoder", "transformers", "CLIPTextModel",
                         "clip-vit-large-patch14", "clip", 77, title="CLIP ViT-L/14")


def clip_g(name: str = "text_encoder_2") -> ComponentSpec:
    return ComponentSpec(name, "text_encoder", "transformers", "CLIPTextModelWithProjection",
                         "clip-vit-bigg14-text-proj", "clip", 77, title="OpenCLIP ViT-bigG/14")


def openclip_h(name: str = "text_encoder") -> ComponentSpec:
    return ComponentSpec(name, "text_encoder", "transformers", "CLIPTextModel",
                         "openclip-vit-h14-text", "clip", 77, title="OpenCLIP ViT-H/14")


def t5_xxl(name: str, max_tokens: int, stage: str = "") -> ComponentSpec:
    return ComponentSpec(name, "text_encoder", "transformers", "T5EncoderModel",
                         "t5-v1_1-xxl-encoder", "t5", max_tokens, stage=stage, title="T5 v1.1 XXL encoder")


def vae(config: str, title: str, name: str = "vae", cls: str = "AutoencoderKL", stage: str = "") -> ComponentSpec:
    return ComponentSpec(name, "vae", "diffusers", cls, config, pixel_divisor=8, stage=stage, title=title)


def denoiser(name: str, cls: str, config: str, title: str, pixel_divisor: int = 8, stage: str = "",
             step_ratio: float = 1.0) -> ComponentSpec:
    return ComponentSpec(name, "denoiser", "diffusers", cls, config, pixel_divisor=pixel_divisor,
                         stage=stage, title=title, step_ratio=step_ratio)
