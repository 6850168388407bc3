"""Load single-file checkpoints (A1111 / Civitai / ComfyUI / Black Forest Labs layouts) into a pipeline.

Weights come from the file(s) `lowvram inspect` recognised; key conversion to diffusers names is
diffusers' own (`diffusers.loaders.single_file_utils`), configs come from `--config DIR` when it has
them, else from the catalogue — never from a hub. Tokenizers and the scheduler come from `--config DIR`
(a diffusers folder of the same model; its weights are not needed).

Each component's tensors are read (positioned reads) into memory at their stored precision for the
conversion, converted, then cast or quantised into the planned precision: the peak is one component at
its stored precision, not the whole checkpoint.
"""

from __future__ import annotations

import json
import os

import torch

from ..catalogue import ModelSpec, build_component
from ..checkpoints.inspect import Inspection, read_tensors
from ..errors import UserError
from ..plan.types import Plan
from ..runtime.loading import TORCH_DTYPES, LazyTensor, load_into
from ..runtime.precision import PrecisionConfig
from .loader import NON_MODULE_KINDS, TOKENIZER_FILES, _key_map, build_module


def _read_prefix(path: str, prefix: str) -> dict[str, torch.Tensor]:
    """All tensors of one file under `prefix` (names keep the prefix), read one by one."""
    tensors, _ = read_tensors(path)
    out = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for info in tensors:
            if info.name.startswith(prefix) and info.dtype in TORCH_DTYPES:
                out[info.name] = LazyTensor(fd, info).read()
    finally:
        os.close(fd)
    return out


def _convert(kind: str, layout: str, sd: dict, prefix: str, module: torch.nn.Module, comp_name: str) -> dict:
    """Original-layout tensors -> diffusers / transformers names, with diffusers' converters."""
    from diffusers.loaders import single_file_utils as sfu

    if layout in ("diffusers", "transformers"):
        return {k[len(prefix):]: v for k, v in sd.items()}
    if kind == "unet":
        return sfu.convert_ldm_unet_checkpoint(_with(sd, prefix, "model.diffusion_model."), module.config)
    if kind.startswith("vae"):
        return sfu.convert_ldm_vae_checkpoint(_with(sd, prefix, "first_stage_model."), module.config)
    if kind == "flux":
        from .flux_keys import bfl_flux_to_diffusers

        return bfl_flux_to_diffusers(sd)
    if kind == "mmdit":
        return sfu.convert_sd3_transformer_checkpoint_to_diffusers(_with(sd, prefix, "model.diffusion_model."))
    if kind.startswith("clip") and layout == "openclip":
        return sfu.convert_open_clip_checkpoint(module, sd, prefix=prefix)
    raise UserError(f"Loading a {kind} in {layout} layout from a single file is not supported yet.")


def _with(sd: dict, prefix: str, wanted: str) -> dict:
    if prefix == wanted:
        return sd
    return {wanted + k[len(prefix):]: v for k, v in sd.items()}


def load_single_file_pipeline(rep: Inspection, spec: ModelSpec, plan: Plan, compute_dtype: torch.dtype, config_dir: str):
    import diffusers
    import transformers

    index_path = os.path.join(config_dir or "", "model_index.json")
    if not config_dir or not os.path.isfile(index_path):
        raise UserError("A single-file checkpoint has no tokenizers: give --config DIR, a diffusers folder of the same "
                        f"model ({spec.hf_repo}; its weights are not needed), or run `lowvram pull {spec.name}`.")
    with open(index_path) as f:
        index = json.load(f)
    precisions = {c.name: c.precision for c in plan.components}
    sources = {c.name: c for c in rep.components}
    missing = [c.name for c in spec.components if c.name not in sources]
    if missing:
        raise UserError(f"{rep.path} lacks {', '.join(missing)}: put the files next to it in one folder "
                        f"(ComfyUI keeps them in text_encoders/ and vae/), then give the folder.")
    parts: dict[str, object] = {}
    modules: dict[str, torch.nn.Module] = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        if library is None or class_name is None:
            parts[name] = None
            continue
        sub = os.path.join(config_dir, name)
        if any(k in class_name for k in NON_MODULE_KINDS):
            if not os.path.isdir(sub):
                files = " and ".join(TOKENIZER_FILES.get(class_name, ("its files",)))
                raise UserError(f"{config_dir} has no {name}/ ({class_name}): put {files} there.")
            lib = transformers if library == "transformers" else diffusers
            parts[name] = getattr(lib, class_name).from_pretrained(sub, local_files_only=True)
            continue
        rc = sources[name]
        file_path, _, prefix = rc.source.partition(":")
        prefix = prefix.rstrip("*")
        full = file_path if os.path.isabs(file_path) else _locate(rep.path, file_path)
        module = build_module(sub, library, class_name) if os.path.isfile(os.path.join(sub, "config.json")) else \
            build_component(spec.component(name), "meta")
        sd = _read_prefix(full, prefix)
        converted = _convert(rc.kind, rc.layout, sd, prefix, module, name)
        del sd
        pc = PrecisionConfig(precisions[name], compute_dtype) if precisions.get(name) in ("fp8", "int8") else None
        expected = set(module.state_dict().keys())
        load_into(module, ((_Info(k), v) for k, v in converted.items()), compute_dtype, pc, key_map=_key_map(expected))
        del converted
        if hasattr(module, "tie_weights"):
            module.tie_weights()
        from .loader import _materialise_buffers

        _materialise_buffers(module, class_name, library, sub) if os.path.isdir(sub) else None
        left = [k for k, t in module.state_dict(keep_vars=True).items() if t.is_meta]
        if left:
            raise UserError(f"{full} does not hold all of {name} ({len(left)} tensors missing, first {left[0]}); "
                            "it may be a different variant of the model.")
        parts[name] = module.requires_grad_(False)
        modules[name] = module
    cls = getattr(diffusers, index["_class_name"])
    if "requires_safety_checker" in cls.__init__.__code__.co_varnames:
        parts.setdefault("requires_safety_checker", False)
    return cls(**parts), modules


class _Info:
    """The name-only view load_into needs of an already-converted tensor."""

    def __init__(self, name: str) -> None:
        self.name = name


def _locate(root: str, base: str) -> str:
    """A component's file by its base name, under the inspected file's folder or the inspected folder."""
    folder = root if os.path.isdir(root) else os.path.dirname(root)
    for dirpath, _, files in os.walk(folder):
        if base in files:
            return os.path.join(dirpath, base)
    raise UserError(f"Cannot find {base} under {folder} any more.")
