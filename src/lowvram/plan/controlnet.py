"""The ControlNet a workload asks for, as a component the planner sizes like any other.

Which one: the user's folder (its config.json; its parameter count from the weights' headers) or the
catalogue's published ControlNet for the model. What it costs is simulated: its own forward, and the
step it makes with its denoiser (simulate op "step").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..catalogue import ComponentSpec, ModelSpec
from ..catalogue.controlnet import default_controlnet, encodes_control_image, folder_controlnet, pairs_with
from ..errors import UserError
from .facts import component_facts
from ..contract import Workload

# A folder whose weights hold more or fewer parameters than its config.json describes is two models
# mixed up; 1 % leaves room for extra stored buffers some exporters add.
PARAMS_TOLERANCE = 0.01


@dataclass(frozen=True)
class PlannedControlNet:
    spec: ComponentSpec
    params: int  # tensors its checkpoint stores (the folder's headers; the config's count for a default)
    source: str  # where the figures come from, in words
    vae_encode: bool  # its pipeline VAE-encodes the control image before denoising
    pairs: bool  # its residuals fit the catalogue denoiser, so the step they make together is simulated


def resolve_controlnet(model: ModelSpec, wl: Workload) -> PlannedControlNet | None:
    """None without a ControlNet; UserError when the folder does not fit the model."""
    if not wl.controlnet:
        return None
    if not wl.controlnet_path:
        spec = default_controlnet(model)
        return PlannedControlNet(spec, component_facts(spec).params, f"catalogue default ({spec.title})",
                                 encodes_control_image(spec), True)
    spec = folder_controlnet(model, wl.controlnet_path)
    pairs = pairs_with(model.by_role("denoiser")[0], spec)
    counted = component_facts(spec).params
    stored = _stored_params(wl.controlnet_path)
    if stored is None:
        return PlannedControlNet(spec, counted, f"{wl.controlnet_path} (config.json; no weights there to read)",
                                 encodes_control_image(spec), pairs)
    if abs(stored - counted) > PARAMS_TOLERANCE * counted:
        raise UserError(f"{wl.controlnet_path}: its config.json describes {counted:,} parameters but its weights hold "
                        f"{stored:,}; the folder mixes two ControlNets — download it again.")
    return PlannedControlNet(spec, stored, f"{wl.controlnet_path} (config.json and weights)", encodes_control_image(spec),
                             pairs)


def _stored_params(folder: str) -> int | None:
    """Floating-point elements in the folder's weights files, from their headers (no data read)."""
    from ..checkpoints.inspect import _pick_weight_files, read_tensors

    files = _pick_weight_files(folder) if os.path.isdir(folder) else []  # .bin too: counted from their headers
    if not files:
        return None
    total = 0
    for path in files:
        tensors, _ = read_tensors(path)
        total += sum(t.numel for t in tensors if t.is_float)
    return total

