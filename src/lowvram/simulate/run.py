"""Run one component call (denoiser step, text encoding, VAE decode/encode, ControlNet) under the tracker.

The real diffusers/transformers forward runs under torch's FakeTensorMode (shapes and dtypes, no
data), the MemoryTracker (live/peak bytes) and FlopCounterMode (FLOPs). Weights are accounted for
separately from activations, so the planner can place them wherever it likes. api.py caches results.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict

import torch
from torch.utils._pytree import tree_flatten

from ..catalogue import ComponentSpec, ModelSpec, build_component, component_params
from ..kernels.attention import attention_context
from ..kernels.vae_tiling import set_tile
from ..kernels.dtypes import COMPUTE_DTYPES
from .api import SimRequest, SimResult
from .inputs import controlnet_inputs, controlnet_step_inputs, denoiser_inputs, text_encoder_inputs, vae_inputs
from .static_shapes import static_shapes
from .tracker import CUDA_BLOCK_BYTES, MemoryTracker

DTYPES = COMPUTE_DTYPES


def simulate_uncached(model: ModelSpec, comp: ComponentSpec, req: SimRequest, overrides: dict | None = None) -> SimResult:
    from torch._subclasses.fake_tensor import FakeTensorMode

    t0 = time.perf_counter()
    if comp.role == "vae" and req.op == "decode" and req.vae_tile and comp.class_name == "AutoencoderKL":
        res = tiled_decode_from_tiles(model, comp, req, overrides)
        return SimResult(**{**asdict(res), "seconds": time.perf_counter() - t0})
    dtype = DTYPES[req.dtype]
    meta = _meta_module(model, comp, req, overrides)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_mode:
        module = fake_module(meta, dtype)
    res = run_tracked(module, model, comp, req, fake_mode=fake_mode)
    return SimResult(**{**asdict(res), "seconds": time.perf_counter() - t0})


def _meta_module(model: ModelSpec, comp: ComponentSpec, req: SimRequest, overrides: dict | None) -> torch.nn.Module:
    """What one call runs: the component, or for a ControlNet step the ControlNet and the model's denoiser
    together (then `overrides` holds one dict per side: {"controlnet": {...}, "denoiser": {...}})."""
    if comp.role == "controlnet" and req.op == "step":
        o = overrides or {}
        den = model.by_role("denoiser")[0]
        return torch.nn.ModuleDict({"controlnet": build_component(comp, "meta", config_overrides=o.get("controlnet")),
                                    "denoiser": build_component(den, "meta", config_overrides=o.get("denoiser"))})
    return build_component(comp, "meta", config_overrides=overrides)


def tiled_decode_from_tiles(model: ModelSpec, comp: ComponentSpec, req: SimRequest, overrides: dict | None) -> SimResult:
    """diffusers' tiled VAE decode, composed from exact simulations of its distinct tile shapes (each
    simulated once and cached, exactly like any other decode; simulate/tiled.py)."""
    from .api import simulate_component
    from .tiled import compose_tiled_decode

    return compose_tiled_decode(model, comp, req, overrides, simulate_component)


def fake_module(meta_module: torch.nn.Module, dtype: torch.dtype, device: str = "cpu") -> torch.nn.Module:
    """Replace a meta module's parameters/buffers with tensors of the active (fake) mode, in place.

    `Module.to_empty` cannot swap meta parameters for fake ones, so we set them directly. Floating
    buffers follow the compute dtype as `module.to(dtype)` would; integer buffers keep theirs.
    """
    replaced: dict[int, torch.nn.Parameter] = {}  # tied weights (T5's shared embedding) stay tied
    for mod in meta_module.modules():
        for k, p in list(mod._parameters.items()):
            if p is not None:
                if id(p) not in replaced:
                    dt = dtype if p.dtype.is_floating_point else p.dtype
                    replaced[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=dt, device=device), requires_grad=False)
                mod._parameters[k] = replaced[id(p)]
        for k, b in list(mod._buffers.items()):
            if b is not None:
                dt = dtype if b.dtype.is_floating_point else b.dtype
                mod._buffers[k] = torch.empty(b.shape, dtype=dt, device=device)
    return meta_module


def weights_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        s = t.untyped_storage()
        if id(s) not in seen:
            seen.add(id(s))
            total += s.nbytes()
    return total


def build_inputs(module, model: ModelSpec, comp: ComponentSpec, req: SimRequest, device="cpu"):
    dtype = DTYPES[req.dtype]
    if comp.role == "denoiser":
        return denoiser_inputs(module, model, comp, req.batch, req.width, req.height, dtype, device)
    if comp.role == "controlnet" and req.op == "step":
        return controlnet_step_inputs(module, model, comp, req.batch, req.width, req.height, dtype, device)
    if comp.role == "controlnet":
        return controlnet_inputs(module, model, comp, req.batch, req.width, req.height, dtype, device)
    if comp.role == "text_encoder":
        return text_encoder_inputs(module, comp, req.batch, device)
    return vae_inputs(module, comp, req.op, req.batch, req.width, req.height, dtype, device)


# cuDNN picks convolution algorithms with scratch workspaces, allocated through torch's allocator for the
# call's duration: memory no tensor of the model holds, so fake tensors cannot see it. Measured on an
# H100 (bench/sim_vs_cuda.py, docs/benchmarks.md): the SDXL and Flux VAE decoders at 1024² peak at 1.58x
# the tensors' peak, full or in 512-px tiles (6.0 GiB, 3.9x, with cuDNN off: its workspace is the cheap
# way). UNets and transformers measured within 4 % without it (their convolutions are few and small).
CUDNN_CONV_WORKSPACE_FACTOR = 1.6


def run_tracked(module: torch.nn.Module, model: ModelSpec, comp: ComponentSpec, req: SimRequest,
                fake_mode=None, device: str = "cpu") -> SimResult:
    """Run one call of `module` (real or fake tensors) under the tracker and the FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    tracker = MemoryTracker(round_to=CUDA_BLOCK_BYTES if req.target == "cuda" else 1)
    tracker.ignore(module)
    ctx = fake_mode if fake_mode is not None else contextlib.nullcontext()
    with ctx:
        fn, kwargs = build_inputs(module, model, comp, req, device)
        flat = [v for v in tree_flatten(kwargs)[0] if isinstance(v, torch.Tensor)]
        # no loop variable: one left alive would hold the last input and count it in the output
        list(map(tracker.track, flat))
        input_bytes = tracker.live
        tracker.reset_peak()
        if comp.role == "vae":
            set_tile(module, req.vae_tile)
        counter = FlopCounterMode(display=False)
        # no_grad, not inference_mode: it is what diffusers pipelines run under, and it lets composite
        # ops (SDPA, linear) decompose before the tracker so their intermediates are counted.
        with torch.no_grad(), static_shapes(module), counter, tracker, \
                attention_context(req.attention, req.chunk or None, predict_cuda=req.target == "cuda"):
            out = fn(**kwargs)
        del kwargs, flat, fn
        output_bytes = tracker.live
        peak = tracker.peak
        if req.target == "cuda" and comp.role == "vae":
            peak = int(peak * CUDNN_CONV_WORKSPACE_FACTOR)
        del out
    return SimResult(weights_bytes=weights_bytes(module), activation_peak_bytes=peak, output_bytes=output_bytes,
                     input_bytes=input_bytes, flops=int(counter.get_total_flops()),
                     params=component_params(module), seconds=0.0)
