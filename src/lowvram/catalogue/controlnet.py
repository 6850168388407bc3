"""ControlNets: the published one the plan assumes for each model, and the spec of a user's folder.

A ControlNet is a component of its own — weights, activations and FLOPs of its forward — that runs
once per denoiser call, in the denoiser's phase. It is no part of a ModelSpec: a workload adds it.
The shipped configs are the published config.json files (sources in docs/catalogue.md).
"""

from __future__ import annotations

import os

from ..errors import UserError
from ..jsonfile import read_json
from .build import load_config
from .spec import ComponentSpec, ModelSpec

CONTROLNET_FAMILIES = ("sd1", "sdxl", "flux")  # the families whose ControlNet pipelines lowvram runs
# The ControlNet class that pairs with each denoiser class in diffusers' ControlNet pipelines.
CONTROLNET_CLASS = {"UNet2DConditionModel": "ControlNetModel", "FluxTransformer2DModel": "FluxControlNetModel"}


def _spec(class_name: str, config: str, title: str) -> ComponentSpec:
    # pixel_divisor 8: it reads the denoiser's latents (and, for a UNet ControlNet, the full-size image)
    return ComponentSpec("controlnet", "controlnet", "diffusers", class_name, config, pixel_divisor=8, title=title)


_FLUX = _spec("FluxControlNetModel", "flux-dev-controlnet-canny", "InstantX/FLUX.1-dev-Controlnet-Canny")
DEFAULTS = {
    "sd15": _spec("ControlNetModel", "sd15-controlnet-canny", "lllyasviel/control_v11p_sd15_canny"),
    "sdxl": _spec("ControlNetModel", "sdxl-controlnet-canny", "diffusers/controlnet-canny-sdxl-1.0"),
    "flux-dev": _FLUX,
    "flux-schnell": _FLUX,  # no schnell ControlNet is published; the dev ones are used with it
}


def _check_family(model: ModelSpec) -> None:
    if model.family not in CONTROLNET_FAMILIES:
        raise UserError(f"ControlNet is supported for SD1.5, SDXL and Flux, not {model.name}.")


def default_controlnet(model: ModelSpec) -> ComponentSpec:
    """The published ControlNet the plan assumes when the user names no folder."""
    _check_family(model)
    if model.name not in DEFAULTS:
        raise UserError(f"lowvram has no default ControlNet for {model.name}: give the ControlNet folder to plan with.")
    return DEFAULTS[model.name]


def shown_class(class_name) -> str:
    """A config's `_class_name` as an error message shows it: as written when it is a name, quoted (escapes
    visible) when a damaged file holds anything else, so the message stays one line."""
    return class_name if isinstance(class_name, str) and class_name.isidentifier() else repr(class_name)


def folder_controlnet(model: ModelSpec, folder: str) -> ComponentSpec:
    """The spec of a diffusers ControlNet folder: its own config.json, checked against the model."""
    _check_family(model)
    path = os.path.abspath(os.path.join(folder, "config.json"))
    class_name = read_json(path, "a diffusers ControlNet config", fix="point at a diffusers ControlNet folder").get("_class_name")
    denoiser = model.by_role("denoiser")[0].class_name
    if "ControlNet" not in str(class_name):
        raise UserError(f"{folder} holds a {shown_class(class_name)}, not a ControlNet.")
    if CONTROLNET_CLASS.get(denoiser) != class_name:
        raise UserError(f"{folder} holds a {shown_class(class_name)}, which does not pair with {model.name}'s {denoiser}: "
                        f"use a {CONTROLNET_CLASS.get(denoiser, 'ControlNet')} made for {model.name}.")
    return _spec(class_name, path, os.path.basename(os.path.normpath(folder)))


# Config fields that fix the shapes of a ControlNet's residuals (and of the text states it reads), with the defaults both classes of a pair
# share: a ControlNet pairs with a denoiser when they agree on all of them.
_RESIDUAL_FIELDS = {
    "ControlNetModel": {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 1280},
    "FluxControlNetModel": {"num_attention_heads": 24, "attention_head_dim": 128, "joint_attention_dim": 4096},
}


def pairs_with(denoiser: ComponentSpec, controlnet: ComponentSpec) -> bool:
    """Whether the ControlNet's residuals have the shapes the denoiser adds them to (its skip states, or
    its hidden states). False for a ControlNet of another width than the catalogue's denoiser — one
    made for another model, or a scaled-down test model planned as the catalogue architecture."""
    if CONTROLNET_CLASS.get(denoiser.class_name) != controlnet.class_name:
        return False
    return residual_mismatch(load_config(denoiser.config), load_config(controlnet.config), controlnet.class_name) is None


def residual_mismatch(denoiser_cfg: dict, controlnet_cfg: dict, class_name: str) -> str | None:
    """The first config field on which a ControlNet and a denoiser disagree about residual shapes
    ("block_out_channels 320,640 vs 32,64"), or None when they pair."""
    fields = _RESIDUAL_FIELDS.get(class_name)
    if fields is None:
        return f"{class_name} is not a ControlNet class lowvram knows"

    def value(cfg: dict, key: str):
        v = cfg.get(key, fields[key])
        if key == "layers_per_block" and isinstance(v, int):  # an int means the same for every block
            v = [v] * len(cfg.get("block_out_channels", fields["block_out_channels"]))
        return list(v) if isinstance(v, (list, tuple)) else v

    for k in fields:
        a, b = value(denoiser_cfg, k), value(controlnet_cfg, k)
        if a != b:
            return f"{k} {a} vs {b}"
    return None


def encodes_control_image(spec: ComponentSpec) -> bool:
    """InstantX-style Flux ControlNets (no `input_hint_block`) take the control image as VAE latents, so
    their pipeline runs a VAE encode before denoising; UNet and XLabs-style ones embed the pixels."""
    return spec.class_name == "FluxControlNetModel" and load_config(spec.config).get("conditioning_embedding_channels") is None
