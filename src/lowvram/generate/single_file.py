"""Load single-file checkpoints (A1111 / Civitai / ComfyUI / Black Forest Labs layouts) into a pipeline.

Weights come from the file(s) `lowvram inspect` recognised; key conversion to diffusers names is
diffusers' own (`diffusers.loaders.single_file_utils`), configs come from `--config DIR` when it has
them, else from the catalogue — never from a hub. Tokenizers and the scheduler come from `--config DIR`
(a diffusers folder of the same model; its weights are not needed, but a component the file lacks is
loaded from them when they are there — how a pulled GGUF denoiser gets its text encoders and VAE).

Each component's tensors are read (positioned reads) into memory at their stored precision for the
conversion, converted, then cast or quantised into the planned precision: the peak is one component at
its stored precision, not the whole checkpoint.
"""

from __future__ import annotations

import os

import torch

from ..catalogue import ModelSpec, build_component
from ..checkpoints.inspect import Inspection, load_pickle_state_dict, read_tensors, safetensors_files
from ..errors import UserError
from ..contract import Plan
from ..runtime.loading import TORCH_DTYPES, LazyTensor, load_into
from ..runtime.precision import PrecisionConfig
from .loader import _key_map, assemble_pipeline, build_module, component_dtype, finish_module, load_module


def _read_prefix(path: str, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of one file under `prefix` (names keep the prefix), read one by one, and the GGUF
    quantisation type of those that are quantised (kept as raw blocks: rows x bytes per row)."""
    from ..runtime.loading import _pread

    if path.lower().endswith((".ckpt", ".pt", ".pth", ".bin")):
        return {k: v for k, v in load_pickle_state_dict(path, "cpu").items() if k.startswith(prefix)}, {}
    tensors, _ = read_tensors(path)
    out, qtypes = {}, {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for info in tensors:
            if not info.name.startswith(prefix):
                continue
            if info.dtype in TORCH_DTYPES:  # safetensors dtypes, and GGUF's F32 / F16 / BF16 (same names)
                out[info.name] = LazyTensor(fd, info).read()
            else:  # quantised GGUF blocks stay quantised
                rows = info.shape[0] if len(info.shape) > 1 else 1
                raw = torch.frombuffer(_pread(fd, info.nbytes, info.offset, info.name), dtype=torch.uint8)
                out[info.name] = raw.reshape(rows, -1)
                qtypes[info.name] = info.dtype
    finally:
        os.close(fd)
    return out, qtypes


def _converted_qtypes(kind, layout, sd, prefix, module, name, qtypes: dict[str, str]) -> dict[str, str]:
    """Which converted tensor came from which quantised source: convert a probe whose rows carry the
    source's index (the converters split, chunk and concatenate along rows only)."""
    if not qtypes:
        return {}
    names = list(sd)
    probe = {k: torch.full((sd[k].shape[0],) + (1,) * (sd[k].dim() - 1), float(i), dtype=torch.float64)
             for i, k in enumerate(names)}
    conv = _convert(kind, layout, probe, prefix, module, name)
    return {k: qtypes[names[int(v.reshape(-1)[0])]] for k, v in conv.items() if names[int(v.reshape(-1)[0])] in qtypes}


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


def load_single_file_pipeline(rep: Inspection, spec: ModelSpec, plan: Plan, compute_dtype: torch.dtype, config_dir: str,
                              timings: dict[str, float] | None = None):
    if not config_dir or not os.path.isfile(os.path.join(config_dir, "model_index.json")):
        raise UserError("A single-file checkpoint has no tokenizers: give --config DIR, a diffusers folder of the same "
                        f"model ({spec.hf_repo}; its weights are not needed), or run `lowvram pull {spec.name}`.")
    planned = {c.name: c for c in plan.components}
    sources = {c.name: c for c in rep.components}
    # what the file(s) lack comes from --config's own weights when it has them (a pulled GGUF's components)
    from_config = [c.name for c in spec.components if c.name not in sources and _has_weights(os.path.join(config_dir, c.name))]
    missing = [c.name for c in spec.components if c.name not in sources and c.name not in from_config]
    if missing:
        raise UserError(f"{rep.path} lacks {', '.join(missing)}: put the files next to it in one folder "
                        f"(ComfyUI keeps them in text_encoders/ and vae/), then give the folder, "
                        f"or give --config a diffusers folder that holds their weights.")

    def load_model(name, sub, library, class_name):
        if name in from_config:
            return load_module(sub, library, class_name, compute_dtype, planned.get(name))
        rc = sources[name]
        cp = planned.get(name)
        dtype = component_dtype(cp, compute_dtype)
        file_name, _, prefix = rc.source.partition(":")
        prefix = prefix.rstrip("*")
        path = rep.files[file_name]
        module = build_module(sub, library, class_name) if os.path.isfile(os.path.join(sub, "config.json")) else \
            build_component(spec.component(name), "meta")
        sd, qtypes = _read_prefix(path, prefix)
        q_out = _converted_qtypes(rc.kind, rc.layout, sd, prefix, module, name, qtypes)
        converted = _convert(rc.kind, rc.layout, sd, prefix, module, name)
        del sd
        if q_out:
            _place_gguf(module, converted, q_out, dtype)
        pc = PrecisionConfig(cp.precision, dtype) if cp is not None and cp.precision in ("fp8", "int8") and not q_out else None
        expected = set(module.state_dict().keys())
        load_into(module, _drain(converted), dtype, pc, key_map=_key_map(expected))
        return finish_module(module, f"{path} ({name})")

    return assemble_pipeline(config_dir, load_model, timings=timings)


def _drain(tensors: dict):
    """(name, tensor) pairs, each removed from `tensors` as it is handed out: the stored-precision copy
    of a tensor is freed as soon as its planned-precision one is made, so converting a component peaks at
    the component once, not stored + converted."""
    while tensors:
        yield tensors.popitem()


def _has_weights(folder: str) -> bool:
    """A diffusers component folder with safetensors weights (not configs only)."""
    return bool(safetensors_files(folder))


def _place_gguf(module: torch.nn.Module, converted: dict, q_out: dict[str, str], compute_dtype: torch.dtype) -> None:
    """Quantised Linear weights become GGUF weights (dequantised per layer at compute time); they are
    removed from `converted` so the generic loader only sees plain tensors."""
    import gguf

    from ..runtime.gguf_weights import set_gguf_weight

    for k, qname in q_out.items():
        mod_path, _, leaf = k.rpartition(".")
        mod = module.get_submodule(mod_path)
        if leaf != "weight" or not isinstance(mod, torch.nn.Linear):
            raise UserError(f"GGUF tensor {k} is quantised but is not a Linear weight; lowvram cannot load it yet.")
        raw = converted.pop(k).contiguous().reshape(-1)
        set_gguf_weight(mod, raw, gguf.GGMLQuantizationType[qname], compute_dtype)
