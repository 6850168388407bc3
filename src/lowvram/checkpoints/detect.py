"""From recognised parts to a catalogue architecture, its variant, and which component is which."""

from __future__ import annotations

from ..catalogue import MODELS, ModelSpec
from .parts import Part

# Which shipped configs a non-denoiser part can stand for (the same T5 serves SD3, Flux, PixArt, ...).
KIND_CONFIGS: dict[str, set[str]] = {
    "clip-l": {"clip-vit-large-patch14", "clip-vit-large-patch14-proj"},
    "clip-g": {"clip-vit-bigg14-text-proj"},
    "clip-h": {"openclip-vit-h14-text"},
    "t5": {"t5-v1_1-xxl-encoder"},
    "llama": {"llama-3.1-8b-instruct"},
    "qwen2-vl": {"qwen2.5-vl-7b"},
    "vae4": {"sd-vae", "sdxl-vae", "sd-x4-upscaler-vae"},
    "vae16": {"sd3-vae", "flux-vae"},
    "vae-qwen": {"qwen-image-vae"},
}
KIND_TITLES = {
    "clip-l": "CLIP ViT-L/14 text encoder", "clip-g": "OpenCLIP ViT-bigG/14 text encoder",
    "clip-h": "OpenCLIP ViT-H/14 text encoder", "t5": "T5 v1.1 XXL text encoder",
    "llama": "Llama 3.1 8B text encoder", "qwen2-vl": "Qwen2.5-VL text encoder",
    "vae4": "4-channel VAE (SD1/SD2/SDXL)", "vae16": "16-channel VAE (FLUX / SD3)", "vae-qwen": "Qwen-Image VAE",
}


def identify_denoiser(part: Part) -> tuple[ModelSpec, str, str]:
    """(catalogue model, variant, component name) for a denoiser part; ValueError if unknown."""
    f, k = part.facts, part.kind
    if k == "unet":
        label, ctx, inch = f.get("label_emb"), f.get("context_dim"), f.get("in_channels")
        variant = {9: "inpaint", 8: "instruct-pix2pix"}.get(inch, "base")
        if f.get("t5_proj"):
            stage = {3: ("I", "unet"), 6: ("II", "unet_2")}.get(inch)
            if stage:
                return MODELS["deepfloyd-if"], f"stage {stage[0]}", stage[1]
        if f.get("class_embed") and inch == 7:
            return MODELS["deepfloyd-if"], "stage III (SD x4 upscaler)", "unet_3"
        if label is not None:
            if ctx == 1280 or (len(label) == 2 and label[1] == 2560):
                return MODELS["sdxl-refiner"], "refiner", "unet"
            return MODELS["sdxl"], variant, "unet"
        if ctx == 768:
            return MODELS["sd15"], variant, "unet"
        if ctx == 1024:
            return MODELS["sd21"], variant, "unet"
        raise ValueError(f"a UNet with cross-attention width {ctx}")
    if k == "mmdit":
        if f.get("dual"):
            return MODELS["sd35-medium"], "medium", "transformer"
        if f.get("blocks") == 38:
            return MODELS["sd35-large"], "large", "transformer"
        if f.get("blocks") == 24 and not f.get("qk_norm"):
            return MODELS["sd3-medium"], "medium", "transformer"
        raise ValueError(f"an MMDiT with {f.get('blocks')} blocks")
    if k == "flux":
        return (MODELS["flux-dev"], "dev", "transformer") if f.get("guidance") else (MODELS["flux-schnell"], "schnell", "transformer")
    if k == "chroma":
        return MODELS["chroma"], "base", "transformer"
    if k == "pixart":
        return (MODELS["pixart-alpha"], "alpha", "transformer") if f.get("micro") else (MODELS["pixart-sigma"], "sigma", "transformer")
    if k == "hidream":
        return MODELS["hidream-i1"], "full/dev/fast", "transformer"
    if k == "qwen-image":
        return MODELS["qwen-image"], "base", "transformer"
    raise ValueError(k)


def _configs_for(kind: str) -> set[str]:
    """Configs a part kind can stand for; a CLIP or T5 of a width we do not know (a fine-tune, a scaled-down
    test model) may stand for any CLIP or T5 slot the model still has free."""
    if kind in KIND_CONFIGS:
        return KIND_CONFIGS[kind]
    if kind == "clip":
        return KIND_CONFIGS["clip-l"] | KIND_CONFIGS["clip-g"] | KIND_CONFIGS["clip-h"]
    if kind.startswith("t5"):
        return KIND_CONFIGS["t5"]
    return set()


def assign_components(model: ModelSpec, parts: list[Part]) -> tuple[dict[str, Part], list[Part]]:
    """Match non-denoiser parts to the model's component names; return (assigned, unused parts).
    Parts whose kind is exact are placed first, then the generic ones fill the remaining slots."""
    assigned: dict[str, Part] = {}
    unused = []
    for p in sorted(parts, key=lambda p: p.kind not in KIND_CONFIGS):
        target = next((c.name for c in model.components
                       if c.role != "denoiser" and c.name not in assigned and c.config in _configs_for(p.kind)), None)
        if target is None:
            unused.append(p)
        else:
            assigned[target] = p
    return assigned, unused


def models_using(kind: str) -> list[str]:
    """Catalogue models that have a component of this kind (for a lone component file)."""
    configs = KIND_CONFIGS.get(kind, set())
    return [m.name for m in MODELS.values() if any(c.config in configs for c in m.components)]
