"""Weight storage precision: fp8-e4m3 or int8 weight-only (per-channel scales), computing in bf16/fp16.

Only Linear weights are stored in 8 bits; biases, norms, embeddings and convolutions stay in compute
precision (they are a few percent of the bytes and the most sensitive to rounding). The stored 8-bit
tensor *is* the parameter, so the streaming engine moves 8-bit bytes; a forward pre-hook dequantises
it into a transient compute-precision weight just for that layer, a post-hook puts the 8-bit one back.
Same recipe as diffusers' layerwise casting (hooks/layerwise_casting.py), plus a scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.dtypes import COMPUTE_DTYPES, STORAGE_DTYPES  # noqa: F401  (re-exported for the runtime)

FP8_MAX = 448.0  # largest finite float8_e4m3fn
INT8_MAX = 127.0


def compute_dtype(plan) -> torch.dtype:
    """The dtype a pipeline runs in under `plan`: its denoiser's compute dtype (each component is loaded
    in its own, ComponentPlan.compute_dtype; inputs follow the denoiser's)."""
    den = next((c for c in plan.components if c.role == "denoiser"), None)
    return COMPUTE_DTYPES[den.compute_dtype if den is not None else plan.components[0].compute_dtype]


def run_device(plan) -> torch.device:
    """The device `plan` was made for: a CPU plan runs on the CPU, a GPU plan on CUDA — never one on the
    other, whose bytes and dtypes it did not count (plan/machine.py resolve_run_machine picks the plan)."""
    return torch.device("cpu" if plan.machine.device == "cpu" else "cuda")


@dataclass(frozen=True)
class PrecisionConfig:
    storage: str  # "fp8" or "int8"
    compute_dtype: torch.dtype  # torch.bfloat16 / torch.float16 (float32 in tests)

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_DTYPES:
            raise ValueError(f"unknown storage precision {self.storage!r}")


# Elements quantised per step: ~1 M keeps the fp32 workspace at 4 MB (the loader's peak is the 8-bit model
# plus a few MB) while each torch call still spans enough elements to use every intra-op thread.
ROW_CHUNK_ELEMENTS = 1 << 20


def quantize_rows_into(w: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, storage: str,
                       work: torch.Tensor) -> None:
    """Quantise the 2-D rows `w` (any float dtype) into `q` and `scale` (fp32, one per row), using `work`
    (a flat fp32 buffer of at least w.numel() elements) for the only full-size temporary.

    Same arithmetic as `(w.float() / s).clamp(...)` — the bytes are identical (tests/test_loading_speed.py
    checks it) — but with no allocation per call: each fresh multi-MB temporary is a new mapping whose
    pages fault in, which costs 20x the arithmetic (measured per 1 M elements on this project's 2-core VM:
    `w.float()` 3.4 ms, `work.copy_(w)` 0.14 ms). The widening copy comes first because a division
    mixing bf16 and fp32 takes torch's unvectorised casting loop (8 ms vs 0.15 ms in fp32). |w|'s row
    maximum is max(amax, -amin): exact, with no |w| temporary.

    The reference's clamp to ±limit is left out, one pass of seven fewer: it never changes a value.
    s = fl(amax / limit) is a normal fp32 number (amax >= 1e-12), so |w| / s <= limit / (1 - 2^-24), and
    rounded once more, below limit + 2e-5: int8's round-half-even then gives at most 127, and fp8's
    conversion rounds everything below 464 to 448. An infinite amax makes s infinite (w / s: 0 or NaN),
    a NaN makes the row NaN, and clamping leaves NaN as it is."""
    out = work[: w.numel()].view(w.shape)
    out.copy_(w)
    amax = torch.maximum(out.amax(dim=1), out.amin(dim=1).neg()).clamp_min(1e-12)
    limit = FP8_MAX if storage == "fp8" else INT8_MAX
    s = amax / limit
    out.div_(s.unsqueeze(1))
    if storage != "fp8":
        out.round_()
    q.copy_(out)
    scale.copy_(s)


def quantize_weight(w: torch.Tensor, storage: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric quantisation: returns (8-bit weight, scale per row).

    Works through the rows in chunks so loading a 4096x12288 layer does not allocate fp32 copies of
    it — the loader's peak RAM stays at the 8-bit model plus a few MB."""
    w = w.detach()
    q = torch.empty(w.shape, dtype=STORAGE_DTYPES[storage], device=w.device)
    scale = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)
    rows = max(1, ROW_CHUNK_ELEMENTS // max(1, w.shape[1]))
    work = torch.empty(min(w.numel(), rows * w.shape[1]), dtype=torch.float32, device=w.device)
    for i in range(0, w.shape[0], rows):
        quantize_rows_into(w[i:i + rows], q[i:i + rows], scale[i:i + rows], storage, work)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return q.to(dtype) * scale.to(dtype).unsqueeze(1)


def _pre_hook(module: torch.nn.Linear, args):
    module._lowvram_stored = module.weight.data
    module.weight.data = module._lowvram_dequantize(module)


def _post_hook(module: torch.nn.Linear, args, output):
    module.weight.data = module._lowvram_stored
    del module._lowvram_stored


def dequantize_per_forward(module: torch.nn.Linear, dequantize, compute_dtype: torch.dtype) -> None:
    """Keep `module.weight` as stored (8-bit, GGUF blocks) and give the forward a transient
    `compute_dtype` weight: `dequantize(module)` reads the stored one as `module._lowvram_stored`."""
    module._lowvram_dequantize = dequantize
    module._lowvram_compute_dtype = compute_dtype
    module.register_forward_pre_hook(_pre_hook)
    module.register_forward_hook(_post_hook)


def _dequantize_8bit(module: torch.nn.Linear) -> torch.Tensor:
    return dequantize_weight(module._lowvram_stored, module.weight_scale, module._lowvram_compute_dtype)


def apply_weight_precision(module: torch.nn.Module, config: PrecisionConfig) -> int:
    """Store every Linear weight under `module` in 8 bits (in place); returns how many were converted.

    Call it before streaming is applied, so the streamed host copies are the 8-bit ones.
    """
    n = 0
    for m in module.modules():
        if not isinstance(m, torch.nn.Linear) or hasattr(m, "weight_scale"):
            continue
        w = m.weight.data
        if w.is_meta:  # a module the loader fills: only shapes and dtypes (meta ops run in Python, ~ms each)
            q = torch.empty(w.shape, dtype=STORAGE_DTYPES[config.storage], device="meta")
            scale = torch.empty(w.shape[0], dtype=torch.float32, device="meta")
        else:
            q, scale = quantize_weight(w, config.storage)
        m.weight = torch.nn.Parameter(q, requires_grad=False)
        m.register_buffer("weight_scale", scale.to(config.compute_dtype))
        dequantize_per_forward(m, _dequantize_8bit, config.compute_dtype)
        n += 1
    return n
