"""ControlNet over HTTP as A1111's ControlNet extension (Mikubill/sd-webui-controlnet) offers it, so its
clients work unchanged: units in `alwayson_scripts: {"controlnet": {"args": [unit, ...]}}` of txt2img,
and its discovery routes `/controlnet/model_list`, `/module_list`, `/version`, `/settings`; plus
lowvram's own listing with the models each ControlNet fits (`/lowvram/v1/controlnets`, for the page).

lowvram runs what its runtime does: one unit, on txt2img, with a control image already processed (module
"none": no preprocessor runs here). Everything else in a unit is refused with one sentence, except the
preprocessor-only settings (processor_res, thresholds, pixel_perfect) and low_vram, which mean nothing
without a preprocessor or beside a plan, and are ignored as A1111 ignores fields it does not know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Request

from ..errors import UserError
from ..generate.infotext import CONTROL_RESIZE_MODES

router = APIRouter()

SCRIPT_NAME = "controlnet"  # A1111 matches alwayson_scripts keys without case (webuiapi sends "ControlNet")
API_VERSION = 2  # what the extension's /controlnet/version answers (its external_code.get_api_version)
MODULE_NONE = "none"  # the extension's name for "no preprocessor": the image is the control image as is
MAX_UNITS = 1  # units per request this server runs (the extension's control_net_unit_count setting)
WEIGHT_MAX = 2.0  # the extension's Control Weight slider runs from 0 to 2
# The extension's older names of its resize modes (external_code.resize_mode_aliases).
RESIZE_ALIASES = {"Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill",
                  "Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill"}
LATENT_RESIZE = 3  # "Just Resize (Latent upscale)": the extension treats it as "Just Resize"
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")  # its ControlMode
# Unit keys the extension renames on the way in (external_code.to_processing_unit's ext_compat_keys).
COMPAT_KEYS = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram"}
NO_MODEL = ("", "none")  # an unset model field (webuiapi's default is "None")


@dataclass(frozen=True)
class ControlUse:
    """The one ControlNet unit of a request, checked: what the Session's request takes."""

    path: str  # the ControlNet folder
    title: str  # its listed title, for the image's infotext
    image: object  # PIL image
    weight: float
    resize_mode: int  # 0 stretch, 1 crop and resize, 2 resize and pad
    start: float
    end: float


def control_unit(scripts, reg, served, kind: str) -> ControlUse | None:
    """The ControlNet unit in a body's `alwayson_scripts`, checked against the server's ControlNets and
    the model (`served`); None when the body asks for none (no entry, no enabled unit, empty units)."""
    entry = next((v for k, v in (scripts or {}).items() if isinstance(k, str) and k.lower() == SCRIPT_NAME), None)
    if entry is None:
        return None
    args = entry.get("args") if isinstance(entry, dict) else None
    if not isinstance(args, list) or not all(u is None or isinstance(u, dict) for u in args):
        raise UserError('alwayson_scripts.controlnet must be {"args": [unit, ...]} with each unit an object, as '
                        "A1111's ControlNet extension takes them.")
    units = [{COMPAT_KEYS.get(k, k): v for k, v in u.items()} for u in args if u is not None]
    enabled = [u for u in units if u.get("enabled", True) is not False and not _empty(u)]
    if not enabled:
        return None
    if len(enabled) > MAX_UNITS:
        raise UserError(f"{len(enabled)} ControlNet units are enabled but this server runs {MAX_UNITS} per request: "
                        "send one, or disable the others with enabled: false.")
    if kind != "txt2img":
        raise UserError("ControlNet runs with txt2img only here, not with img2img or inpaint: send it to "
                        "/sdapi/v1/txt2img, or img2img without it.")
    return _checked(enabled[0], reg, served)


def _empty(unit: dict) -> bool:
    """A unit left at its defaults (no image, no model): A1111's UI sends such slots for unused units."""
    model = unit.get("model")
    return not unit.get("image") and (model is None or (isinstance(model, str) and model.strip().lower() in NO_MODEL))


