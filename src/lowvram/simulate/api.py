"""Simulation requests, results and the on-disk cache — importable without torch.

A warm `lowvram plan` answers from the cache alone and never imports torch (1.2 s of start-up); only a
cache miss loads the fake-tensor runner (simulate/run.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace

from ..cache import cache_path, cached_json, library_versions, lookup_json, shipped_key
from ..catalogue import ComponentSpec, ModelSpec, load_config
from ..catalogue.build import config_identity

# bump when the simulation changes what it counts (2: output_bytes no longer holds the last input;
# 3: CUDA targets count cuDNN's VAE workspace and T5's math attention, as measured on an H100)
SIM_VERSION = 3
# The CUDA caching allocator hands out blocks in multiples of 512 bytes (c10/cuda/CUDACachingAllocator.cpp,
# kMinBlockSize); counting in the same unit makes the prediction comparable to max_memory_allocated.
CUDA_BLOCK_BYTES = 512


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
    req = normalised(comp, req)
    memo_key = _memo_key(model, comp, req, config_overrides)
    if use_cache and memo_key in _MEMO:
        return _MEMO[memo_key]
    result = _simulate_cached(model, comp, req, use_cache, config_overrides)
    if use_cache:
        _MEMO[memo_key] = result
    return result


def normalised(comp: ComponentSpec, req: SimRequest) -> SimRequest:
    """The request whose answer serves `req`: the questions with the same answer asked one way."""
    if comp.role == "text_encoder":  # a text encoder's work does not depend on the image size
        req = replace(req, width=0, height=0, vae_tile=0)
    if req.dtype == "fp16":
        # fp16 and bf16 tensors have the same sizes and the model code runs the same ops, so one
        # simulation serves both (planning for Turing cards then costs nothing extra). The exception is
        # T5's fp16 overflow clamp, one transient tensor of the hidden-state size (4 MiB for T5-XXL).
        req = replace(req, dtype="bf16")
    return req


def _memo_key(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None) -> tuple:
    # the whole spec and its config, not its name: every ControlNet is called "controlnet"
    return (_cache_dir(), model.name, comp, config_identity(comp.config), req,
            json.dumps(config_overrides, sort_keys=True))


def known_result(model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                 config_overrides: dict | None = None) -> SimResult | None:
    """The exact answer if this process, the user cache or the shipped answers already hold it; None
    otherwise. Never simulates (and never imports torch)."""
    req = normalised(comp, req)
    memo_key = _memo_key(model, comp, req, config_overrides)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    value = lookup_json("sim", _key_fields(model, comp, req, config_overrides))
    try:
        result = SimResult(**value) if value is not None else None
    except TypeError:  # an entry of another SimResult version: not known
        return None
    if result is not None:
        _MEMO[memo_key] = result
    return result


def simulated_sizes(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None = None) -> list:
    """The (width, height) this user cache simulated for the same question at other sizes (the index
    `_record_size` keeps: cache entries are named by digests, which cannot be listed by size)."""
    from ..jsonfile import read_json
    from ..errors import UserError

    path = _sizes_path(model, comp, normalised(comp, req), config_overrides)
    try:
        rows = read_json(path, "a lowvram cache index", list) if os.path.exists(path) else []
    except UserError:
        return []
    return [(int(r[0]), int(r[1])) for r in rows if isinstance(r, list) and len(r) == 2
            and all(isinstance(v, int) for v in r)]


def _sizes_path(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None) -> str:
    series = _key_fields(model, comp, replace(req, width=0, height=0), config_overrides)
    return cache_path("sim-sizes", shipped_key({"series": series, "versions": list(library_versions())}) + ".json")


def _record_size(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None) -> None:
    """Add req's size to its series' index. Two processes writing at once may lose one size: that costs an
    estimate one known point, never a wrong answer."""
    if comp.role == "text_encoder":
        return
    sizes = set(simulated_sizes(model, comp, req, config_overrides)) | {(req.width, req.height)}
    path = _sizes_path(model, comp, req, config_overrides)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(sorted(sizes), f)
        os.replace(tmp, path)
    except OSError:
        pass


_MEMO: dict = {}  # this process's answers: planning a grid asks the same question many times


def _simulate_cached(model: ModelSpec, comp: ComponentSpec, req: SimRequest, use_cache: bool,
                     config_overrides: dict | None) -> SimResult:
    def compute() -> dict:
        from .run import simulate_uncached  # torch and the fake-tensor runner load on a cache miss only

        return asdict(simulate_uncached(model, comp, req, config_overrides))

    if not use_cache:
        return SimResult(**compute())

    def compute_and_index() -> dict:
        value = compute()
        _record_size(model, comp, req, config_overrides)
        return value

    value = cached_json("sim", _key_fields(model, comp, req, config_overrides), compute_and_index)
    try:
        return SimResult(**value)
    except TypeError:  # an entry written by another version of SimResult: recompute it (only that)
        return SimResult(**compute())


UNIT_COMPUTE_VERSION = 1


def unit_compute(model: ModelSpec, comp: ComponentSpec, req: SimRequest, config_overrides: dict | None = None,
                 run: bool = True) -> dict | None:
    """The order the component's streamable units run in during one call at `req`, and each run's FLOPs
    (simulate/unit_compute.py), from the cache or by a fake-tensor run: {"order", "flops", "total"}.
    run=False: only what is cached or shipped (None otherwise), never a run."""
    req = normalised(comp, req)
    key = {**_key_fields(model, comp, req, config_overrides), "v": SIM_VERSION, "units": UNIT_COMPUTE_VERSION}
    if not run:
        return lookup_json("unit_compute", key)

    def compute() -> dict:
        from .unit_compute import unit_compute_uncached

        return unit_compute_uncached(model, comp, req, config_overrides)

    return cached_json("unit_compute", key, compute)
