"""The built-in catalogue of architectures: specs, shipped configs, meta-device instantiation."""

from __future__ import annotations

from . import deepfloyd, flux, hidream, pixart, qwen_image, sd3, stable_diffusion
from .build import build_component, component_params, load_config, spec_params
from .spec import ComponentSpec, ModelSpec
from ..errors import UserError

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for family in (stable_diffusion, sd3, flux, pixart, hidream, deepfloyd, qwen_image)
    for m in family.MODELS
}

# Names people type for the same thing.
ALIASES = {
    "sd1.5": "sd15", "sd-1.5": "sd15", "sd1": "sd15", "stable-diffusion-1.5": "sd15",
    "sd2.1": "sd21", "sd2": "sd21", "sd-2.1": "sd21",
    "sdxl-base": "sdxl", "sd-xl": "sdxl",
    "sd3": "sd3-medium", "sd3.5-medium": "sd35-medium", "sd3.5-large": "sd35-large",
    "sd35m": "sd35-medium", "sd35l": "sd35-large",
    "flux": "flux-dev", "flux1-dev": "flux-dev", "flux.1-dev": "flux-dev",
    "flux1-schnell": "flux-schnell", "flux.1-schnell": "flux-schnell",
    "hidream": "hidream-i1", "hidream-i1-full": "hidream-i1", "hidream-i1-dev": "hidream-i1",
    "hidream-i1-fast": "hidream-i1",
    "if": "deepfloyd-if", "deepfloyd": "deepfloyd-if",
    "pixart": "pixart-sigma", "qwen": "qwen-image",
}


def get_model(name: str) -> ModelSpec:
    """Look a catalogue entry up by id or common alias; UserError naming the choices otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in MODELS:
        return MODELS[key]
    raise UserError(
        f"Unknown model {name!r}: choose one of {', '.join(MODELS)} (see `lowvram models`), or give a checkpoint path."
    )


__all__ = ["MODELS", "ALIASES", "ComponentSpec", "ModelSpec", "get_model", "load_config", "build_component",
           "component_params", "spec_params"]
