"""Turn a ComponentSpec into a module: from the config shipped in the package, on any device.

Real-size components are built on the meta device (no memory, well under a second), which is how
the simulator and the planner see a 12 B-parameter transformer on a laptop.
"""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from .spec import ComponentSpec

if TYPE_CHECKING:  # torch is imported only when a module is built: cached planning never needs it
    import torch

_BOOKKEEPING_KEYS = ("_class_name", "_diffusers_version", "_name_or_path", "transformers_version", "torch_dtype",
                     "dtype", "architectures")


# diffusers' lazy top-level module raises AttributeError ("no attribute 'UNet2DConditionModel'") when two
# threads first touch it at once (the server plans in request threads): class lookups are taken one at a time.
_DIFFUSERS_LOOKUP = threading.Lock()


def diffusers_class(name: str) -> type:
    """The diffusers class `name`, safe to call from several threads at once."""
    with _DIFFUSERS_LOOKUP:
        import diffusers

        return getattr(diffusers, name)


@lru_cache(maxsize=None)
def _read_config(name: str) -> str:
    return resources.files("lowvram.catalogue").joinpath("configs", f"{name}.json").read_text()


def load_config(name: str) -> dict[str, Any]:
    """The shipped config (a fresh copy, so callers may scale it down for tests), or the config.json at
    an absolute path (a user's ControlNet folder), read afresh each time: the user may edit it."""
    if os.path.isabs(name):
        from ..jsonfile import read_json

        return read_json(name, "a diffusers config.json", fix="point at a diffusers model folder")
    return json.loads(_read_config(name))  # parsed afresh: a new object every call


def config_identity(name: str) -> str:
    """What in-process memos key a config by: a shipped config's name (it never changes), or the text
    of a config.json at a path (the user may edit it between two plans)."""
    if os.path.isabs(name):
        from ..jsonfile import MAX_JSON_BYTES
        from ..regular_file import open_regular

        with open_regular(name, "config.json") as f:
            return f.read(MAX_JSON_BYTES + 1).decode("utf-8", "replace")
    return name


def build_component(spec: ComponentSpec, device: "str | torch.device" = "meta", dtype: "torch.dtype | None" = None,
                    config_overrides: dict[str, Any] | None = None) -> "torch.nn.Module":
    """Instantiate the component's class from its config on `device` (meta by default), in eval mode."""
    import torch

    cfg = load_config(spec.config)
    if config_overrides:
        _deep_update(cfg, config_overrides)
    with torch.device(device):
        module = _instantiate(spec, cfg)
    if dtype is not None:
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


def _instantiate(spec: ComponentSpec, cfg: dict[str, Any]) -> "torch.nn.Module":
    cfg = {k: v for k, v in cfg.items() if k not in _BOOKKEEPING_KEYS}
    if spec.library == "diffusers":
        return diffusers_class(spec.class_name).from_config(cfg)
    import transformers

    cls = getattr(transformers, spec.class_name)
    model_type = cfg.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    # attn_implementation="sdpa": the kernel lowvram plans for; transformers would pick it anyway on
    # torch >= 2.1, but stating it keeps the simulated and the real forward the same code path.
    return cls._from_config(config, attn_implementation="sdpa")


def component_params(module: "torch.nn.Module") -> int:
    """Elements of the tensors a checkpoint of this module stores, tied weights counted once.

    That is the parameters plus persistent floating-point buffers: SD3's fixed `pos_embed` is stored in
    every SD3 checkpoint and is part of the published "8.1 B" of SD3.5 Large. Integer buffers such as
    CLIP's `position_ids` are bookkeeping, not weights.
    """
    seen: set[int] = set()
    total = 0
    for t in module.state_dict(keep_vars=True).values():
        if id(t) in seen or not t.dtype.is_floating_point:
            continue
        seen.add(id(t))
        total += t.numel()
    return total


def spec_params(spec: ComponentSpec) -> int:
    """`component_params` of a catalogue component, cached on disk by config (building a 20 B-parameter
    model on the meta device takes about a second; listing the catalogue should not)."""
    from ..cache import cached_json

    key = [spec.library, spec.class_name, load_config(spec.config)]
    return int(cached_json("params", key, lambda: component_params(build_component(spec))))


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v
