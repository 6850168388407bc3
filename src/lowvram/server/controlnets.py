"""The ControlNets a server offers: diffusers ControlNet folders in its `--models-dir`, by the names it
lists, and which of its models each one fits.

A1111 keeps ControlNets in `models/ControlNet/`, ComfyUI in `models/controlnet/`; lowvram runs diffusers
folders (a config.json naming a ControlNet class beside its weights), so it lists the folders found
there and in `models/diffusers/`. Each gets A1111's title "name [hash]" (the extension's model_list
names them so) with the legacy short hash of its weights file (server/models.py `legacy_hash`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserError

CONTROLNET_DIRS = ("ControlNet", "controlnet", "diffusers")  # A1111's, ComfyUI's, lowvram's diffusers folders
# diffusers' ControlNet classes for the denoisers lowvram runs (SD3's is listed, and fits no model here yet).
CONTROLNET_CLASSES = ("ControlNetModel", "FluxControlNetModel", "SD3ControlNetModel")
DENOISER_SUBFOLDERS = ("unet", "transformer")  # where a diffusers pipeline folder keeps its denoiser


@dataclass
class ServedControlNet:
    """One ControlNet folder the server lists."""

    name: str  # the folder's name: what requests and /controlnet/model_list call it (with its hash)
    path: str
    class_name: str
    hash: str = ""

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]" if self.hash else self.name


def find_controlnets(models_dir: str) -> list[ServedControlNet]:
    """The ControlNet folders directly under models_dir's ControlNet folders, sorted by name in each."""
    from ..jsonfile import read_json
    from .models import legacy_hash

    out, seen = [], set()
    for sub in CONTROLNET_DIRS:
        folder = os.path.join(models_dir, sub)
        if not os.path.isdir(folder):
            continue
        for d in sorted(os.listdir(folder)):
            path = os.path.join(folder, d)
            config = os.path.join(path, "config.json")
            if not os.path.isfile(config) or os.path.realpath(path) in seen:
                continue
            try:
                class_name = read_json(config, "a diffusers config.json").get("_class_name")
            except UserError:
                continue  # a damaged folder is not listed, as a damaged model file is not
            if class_name in CONTROLNET_CLASSES:
                seen.add(os.path.realpath(path))
                out.append(ServedControlNet(d, path, class_name, legacy_hash(path)))
    return out


def lookup(controlnets: dict[str, ServedControlNet], name) -> ServedControlNet:
    """A listed ControlNet by name, title ("name [hash]") or hash, exact first, then in any case."""
    if not isinstance(name, str) or not name.strip():
        raise UserError("Name the ControlNet model: use a name from GET /controlnet/model_list.")
    want = name.strip()
    for fold in (str, str.lower):
        for cn in controlnets.values():
            if fold(want) in (fold(cn.name), fold(cn.title)) or (cn.hash and want == cn.hash):
                return cn
    raise UserError(f"The server has no ControlNet named {name!r}: use a name from GET /controlnet/model_list.")


def misfit(cn: ServedControlNet, spec, model_path: str | None) -> str | None:
    """Why `cn` cannot run with the model (`spec`, its files at `model_path` when served), in words; None
    when it fits. Its residuals must have the shapes of the denoiser they are added to: the model's own
    denoiser config when it is a diffusers folder, else the catalogue's."""
    from ..catalogue.build import load_config
    from ..catalogue.controlnet import CONTROLNET_CLASS, CONTROLNET_FAMILIES, residual_mismatch

    if spec.family not in CONTROLNET_FAMILIES:
        return f"ControlNet is supported for SD1.5, SDXL and Flux, not {spec.name}"
    denoiser = spec.by_role("denoiser")[0]
    if CONTROLNET_CLASS.get(denoiser.class_name) != cn.class_name:
        return f"{cn.name} is a {cn.class_name}, which does not pair with {spec.name}'s {denoiser.class_name}"
    den_cfg = None
    if model_path and os.path.isdir(model_path):
        for sub in DENOISER_SUBFOLDERS:
            path = os.path.join(model_path, sub, "config.json")
            if os.path.isfile(path):
                den_cfg = load_config(os.path.abspath(path))
                break
    if den_cfg is None:
        den_cfg = load_config(denoiser.config)
    why = residual_mismatch(den_cfg, load_config(os.path.abspath(os.path.join(cn.path, "config.json"))), cn.class_name)
    return None if why is None else f"{cn.name} was made for another model than {spec.name} ({why})"
