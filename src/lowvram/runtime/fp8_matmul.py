"""fp8 matmuls: Linear layers with fp8 weights multiply on fp8 tensor cores (`torch._scaled_mm`).

The default path for fp8 weights (runtime/precision.py) dequantises each weight to bf16 before its
matmul: it saves memory and copies, not compute. On cards with fp8 tensor cores (sm_89+) the matmul
itself can run in fp8 at twice the bf16 rate: the activation is quantised to fp8 on the fly and
`torch._scaled_mm` multiplies the two fp8 operands, rescaling in its epilogue. Weights stay exactly as
precision.py stores them (fp8-e4m3, one scale per output channel), so the streamed bytes are unchanged.

Two modes, as the card's kernels allow (the plan picks one, plan/fp8_matmul.py):
- "fp8_rowwise" (Hopper, sm_90): activation scaled per row, weight per output channel — both scales
  and the bias inside the kernel;
- "fp8_tensorwise" (Ada, sm_89, whose cuBLASLt kernels take one scale per operand): activation scaled
  per tensor, the kernel run with a unit weight scale, the per-channel weight scale and the bias applied
  to its output (one elementwise pass; re-quantising the weights per tensor would lose their
  per-channel precision).
_scaled_mm needs the inner and output dimensions in multiples of 16; a layer that has other sizes is
padded with zeros per call (in diffusion models that is only a few small embedding layers).
Hand-written because no library in the environment wraps _scaled_mm around an existing per-channel
fp8 weight without re-quantising it (torchao's float8 training/inference layers own their weights).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch

from . import precision

FP8 = torch.float8_e4m3fn
FP8_MAX = precision.FP8_MAX  # largest finite float8_e4m3fn, 448
MODES = ("fp8_rowwise", "fp8_tensorwise")
# _scaled_mm's alignment: both dimensions of the second operand (K and N) multiples of 16 (cuBLASLt's fp8
# requirement, checked in torch's _scaled_mm_out_cuda).
SCALED_MM_ALIGN = 16
# A floor for activation scales: an all-zero row would otherwise divide by zero.
MIN_SCALE = 1e-12


@dataclass(frozen=True)
class Fp8MatmulConfig:
    mode: str  # one of MODES
    compute_dtype: torch.dtype  # the output dtype (bf16 / fp16; fp32 in CPU tests)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fp8 matmul mode {self.mode!r}: one of {MODES}")


def quantize_activation(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 x, fp32 scale): per row ([M, 1]) for rowwise, one scalar for tensorwise; x ≈ q * scale."""
    x32 = x.float()
    if mode == "fp8_rowwise":
        amax = x32.abs().amax(dim=1, keepdim=True)
    else:
        amax = x32.abs().amax()
    scale = (amax / FP8_MAX).clamp_min(MIN_SCALE)
    return (x32 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _pad_to(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if t.shape == (rows, cols):
        return t
    # F.pad does not take float8 tensors: copy into zeros
    out = torch.zeros((rows, cols), dtype=t.dtype, device=t.device)
    out[:t.shape[0], :t.shape[1]] = t
    return out


def _aligned(n: int) -> int:
    return -(-n // SCALED_MM_ALIGN) * SCALED_MM_ALIGN


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
               mode: str, out_dtype: torch.dtype) -> torch.Tensor:
    """y = x @ (weight * weight_scale[:, None]).T + bias with x quantised to fp8 and an fp8 matmul.

    weight: [N, K] float8_e4m3fn; weight_scale: [N], one per output channel."""
    n, k = weight.shape
    lead = x.shape[:-1]
    xq, sx = quantize_activation(x.reshape(-1, k), mode)
    kp, np_ = _aligned(k), _aligned(n)
    xq = _pad_to(xq, xq.shape[0], kp)
    wq = _pad_to(weight, np_, kp)
    sw = weight_scale.float()
    if mode == "fp8_rowwise":
        sw = torch.cat([sw, sw.new_ones(np_ - n)]) if np_ != n else sw
        b = None if bias is None else torch.cat([bias, bias.new_zeros(np_ - n)]).to(out_dtype)
        y = torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw.view(1, np_), bias=b, out_dtype=out_dtype)[:, :n]
    else:
        one = torch.ones((), dtype=torch.float32, device=x.device)
        y = torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=one, out_dtype=out_dtype)[:, :n]
        y = y * sw.to(out_dtype)
        if bias is not None:
            y = y + bias.to(out_dtype)
    return y.reshape(*lead, n)


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return fp8_linear(x, self.weight, self.weight_scale, self.bias, self._lowvram_fp8_mode, self._lowvram_compute_dtype)


def _hooks_of(m: torch.nn.Module, table: dict, fn) -> list:
    return [k for k, v in table.items() if v is fn]


class Fp8Matmul:
    """What apply_fp8_matmul changed, to undo it: the converted Linears."""

    def __init__(self, linears: list[torch.nn.Linear]) -> None:
        self.linears = linears

    def remove(self) -> None:
        """Back to dequantise-per-layer (precision.py's hooks), as the loader left the modules."""
        for m in self.linears:
            if "forward" in m.__dict__:
                del m.forward
            del m._lowvram_fp8_mode
            precision.dequantize_per_forward(m, precision._dequantize_8bit, m._lowvram_compute_dtype)
        self.linears = []


def apply_fp8_matmul(module: torch.nn.Module, config: Fp8MatmulConfig) -> Fp8Matmul:
    """Every Linear under `module` whose weight precision.py stores in fp8 multiplies with _scaled_mm instead
    of dequantising per layer. Call it after the weights are stored in fp8 (apply_weight_precision / the
    loader); int8 and GGUF weights are left as they are."""
    done = []
    for m in module.modules():
        if not (isinstance(m, torch.nn.Linear) and m.weight.dtype == FP8 and hasattr(m, "weight_scale")):
            continue
        if hasattr(m, "_lowvram_fp8_mode"):
            continue
        # take precision.py's dequantising hooks off: this forward reads the fp8 weight itself
        for k in _hooks_of(m, m._forward_pre_hooks, precision._pre_hook):
            del m._forward_pre_hooks[k]
        for k in _hooks_of(m, m._forward_hooks, precision._post_hook):
            del m._forward_hooks[k]
        m._lowvram_fp8_mode = config.mode
        m._lowvram_compute_dtype = config.compute_dtype
        m.forward = types.MethodType(_forward, m)
        done.append(m)
    return Fp8Matmul(done)