def _checked(unit: dict, reg, served) -> ControlUse:
    from .images import decode_image

    module = unit.get("module")
    if module is not None and (not isinstance(module, str) or module.strip().lower() != MODULE_NONE):
        raise UserError(f"The ControlNet preprocessor {module!r} does not run here: send the processed control image "
                        f'(edges, depth, pose...) with module "{MODULE_NONE}".')
    model = unit.get("model")
    if model is None or (isinstance(model, str) and model.strip().lower() in NO_MODEL):
        raise UserError("The ControlNet unit names no model: use a name from GET /controlnet/model_list.")
    cn = reg.controlnet(model)
    problem = reg.controlnet_misfit(cn, served)
    if problem:
        raise UserError(f"{problem}: pick a ControlNet listed for {served.name} in GET /lowvram/v1/controlnets.")
    image = unit.get("image")
    if isinstance(image, dict):  # the extension's {"image": ..., "mask": ...} form
        image, mask = image.get("image"), image.get("mask")
    else:
        mask = unit.get("mask")
    if mask:
        raise UserError("ControlNet masks are not supported here: send the unit without a mask.")
    if not image:
        raise UserError("The ControlNet unit has no image: send its control image base64-encoded in \"image\".")
    weight = _number(unit.get("weight", 1.0), "weight", 0.0, WEIGHT_MAX)
    start = _number(unit.get("guidance_start", 0.0), "guidance_start", 0.0, 1.0)
    end = _number(unit.get("guidance_end", 1.0), "guidance_end", 0.0, 1.0)
    if start >= end:
        raise UserError(f"The ControlNet unit's guidance_start {start:g} is not below its guidance_end {end:g}: the "
                        "ControlNet acts between the two fractions of the steps.")
    _control_mode(unit.get("control_mode", 0))
    resize = _resize_mode(unit.get("resize_mode", 1))
    return ControlUse(cn.path, cn.title, decode_image(image, "ControlNet image").convert("RGB"), weight, resize, start,
                      end)


def _number(value, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise UserError(f"The ControlNet unit's {field} {value!r} is not a number from {low:g} to {high:g}.")
    return float(value)


def _resize_mode(value) -> int:
    """The extension's resize mode (a name, an old alias or 0-3) as A1111's resize_mode number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= LATENT_RESIZE:
        return 0 if value == LATENT_RESIZE else value
    if isinstance(value, str):
        name = RESIZE_ALIASES.get(value, value)
        if name in CONTROL_RESIZE_MODES:
            return CONTROL_RESIZE_MODES.index(name)
    raise UserError(f"The ControlNet resize_mode {value!r} is not one of {', '.join(CONTROL_RESIZE_MODES)} (or 0-2).")


def _control_mode(value) -> None:
    """Only "Balanced" (0): the other modes reweight the ControlNet's residuals per block, which the
    diffusers pipelines lowvram runs do not do."""
    if value in (0, CONTROL_MODES[0]) and not isinstance(value, bool):
        return
    raise UserError(f"The ControlNet control_mode {value!r} is not supported here: send \"{CONTROL_MODES[0]}\".")


def planned_controlnet(st, model: str, spec, name: str) -> str:
    """The folder of the ControlNet a plan request names ("" for none), once it is known to fit the model
    (`model`: a listed name, or a catalogue name planned before it is installed; `spec`: its ModelSpec)."""
    from .models import UnknownName

    if not name.strip():
        return ""
    reg = st.registry
    cn = reg.controlnet(name)
    try:
        served = reg.get(model)
    except UnknownName:
        served = None
    problem = reg.controlnet_misfit(cn, served, spec)
    if problem:
        raise UserError(f"{problem}: pick a ControlNet listed for this model in GET /lowvram/v1/controlnets.")
    return cn.path


# -- the extension's discovery routes ------------------------------------------------------------------
def _registry(request: Request):
    return request.app.state.lowvram.registry


@router.get("/controlnet/version")
def version():
    return {"version": API_VERSION}


@router.get("/controlnet/model_list")
def model_list(request: Request, update: bool = True):
    """The ControlNets by their titles ("name [hash]"), as the extension lists them (`update` is accepted
    and changes nothing: the list is read at start, as the server's models are)."""
    return {"model_list": [cn.title for cn in _registry(request).controlnets.values()]}


@router.get("/controlnet/module_list")
def module_list(alias_names: bool = False):
    return {"module_list": [MODULE_NONE], "module_detail": {MODULE_NONE: {"model_free": False, "sliders": []}}}


@router.get("/controlnet/settings")
def settings():
    return {"control_net_unit_count": MAX_UNITS}


@router.get("/lowvram/v1/controlnets")
def controlnets(request: Request):
    """Each listed ControlNet with the server's models it fits (the page offers only those)."""
    reg = _registry(request)
    return [{"name": cn.name, "title": cn.title, "class_name": cn.class_name,
             "models": [m.name for m in reg.models.values() if reg.controlnet_misfit(cn, m) is None]}
            for cn in reg.controlnets.values()]
