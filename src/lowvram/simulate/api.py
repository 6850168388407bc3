"""Simulation requests, results and the on-disk cache — importable without torch.

A warm `lowvram plan` answers from the cache alone and never imports torch (1.2 s of start-up); only a
cache miss loads the fake-tensor runner (simulate/run.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from ..cache import cache_path, cached_json
from ..catalogue import ComponentSpec, ModelSpec, load_config
from ..catalogue.build import config_identity

# bump when the simulation changes what it counts (2: output_bytes no longer holds the last input;
# 3: CUDA targets count cuDNN's VAE workspace and T5's math attention, as measured on an H100)
SIM_VERSION = 3


@dataclass(frozen=True)
class SimRequest:
    """One call of one component at one workload."""

    # forward (denoiser / text encoder / ControlNet), decode / encode (VAE), or step (a ControlNet's call
    # then its denoiser's with the ControlNet's residuals: the peak of a ControlNet pipeline's step)
    op: str = "forward"
    batch: int = 1  # the batch the component sees (CFG in one batch doubles the denoiser's)
    width: int = 1024  # final image size in pixels
    height: int = 1024
    dtype: str = "bf16"  # compute dtype
    attention: str = "sdpa"  # sdpa / math / chunked
    chunk: int = 0  # queries per chunk for "chunked"
    vae_tile: int = 0  # VAE tiled decode/encode: tile side in pixels (0 = whole image)
    target: str = "cuda"  # device the prediction is for: cuda rounds allocations like its allocator


@dataclass(frozen=True)
class SimResult:
    weights_bytes: int  # parameters + buffers at the compute dtype
    activation_peak_bytes: int  # peak of inputs + intermediates + outputs during the call
    output_bytes: int  # what stays alive after the call (the result)
    input_bytes: int
    flops: int
    params: int
    seconds: float  # how long the simulation took (for the plan-speed benchmark)


def _cache_dir() -> str:
    return cache_path("sim", "")


def _key_fields(model: ModelSpec, comp: ComponentSpec, req: SimRequest, overrides: dict | None) -> dict:
    """Everything a simulation result depends on (the cache key)."""
    key = {"v": SIM_VERSION, "class": comp.class_name, "config": load_config(comp.config),
           "overrides": overrides, "pixel_divisor": comp.pixel_divisor, "max_tokens": comp.max_tokens,
           "text": model.text_lengths, "req": asdict(req)}
    if req.op == "step":  # the denoiser runs too
        den = model.by_role("denoiser")[0]
        key["denoiser"] = {"class": den.class_name, "config": load_config(den.config), "pixel_divisor": den.pixel_divisor}
    return key


def simulate_component(model: ModelSpec, comp: ComponentSpec, req: SimRequest, use_cache: bool = True,
                       config_overrides: dict | None = None) -> SimResult:
    """Peak memory and FLOPs of one call, from the cache or by a fake-tensor run."""
    if comp.role == "text_encoder":  # a text encoder's work does not depend on the image size
        req = replace(req, width=0, height=0, vae_tile=0)
    if req.dtype == "fp16":
        # fp16 and bf16 tensors have the same sizes and the model code runs the same ops, so one
        # simulation serves both (planning for Turing cards then costs nothing extra). The exception is
        # T5's fp16 overflow clamp, one transient tensor of the hidden-state size (4 MiB for T5-XXL).
        req = replace(req, dtype="bf16")
    # the whole spec and its config, not its name: every ControlNet is called "controlnet"
    memo_key = (_cache_dir(), model.name, comp, config_identity(comp.config), req,
                json.dumps(config_overrides, sort_keys=True))
    if use_cache and memo_key in _MEMO:
        return _MEMO[memo_key]
    result = _simulate_cached(model, comp, req, use_cache, config_overrides)
    if use_cache:
        _MEMO[memo_key] = result
    return result


_MEMO: dict = {}  # this process's answers: planning a grid asks the same question many times


def _simulate_cached(model: ModelSpec, comp: ComponentSpec, req: SimRequest, use_cache: bool,
                     config_overrides: dict | None) -> SimResult:
    def compute() -> dict:
        from .run import simulate_uncached  # torch and the fake-tensor runner load on a cache miss only

        return asdict(simulate_uncached(model, comp, req, config_overrides))

    if not use_cache:
        return SimResult(**compute())
    value = cached_json("sim", _key_fields(model, comp, req, config_overrides), compute)
    try:
        return SimResult(**value)
    except TypeError:  # an entry written by another version of SimResult: recompute it (only that)
        return SimResult(**compute())
